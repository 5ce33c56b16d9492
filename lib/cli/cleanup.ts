/**
 * `flowgate cleanup`: undoes what a flowgate that did not stop cleanly (kill -9, a crash)
 * left in the kernel, from the kernel journal it kept (lib/slowpath/journal.ts): the same
 * teardown a clean stop runs, by a KernelMirror that adopted the dead instance's record.
 */
import { parseArgs } from 'node:util';

import { ConfigError, compileConfig, formatIssue, loadConfig, type CompiledConfig } from '../config';
import { InstanceLock, lockTargets } from '../instance-lock';
import { InstanceLockedError, namespaceId, runtimeDirectory } from '../runtime';
import { KernelMirror, type AdoptedRecord, type MirrorRecord } from '../slowpath/kernel';
import { HELP_OPTION, type CliOptions } from './options';

export const USAGE = `usage: flowgate cleanup [-c FILE] [--netns NAME]

Undoes what a flowgate that did not stop cleanly (killed, crashed) left in the kernel of
its network namespace, from the journal it kept in the runtime directory: restores the
sysctls, MTUs and admin states it changed, removes the addresses, routes and nftables
tables it created (among them the af_packet guard table), then removes the journal and
the instance's stale locks. Refuses while that instance runs. With nothing to undo (after
a clean stop) it says so and exits 0. The systemd unit runs it after every stop
(ExecStopPost). Needs root.

  -c, --config FILE   the instance's config: the stale locks of its devices go too
  --netns NAME        the instance of this network namespace (ip netns NAME) rather
                      than the current one
  -h, --help          this text

Environment: FLOWGATE_RUNTIME_DIR, the runtime directory (default /run/flowgate).
`;

function counted(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

/** "9 sysctls restored, 1 route removed, ...": what undoing a record did, kinds with none left out. */
export function describeRecord(record: MirrorRecord): string {
  const parts = [
    [record.sysctls.length, counted(record.sysctls.length, 'sysctl'), 'restored'],
    [record.links.length, counted(record.links.length, 'interface'), 'restored'],
    [record.addresses.length, counted(record.addresses.length, 'address', 'addresses'), 'removed'],
    [record.routes.length, counted(record.routes.length, 'route'), 'removed'],
    [record.nftables?.tables.length ?? 0, counted(record.nftables?.tables.length ?? 0, 'nftables table'), 'removed'],
  ] as const;
  const done = parts.filter(([count]) => count > 0).map(([, what, how]) => `${what} ${how}`);
  return done.length === 0 ? 'nothing was left' : done.join(', ');
}

/** The config of -c, or null (with the problems on stderr) when it cannot be read. */
async function readConfig(file: string): Promise<CompiledConfig | null> {
  try {
    return compileConfig(await loadConfig(file));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // The kernel still needs cleaning after the config was broken: only its locks stay.
    process.stderr.write(`flowgate cleanup: ${file} is invalid, the locks of its devices stay:\n${err.issues.map((issue) => `${formatIssue(issue)}\n`).join('')}`);
    return null;
  }
}

export const OPTIONS = {
  config: { type: 'string', short: 'c', complete: 'config' },
  netns: { type: 'string', complete: 'netns' },
  help: HELP_OPTION,
} as const satisfies CliOptions;

export async function run(argv: string[]): Promise<number> {
  let values: { config?: string | undefined; netns?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`flowgate cleanup: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const runtimeDir = runtimeDirectory();
  const netnsId = await namespaceId(values.netns);
  const model = values.config === undefined ? null : await readConfig(values.config);
  const mirror = new KernelMirror({ runtimeDir, ...(values.netns === undefined ? {} : { netns: values.netns }) });
  let adopted: AdoptedRecord | null;
  try {
    adopted = await mirror.recover();
  } catch (err) {
    if (!(err instanceof InstanceLockedError)) throw err;
    process.stderr.write(`flowgate cleanup: ${err.message}; it is running and undoes its own changes when it stops: stop it (systemctl stop flowgate) rather than clean up after it [${err.code}]\n`);
    return 1;
  }
  if (adopted !== null) await mirror.teardown();
  const locks = await InstanceLock.removeStale(runtimeDir, lockTargets(netnsId, model));
  const released = locks.length === 0 ? '' : `; released the stale ${counted(locks.length, 'lock')} of ${locks.join(', ')}`;
  if (adopted === null) {
    process.stdout.write(`flowgate cleanup: nothing to undo in network namespace ${netnsId}: no kernel journal in ${runtimeDir}${released}\n`);
  } else {
    process.stdout.write(`flowgate cleanup: undid what flowgate pid ${adopted.writer.pid} left in network namespace ${netnsId}: ${describeRecord(adopted.record)}${released}\n`);
  }
  return 0;
}
