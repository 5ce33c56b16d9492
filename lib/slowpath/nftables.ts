/**
 * The optional nftables ruleset of the config. flowgate owns the tables it declares: each
 * (re)load replaces them, together with those an earlier ruleset declared, in one nft
 * transaction, so the slow path is never without its policy; teardown deletes them. Tables
 * the ruleset does not declare are never touched.
 */
import { InvalidArgumentError } from '../errors';

const FAMILIES = new Set(['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev']);

// A string, a comment, a continued line, a line end, a statement separator, a brace, or a word.
const TOKEN = /"(?:[^"\\\n]|\\.)*"|#[^\n]*|\\\n|\n|;|[{}]|[^\s;{}"#\\]+|\\/g;

interface Statement {
  words: string[];
  /** 1-based line and column of the statement's first word. */
  line: number;
  col: number;
  /** Blocks around it: 0 for `table inet filter`, 1 for a chain in it. */
  depth: number;
}

/** Every statement, as words ("table inet filter" of "table inet filter { ... }"). */
function statements(ruleset: string): Statement[] {
  const found: Statement[] = [];
  let words: string[] = [];
  let depth = 0;
  let line = 1;
  let lineStart = 0;
  let start = { line: 1, col: 1, depth: 0 };
  const end = () => {
    if (words.length > 0) found.push({ words, ...start });
    words = [];
  };
  for (const { 0: token, index } of ruleset.matchAll(TOKEN)) {
    if (token.startsWith('#')) continue;
    if (token === '{' || token === '}') {
      end();
      depth = token === '{' ? depth + 1 : Math.max(0, depth - 1);
    } else if (token === '\n' || token === ';') {
      end();
    } else if (token !== '\\\n') {
      if (words.length === 0) start = { line, col: index - lineStart + 1, depth };
      words.push(token);
    }
    if (token.endsWith('\n')) {
      line++;
      lineStart = index + token.length;
    }
  }
  end();
  return found;
}

/** A statement flowgate refuses in a ruleset, and the 1-based line and column it starts at. */
export interface RefusedStatement {
  line: number;
  col: number;
  message: string;
}

/**
 * What in a ruleset would reach beyond the tables it declares: `flush ruleset` would delete
 * every other table in the namespace, and an `include`d file (nft reads them in any block)
 * could declare tables flowgate does not know of, and is not flowgate's to read.
 */
export function refusedStatements(ruleset: string): RefusedStatement[] {
  const refused: RefusedStatement[] = [];
  for (const { words, line, col, depth } of statements(ruleset)) {
    const [command, second] = words[0] === 'add' || words[0] === 'create' ? words.slice(1) : words;
    if (command === 'flush' && second === 'ruleset' && depth === 0) {
      refused.push({
        line,
        col,
        message:
          "expected an nftables ruleset that declares its own tables, found 'flush ruleset', which would delete the tables of everything else in the namespace (flowgate replaces its own tables on each reload)",
      });
    }
    if (command === 'include') {
      refused.push({
        line,
        col,
        message: `expected an nftables ruleset without includes, found 'include ${second ?? ''}' (flowgate must see every table it declares to remove them again)`,
      });
    }
  }
  return refused;
}

/**
 * The tables a ruleset declares, as "family name" ("inet flowgate"; the family defaults to
 * ip, as in nft), from `table ...` blocks and `add table` / `create table` commands.
 * Throws for a statement refusedStatements() names.
 */
export function declaredTables(ruleset: string): string[] {
  const [refused] = refusedStatements(ruleset);
  if (refused !== undefined) throw new InvalidArgumentError(refused.message);
  const tables = new Set<string>();
  for (const { words: statement, depth } of statements(ruleset)) {
    if (depth > 0) continue;
    const words = statement[0] === 'add' || statement[0] === 'create' ? statement.slice(1) : statement;
    const [command, second, third] = words;
    if (command !== 'table' || second === undefined) continue;
    const hasFamily = FAMILIES.has(second) && third !== undefined;
    tables.add(hasFamily ? `${second} ${third}` : `ip ${second}`);
  }
  return [...tables];
}

/**
 * An nft script deleting `tables` if they exist: nft 1.0.6 has no `destroy`, and `add table`
 * of an existing table changes nothing, so add-then-delete removes it in either case.
 */
export function deleteTablesScript(tables: Iterable<string>): string {
  return [...tables].map((table) => `add table ${table}\ndelete table ${table}\n`).join('');
}
