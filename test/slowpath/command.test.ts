// The commands of the kernel mirror die with flowgate, and their errors name the command.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';

import { CommandRunner, isAbsent } from '../../lib/slowpath/command';
import { createNetns, deleteNetns } from '../helpers/netns';
import { processIdentity } from '../../lib/runtime';
import { killHard, startChild } from '../helpers/mirror-process';
import { until } from '../helpers/wait';

/** Pids of the processes whose parent is `parent` and whose command is `comm`. */
function childrenOf(parent: number, comm: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [, name, rest] = /^\d+ \((.*)\) (.*)$/s.exec(stat) ?? [];
      if (name === comm && Number(rest?.split(' ')[1]) === parent) pids.push(Number(entry));
    } catch {
      // Gone while being read.
    }
  }
  return pids;
}

describe('kernel commands', () => {
  it('die with the flowgate process that ran them, even when it is killed with SIGKILL', async () => {
    const node = await startChild(['sleep'], 'running');
    const [sleep = 0] = await until('the sleep child', () => {
      const pids = childrenOf(node.pid as number, 'sleep');
      return pids.length === 1 ? pids : undefined;
    });
    await killHard(node);
    await until(`sleep (pid ${sleep}) to die with its parent`, () => (processIdentity(sleep) === null ? true : undefined), 5000);
  });

  it('say an IPv4 or IPv6 address is absent as the kernel words it, for a removal to count as done', async () => {
    const ns = await createNetns('fgcmd');
    try {
      const run = new CommandRunner(ns);
      for (const address of ['192.0.2.1/24', '2001:db8::1/64']) {
        const err = await run.ip(['addr', 'del', address, 'dev', 'lo']).then(() => null, (e: unknown) => e);
        assert.ok(err !== null, `deleting ${address}, which lo does not have, failed`);
        assert.equal(isAbsent(err), true, `absent: ${(err as Error).message}`);
      }
    } finally {
      await deleteNetns(ns);
    }
  });

  it('name the command that failed, not the setpriv in front of it', async () => {
    await assert.rejects(new CommandRunner().exec(['sysctl', '-n', 'net.ipv4.no_such_setting']), {
      code: 'ERR_FLOWGATE_KERNEL_COMMAND',
      message: /^sysctl -n net\.ipv4\.no_such_setting: sysctl: cannot stat \/proc\/sys\/net\/ipv4\/no_such_setting: No such file or directory$/,
    });
  });
});
