// `flowgate trace` against a running `flowgate run`: a gateway in a network namespace on
// af_packet ports over veths, a LAN host sending a UDP stream through it to a WAN host, the
// CLI talking to it over the control socket as an operator would.
//
//   lan ns: lan1 192.168.0.2 ── lan0 [gw ns: flowgate eth0 192.168.0.1 | eth1 203.0.113.1] wan0 ── wan1 203.0.113.2 :wan ns
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { detectMachine } from '../../lib/config';
import type { GatewayFlow, GatewayTraceRecord } from '../../lib/gateway/types';
import { atExit, createNetns, deleteNetns, sh } from '../helpers/netns';
import { until } from '../helpers/wait';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');
const workerCpu = detectMachine().cpus.at(-1) ?? 0;

function flowgate(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [main, ...args], { cwd: repo, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as GatewayTraceRecord);

describe('flowgate trace against a running instance', function () {
  this.timeout(120_000);

  let dir: string;
  let socketPath: string;
  let gw: string;
  let lan: string;
  let wan: string;
  let child: ChildProcess;
  let sender: ChildProcess;
  let stderr = '';
  let exited: Promise<unknown>;
  const forget: (() => void)[] = [];

  before(async function () {
    this.timeout(180_000);
    dir = mkdtempSync(path.join(tmpdir(), 'fg-trace-'));
    socketPath = path.join(dir, 'flowgate.sock');
    const configFile = path.join(dir, 'flowgate.yaml');
    gw = await createNetns('fgtrace-gw');
    lan = await createNetns('fgtrace-lan');
    wan = await createNetns('fgtrace-wan');
    await sh(['ip', 'link', 'add', 'lan0', 'netns', gw, 'type', 'veth', 'peer', 'name', 'lan1', 'netns', lan]);
    await sh(['ip', 'link', 'add', 'wan0', 'netns', gw, 'type', 'veth', 'peer', 'name', 'wan1', 'netns', wan]);
    await sh('ip link set lan0 up && ip link set wan0 up', { netns: gw });
    await sh('ip link set lan1 up && ip addr add 192.168.0.2/24 dev lan1 && ip route add default via 192.168.0.1 && ethtool -K lan1 tx off >/dev/null', { netns: lan });
    await sh('ip link set wan1 up && ip addr add 203.0.113.2/24 dev wan1 && ip route add default via 203.0.113.1 && ethtool -K wan1 tx off >/dev/null', { netns: wan });
    writeFileSync(
      configFile,
      [
        'ports:',
        '  eth0: { device: "net_af_packet0,iface=lan0", addresses: ["192.168.0.1/24"] }',
        '  eth1: { device: "net_af_packet1,iface=wan0", addresses: ["203.0.113.1/24"] }',
        'flowtable: { devices: [eth0, eth1], l4proto: [udp] }',
        `workers: { cpus: [${workerCpu}] }`,
        `control: { socket: "${socketPath}" }`,
        '',
      ].join('\n'),
    );
    child = spawn('ip', ['netns', 'exec', gw, process.execPath, main, 'run', '-c', configFile], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });
    forget.push(atExit(() => child.kill('SIGKILL')));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    exited = new Promise((resolve) => child.on('exit', resolve));
    await until('flowgate to run', () => {
      if (child.exitCode !== null) throw new Error(`flowgate run exited with ${child.exitCode}:\n${stderr}`);
      return stderr.includes(' msg=running') ? true : undefined;
    }, 90_000);
    // Traffic for the traces: a UDP datagram every 10 ms from the LAN host to the WAN host.
    sender = spawn(
      'ip',
      ['netns', 'exec', lan, process.execPath, '-e', `const s = require('dgram').createSocket('udp4'); s.bind(4000, () => setInterval(() => s.send('x', 5000, '203.0.113.2'), 10));`],
      { stdio: 'ignore' },
    );
    forget.push(atExit(() => sender.kill('SIGKILL')));
  });

  after(async function () {
    this.timeout(60_000);
    sender?.kill('SIGKILL');
    if (child?.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      child.kill('SIGKILL');
    }
    for (const f of forget) f();
    for (const netns of [gw, lan, wan]) if (netns !== undefined) await deleteNetns(netns);
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints exactly --count records as JSON lines while traffic flows', async () => {
    const r = await flowgate('trace', '--count', '5', '--json', '--socket', socketPath);
    assert.equal(r.status, 0, r.stderr);
    const records = jsonLines(r.stdout);
    assert.equal(records.length, 5);
    assert.deepEqual(records.map((x) => x.seq).sort((a, b) => a - b), [0, 1, 2, 3, 4]);
    for (const x of records) {
      assert.ok(['forward', 'decap', 'encap', 'punt', 'drop'].includes(x.decision), JSON.stringify(x));
      assert.ok(['eth0', 'eth1'].includes(x.in) || x.worker === 'slowpath', JSON.stringify(x));
      assert.ok(Buffer.from(x.rx, 'hex').length > 0);
    }
  });

  it("shows an offloaded flow's packets as forwarded by that flow, with their headers decoded", async () => {
    const flow = await until('the UDP flow to be offloaded', async () => {
      const r = await flowgate('flows', '--json', '--socket', socketPath);
      const flows = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as GatewayFlow);
      return flows.find((f) => f.sport === 4000 && f.dport === 5000);
    });
    const r = await flowgate('trace', '--count', '2', '--port', 'eth0', '--filter', 'udp dst port 5000', '--socket', socketPath);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((r.stdout.match(/^Packet \d+ /gm) ?? []).length, 2);
    assert.match(r.stdout, /^ {2}in eth0, \d+ bytes$/m);
    assert.match(r.stdout, /^ {4}ipv4 192\.168\.0\.2 > 203\.0\.113\.2, ttl 64, udp/m);
    assert.match(r.stdout, /^ {4}udp 4000 > 5000, len 9$/m);
    assert.match(r.stdout, new RegExp(`^ {2}forward, flow ${flow.id} \\(original\\), to eth1$`, 'm'));
    assert.match(r.stdout, /^ {4}ipv4 192\.168\.0\.2 > 203\.0\.113\.2, ttl 63, udp/m, 'the packet as sent, TTL decremented');
    assert.match(r.stderr, /: 2 packets traced\.$/m);
  });

  it('refuses a second trace while one runs, and a client that leaves stops its trace', async () => {
    // A trace that selects nothing runs until its client goes.
    const first = spawn(process.execPath, [main, 'trace', '--filter', 'udp port 9', '--json', '--socket', socketPath], { stdio: 'ignore' });
    const forgetFirst = atExit(() => first.kill('SIGKILL'));
    try {
      const refused = await until('the second trace to be refused', async () => {
        const r = await flowgate('trace', '--count', '1', '--json', '--socket', socketPath);
        return r.status !== 0 ? r : undefined;
      });
      assert.equal(refused.status, 1);
      assert.equal(refused.stderr, 'flowgate: a packet trace is running already on this instance: one at a time [ERR_FLOWGATE_TRACE_BUSY]\n');
    } finally {
      first.kill('SIGKILL');
      forgetFirst();
    }
    // Its client gone, the first trace stops, and another may run.
    const again = await until('a trace to run again', async () => {
      const r = await flowgate('trace', '--count', '1', '--json', '--socket', socketPath);
      return r.status === 0 ? r : undefined;
    });
    assert.equal(jsonLines(again.stdout).length, 1);
  });

  it("refuses a filter libpcap cannot compile with libpcap's message, and an unknown port, in one line with status 2", async () => {
    const bad = await flowgate('trace', '--filter', 'udp and and', '--socket', socketPath);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^flowgate trace: filter 'udp and and': .*syntax error\n$/);
    const port = await flowgate('trace', '--port', 'eth9', '--socket', socketPath);
    assert.equal(port.status, 2);
    assert.match(port.stderr, /^flowgate trace: port: no port named 'eth9' \(ports: .*\beth0\b.*\)\n$/);
    const count = await flowgate('trace', '--count', 'many', '--socket', socketPath);
    assert.equal(count.status, 2);
    assert.match(count.stderr, /^flowgate trace: --count: expected a whole number of packets, at least 1, found 'many'\n/);
  });
});
