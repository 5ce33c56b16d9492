/**
 * Loading a config file: YAML syntax, then the schema, then the cross-field checks. Each
 * stage reports all of its problems at once, each at FILE:LINE:COL. A later stage runs
 * only when the earlier ones found nothing, since its checks read values that an earlier
 * problem would make meaningless.
 */
import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { FlowgateError } from '../errors';
import { didYouMean, formatPath } from './describe';
import { detectMachine, type Machine } from '../machine';
import { CONFIG_EXPECTED, configSchema, type Config } from './schema';
import { checkSemantics } from './semantic';
import { ConfigSource } from './source';
import { objectShape, schemaAt } from './walk';

export interface ConfigIssue {
  file: string;
  /** 1-based */
  line: number;
  /** 1-based */
  col: number;
  /** Config path such as "tunnels.tun0.remote"; empty for YAML syntax errors and the whole file. */
  path: string;
  message: string;
}

/** "FILE:LINE:COL: PATH: expected X, found Y" (no PATH part for syntax errors). */
export function formatIssue(issue: ConfigIssue): string {
  const where = `${issue.file}:${issue.line}:${issue.col}`;
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}

export class ConfigError extends FlowgateError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[], options?: { cause?: unknown }) {
    const count = issues.length === 1 ? '1 problem' : `${issues.length} problems`;
    super('ERR_FLOWGATE_CONFIG', [`invalid config (${count}):`, ...issues.map(formatIssue)].join('\n'), options);
    this.issues = issues;
  }
}

export interface CheckOptions {
  /** The CPUs workers may use; read from this machine when omitted. */
  machine?: Machine;
}

export interface CheckResult {
  /** Present exactly when `issues` is empty. */
  config?: Config;
  issues: ConfigIssue[];
}

function byPosition(a: ConfigIssue, b: ConfigIssue): number {
  return a.line - b.line || a.col - b.col;
}

function schemaIssues(source: ConfigSource, file: string, issues: readonly z.core.$ZodIssue[]): ConfigIssue[] {
  const result: ConfigIssue[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = Object.keys(objectShape(schemaAt(configSchema, issue.path) ?? configSchema) ?? {});
      for (const key of issue.keys) {
        const path = [...issue.path, key];
        result.push({
          file,
          ...source.position(path, 'key'),
          path: formatPath(path),
          message: `unknown key '${key}'${didYouMean(key, known)}`,
        });
      }
      continue;
    }
    result.push({ file, ...source.position(issue.path, 'value'), path: formatPath(issue.path), message: issue.message });
  }
  return result;
}

/**
 * Validates config text without touching the file system (except, when `options.machine`
 * is omitted, to read this machine's CPUs). `file` is only used in the issues.
 */
export function checkConfigText(text: string, file: string, options: CheckOptions = {}): CheckResult {
  const source = new ConfigSource(text);

  const syntax = source.syntaxProblems();
  if (syntax.length > 0) {
    return { issues: syntax.map((problem) => ({ file, line: problem.line, col: problem.col, path: '', message: problem.message })).sort(byPosition) };
  }

  if (source.document.contents === null) {
    return { issues: [{ file, line: 1, col: 1, path: '', message: `expected ${CONFIG_EXPECTED}, found an empty file` }] };
  }

  const parsed = configSchema.safeParse(source.toValue(), { reportInput: true });
  if (!parsed.success) return { issues: schemaIssues(source, file, parsed.error.issues).sort(byPosition) };

  const semantic = checkSemantics(parsed.data, options.machine ?? detectMachine());
  if (semantic.length > 0) {
    const issues = semantic.map((issue) => ({
      file,
      ...source.position(issue.path, issue.at),
      path: formatPath(issue.path),
      message: issue.message,
    }));
    return { issues: issues.sort(byPosition) };
  }
  return { config: parsed.data, issues: [] };
}

/** Reads and validates a config file; throws ConfigError listing every problem found. */
export async function loadConfig(file: string, options: CheckOptions = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: `expected a readable config file, found: ${reason}` }], { cause: err });
  }
  const result = checkConfigText(text, file, options);
  if (result.config === undefined) throw new ConfigError(result.issues);
  return result.config;
}
