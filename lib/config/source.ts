/**
 * The YAML text of a config and the way back from a config path to a line and column.
 */
import { LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument, visit, type Document, type Node } from 'yaml';

export interface SourcePosition {
  /** 1-based */
  line: number;
  /** 1-based */
  col: number;
}

export interface SyntaxProblem extends SourcePosition {
  message: string;
}

/** Our wording where yaml's names its API or leaves out the culprit; `source` is the text at the error. */
const SYNTAX_MESSAGES: Record<string, (source: string) => string> = {
  MULTIPLE_DOCS: () => "expected a single YAML document, found a second one ('---')",
  DUPLICATE_KEY: (source) => `expected each key once in a mapping, found '${source}' again`,
};

export class ConfigSource {
  readonly document: Document.Parsed;
  private readonly lineCounter = new LineCounter();

  constructor(readonly text: string) {
    this.document = parseDocument(text, { lineCounter: this.lineCounter, prettyErrors: false, uniqueKeys: true });
  }

  positionAt(offset: number): SourcePosition {
    return this.lineCounter.linePos(offset);
  }

  /** YAML errors and warnings (unknown tags, unresolved aliases): all are config errors. */
  syntaxProblems(): SyntaxProblem[] {
    const problems: SyntaxProblem[] = [...this.document.errors, ...this.document.warnings].map((error) => ({
      ...this.positionAt(error.pos[0]),
      message: SYNTAX_MESSAGES[error.code]?.(this.tokenAt(error.pos[0])) ?? error.message,
    }));
    if (this.document.errors.length === 0) {
      // toJS() throws on the first alias without an anchor; report every one with its place.
      visit(this.document, {
        Alias: (_key, alias) => {
          if (alias.resolve(this.document) === undefined) {
            problems.push({ ...this.positionAt(alias.range?.[0] ?? 0), message: `expected an alias of an earlier anchor, found '*${alias.source}'` });
          }
        },
      });
    }
    return problems;
  }

  /** The scalar written at `offset` (yaml's error ranges cover only its first character). */
  private tokenAt(offset: number): string {
    return /^("[^"\n]*"|'[^'\n]*'|[^:\s,\]}]+)/.exec(this.text.slice(offset))?.[1] ?? '';
  }

  toValue(): unknown {
    return this.document.toJS({ maxAliasCount: 100 });
  }

  private resolveAlias(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.document) : node;
  }

  /**
   * Where a config path is written. `at: 'key'` points at the mapping key of the last
   * segment (names, unknown keys). A path that is not in the file (a missing key) points at
   * the key of its deepest existing ancestor, which is where the key should be added.
   */
  position(path: readonly PropertyKey[], at: 'key' | 'value'): SourcePosition {
    let node: unknown = this.document.contents;
    let fallback: Node | null | undefined = this.document.contents;
    for (const [index, segment] of path.entries()) {
      node = this.resolveAlias(node);
      const isLast = index === path.length - 1;
      if (isMap(node)) {
        const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && String(item.key.value) === String(segment));
        if (pair === undefined) break;
        if (isLast && at === 'key') return this.nodeStart(pair.key as Node);
        fallback = pair.key as Node;
        node = pair.value ?? pair.key;
        if (isLast) return this.nodeStart(node as Node);
      } else if (isSeq(node) && typeof segment === 'number') {
        const item = node.items[segment];
        if (item === undefined) break;
        node = item;
        fallback = item as Node;
        if (isLast) return this.nodeStart(item as Node);
      } else {
        break;
      }
    }
    if (path.length === 0 && this.document.contents !== null) return this.nodeStart(this.document.contents);
    return fallback === null || fallback === undefined ? { line: 1, col: 1 } : this.nodeStart(fallback);
  }

  private nodeStart(node: Node): SourcePosition {
    return this.positionAt(node.range?.[0] ?? 0);
  }
}
