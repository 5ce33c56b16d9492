// `flowgate cleanup` after a flowgate killed with SIGKILL: the namespace's kernel comes back
// to exactly what it was before the first start, from the journal the dead instance left.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { detectMachine } from '../../lib/config';
import { fileNameOf, namespaceId, processIdentity, type ProcessIdentity } from '../../lib/runtime';
import { spawnFlowgate } from '../helpers/cli';
import { createLab, deleteLab, snapshot, type Lab } from '../helpers/kernel-lab';
import { crashAfterApply, killHard, startChild } from '../helpers/mirror-process';
import { atExit, sh, withNetns } from '../helpers/netns';
import { until } from '../helpers/wait';

const SEED = path.resolve(__dirname, '../../../config/seed.yaml');
const MAIN = path.resolve(__dirname, '../../lib/cli/main.js');

describe('flowgate cleanup', () => {
  let lab: Lab | undefined;
  let runtimeDir: string;
  let child: ChildProcess | undefined;

  const cleanup = (...args: string[]) => spawnFlowgate(['cleanup', ...args], { runtimeDir });

  beforeEach(() => {
    runtimeDir = mkdtempSync(path.join(tmpdir(), 'fg-cleanup-'));
  });

  afterEach(async () => {
    if (child !== undefined) await killHard(child);
    child = undefined;
    await deleteLab(lab);
    lab = undefined;
    rmSync(runtimeDir, { recursive: true, force: true });
  });

  it('undoes every sysctl, MTU, address, route and nftables table of an instance killed with SIGKILL, and removes its journal', async () => {
    lab = await createLab();
    await sh(['nft', 'add table ip other'], { netns: lab.gw });
    const before = await snapshot(lab.gw);
    const pid = await crashAfterApply(lab.gw, 'v1', runtimeDir);
    assert.notDeepEqual(await snapshot(lab.gw), before);

    const r = await cleanup('--netns', lab.gw);
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0);
    assert.equal(
      r.stdout,
      `flowgate cleanup: undid what flowgate pid ${pid} left in network namespace ${await namespaceId(lab.gw)}: 14 sysctls restored, 3 interfaces restored, 4 addresses removed, 3 routes removed, 3 nftables tables removed\n`,
    );
    assert.deepEqual(await snapshot(lab.gw), before);
    assert.deepEqual(readdirSync(runtimeDir), []);
  });

  it('removes the af_packet guard table a killed instance left, giving the interface back to the kernel', async () => {
    lab = await createLab({ afPacket: true });
    const before = await snapshot(lab.gw);
    await crashAfterApply(lab.gw, 'afpacket', runtimeDir);
    assert.match(await sh(['nft', 'list', 'tables'], { netns: lab.gw }), /^table netdev flowgate_afpacket$/m);

    const r = await cleanup('--netns', lab.gw);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(await sh(['nft', 'list', 'tables'], { netns: lab.gw }), /flowgate_afpacket/);
    assert.deepEqual(await snapshot(lab.gw), before);
  });

  it('after flowgate run is killed with SIGKILL, gives its namespace back as it was before the start, af_packet guard included', async () => {
    lab = await createLab({ tunnel: false });
    // flowgate's own ports eth0 and eth1 (TAPs) read lan0 and wan0 through af_packet.
    const gw = lab.gw;
    for (const [iface, far] of [['lan0', 'lan1'], ['wan0', 'wan1']] as const) {
      await sh(['ip', '-n', gw, 'link', 'add', iface, 'type', 'veth', 'peer', 'name', far, 'netns', lab.peer]);
      await sh(['ip', '-n', gw, 'link', 'set', iface, 'up']);
    }
    await sh(['ip', '-n', gw, 'link', 'del', 'eth0']);
    await sh(['ip', '-n', gw, 'link', 'del', 'eth1']);
    const configFile = path.join(runtimeDir, 'flowgate.yaml');
    writeFileSync(
      configFile,
      [
        'ports:',
        '  eth0: { device: "net_af_packet0,iface=lan0", addresses: ["192.168.0.1/24"] }',
        '  eth1: { device: "net_af_packet1,iface=wan0", addresses: ["203.0.113.1/24"] }',
        'flowtable: { devices: [eth0, eth1] }',
        `workers: { cpus: [${detectMachine().cpus.at(-1) ?? 0}] }`,
        `control: { socket: "${path.join(runtimeDir, 'flowgate.sock')}" }`,
        '',
      ].join('\n'),
    );
    const before = await snapshot(gw);
    child = spawn('ip', ['netns', 'exec', gw, process.execPath, MAIN, 'run', '-c', configFile], {
      env: { ...process.env, FLOWGATE_RUNTIME_DIR: runtimeDir },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.on('exit', atExit(() => child?.kill('SIGKILL')));
    let log = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
    await until('flowgate running', () => (log.includes(' msg=running ') ? true : undefined), 60_000);
    await killHard(child);
    assert.match(await sh(['nft', 'list', 'tables'], { netns: gw }), /^table netdev flowgate_afpacket$/m);

    const r = await cleanup('-c', configFile, '--netns', gw);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^flowgate cleanup: undid what flowgate pid ${child.pid} left .*; released the stale 3 locks of `));
    assert.deepEqual(await snapshot(gw), before);
    // The control socket stays: the next start replaces a socket nobody serves.
    assert.deepEqual(readdirSync(runtimeDir).sort(), ['flowgate.sock', 'flowgate.yaml']);
  });

  it('refuses while the instance that wrote the journal runs, naming its pid, and changes nothing', async () => {
    lab = await createLab();
    child = await startChild(['apply', lab.gw, 'v1', runtimeDir], 'applied');
    const applied = await snapshot(lab.gw);
    const netnsId = await namespaceId(lab.gw);

    const r = await cleanup('--netns', lab.gw);
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `flowgate cleanup: the kernel state of network namespace ${netnsId} (${lab.gw}) is held by flowgate pid ${child.pid} (${runtimeDir}/kernel-${fileNameOf(netnsId)}.json); it is running and undoes its own changes when it stops: stop it (systemctl stop flowgate) rather than clean up after it [ERR_FLOWGATE_INSTANCE_LOCKED]\n`,
    );
    assert.deepEqual(await snapshot(lab.gw), applied);
  });

  it('says there is nothing to undo and exits 0 when no journal is left, as after a clean stop', async () => {
    await withNetns(async (netns) => {
      const r = await cleanup('--netns', netns);
      assert.deepEqual(r, { status: 0, stdout: `flowgate cleanup: nothing to undo in network namespace ${await namespaceId(netns)}: no kernel journal in ${runtimeDir}\n`, stderr: '' });
    }, 'fgclean');
  });

  it("with -c FILE, also releases the stale locks of the config's devices, and leaves the locks of running processes", async () => {
    await withNetns(async (netns) => {
      const netnsId = await namespaceId(netns);
      const gone = { pid: spawnSync('true').pid, start: 1 };
      const lock = (name: string, holder: { pid: number; start: number }) => writeFileSync(path.join(runtimeDir, `${name}.lock`), JSON.stringify(holder));
      lock(fileNameOf(netnsId), gone);
      lock('device-0000-03-00.0', gone);
      // pid 1 runs as long as the machine.
      lock('device-0000-03-00.1', processIdentity(1) as ProcessIdentity);

      const r = await cleanup('-c', SEED, '--netns', netns);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(
        r.stdout,
        `flowgate cleanup: nothing to undo in network namespace ${netnsId}: no kernel journal in ${runtimeDir}; released the stale 2 locks of network namespace ${netnsId}, device 0000:03:00.0\n`,
      );
      assert.deepEqual(readdirSync(runtimeDir), ['device-0000-03-00.1.lock']);
    }, 'fgclean');
  });
});

