/**
 * `flowgate check -c FILE [--json]`: validate a config as `flowgate run` would read it,
 * starting nothing. Exit 0 when valid, 1 with every problem when not, 2 on a usage error.
 */
import { parseArgs } from 'node:util';

import { ConfigError, compileConfig, formatIssue, loadConfig, type CompiledConfig, type ConfigIssue } from '../config';
import { validateRuleset } from '../slowpath/ruleset-check';
import { HELP_OPTION, type CliOptions } from './options';

export const USAGE = `usage: flowgate check -c FILE [--json]

Validates a config file exactly as 'flowgate run' reads it, without starting anything:
YAML syntax, every key and value, and the cross-field checks (tunnel addresses, routes,
flowtable devices, worker CPUs against the CPUs of this machine); then the nftables ruleset
run would apply, with nft -c in a scratch network namespace (flush ruleset and include are
refused). Every problem is printed as FILE:LINE:COL: PATH: message.

  -c, --config FILE   the config file
  --json              the verdict as one JSON object on stdout, for programs:
                      {file, valid, summary, problems}; a problem is {file, line,
                      column, path, message} (path empty for YAML syntax errors)
  -h, --help          this text

Exit status: 0 valid, 1 invalid, 2 usage error.
`;

export const OPTIONS = {
  config: { type: 'string', short: 'c', complete: 'config' },
  json: { type: 'boolean' },
  help: HELP_OPTION,
} as const satisfies CliOptions;

/** A problem as `--json` prints it: the fields people read in FILE:LINE:COL, named. */
export interface CheckProblem {
  file: string;
  line: number;
  column: number;
  /** The config path, such as "tunnels.tun0.remote"; empty for YAML syntax errors and the whole file. */
  path: string;
  message: string;
}

/** What `--json` prints: summary is null when the file is invalid, problems empty when it is valid. */
export interface CheckReport {
  file: string;
  valid: boolean;
  summary: { ports: number; vlans: number; tunnels: number; routes: number; workers: number } | null;
  problems: CheckProblem[];
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export async function run(argv: string[]): Promise<number> {
  let values: { config?: string | undefined; json?: boolean | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`flowgate check: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.config === undefined) {
    process.stderr.write(`flowgate check: -c FILE is required\n\n${USAGE}`);
    return 2;
  }

  const file = values.config;
  let issues: readonly ConfigIssue[];
  let config: CompiledConfig | undefined;
  try {
    config = compileConfig(await loadConfig(file));
    issues = await validateRuleset(config, file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues = err.issues;
  }
  const summary =
    issues.length === 0 && config !== undefined
      ? { ports: config.ports.length, vlans: config.vlans.length, tunnels: config.tunnels.length, routes: config.routes.length, workers: config.workers.cpus.length }
      : null;
  if (values.json === true) {
    const report: CheckReport = {
      file,
      valid: summary !== null,
      summary,
      problems: issues.map((issue) => ({ file: issue.file, line: issue.line, column: issue.col, path: issue.path, message: issue.message })),
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return report.valid ? 0 : 1;
  }
  if (summary !== null) {
    const counts = [
      plural(summary.ports, 'port'),
      ...(summary.vlans === 0 ? [] : [plural(summary.vlans, 'VLAN')]),
      plural(summary.tunnels, 'tunnel'),
      plural(summary.routes, 'route'),
      plural(summary.workers, 'worker'),
    ];
    process.stdout.write(`${file}: valid (${counts.join(', ')})\n`);
    return 0;
  }
  for (const issue of issues) process.stderr.write(`${formatIssue(issue)}\n`);
  process.stderr.write(`${file}: invalid, ${plural(issues.length, 'problem')}\n`);
  return 1;
}
