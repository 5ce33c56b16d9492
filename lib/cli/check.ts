/**
 * `flowgate check -c FILE`: validate a config as `flowgate run` would read it, starting
 * nothing. Exit 0 when valid, 1 with every problem when not, 2 on a usage error.
 */
import { parseArgs } from 'node:util';

import { ConfigError, compileConfig, formatIssue, loadConfig, type ConfigIssue } from '../config';
import { validateRuleset } from '../slowpath/ruleset-check';

export const USAGE = `usage: flowgate check -c FILE

Validates a config file exactly as 'flowgate run' reads it, without starting anything:
YAML syntax, every key and value, and the cross-field checks (tunnel addresses, routes,
flowtable devices, worker CPUs against the CPUs of this machine); then the nftables ruleset
run would apply, with nft -c in a scratch network namespace (flush ruleset and include are
refused). Every problem is printed as FILE:LINE:COL: PATH: message.

  -c, --config FILE   the config file
  -h, --help          this text

Exit status: 0 valid, 1 invalid, 2 usage error.
`;

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export async function run(argv: string[]): Promise<number> {
  let values: { config?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
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
  try {
    const config = compileConfig(await loadConfig(file));
    issues = await validateRuleset(config, file);
    if (issues.length === 0) {
      const summary = [
        plural(config.ports.length, 'port'),
        ...(config.vlans.length === 0 ? [] : [plural(config.vlans.length, 'VLAN')]),
        plural(config.tunnels.length, 'tunnel'),
        plural(config.routes.length, 'route'),
        plural(config.workers.cpus.length, 'worker'),
      ];
      process.stdout.write(`${file}: valid (${summary.join(', ')})\n`);
      return 0;
    }
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues = err.issues;
  }
  for (const issue of issues) process.stderr.write(`${formatIssue(issue)}\n`);
  process.stderr.write(`${file}: invalid, ${plural(issues.length, 'problem')}\n`);
  return 1;
}
