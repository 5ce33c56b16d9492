// `flowgate stats --watch` and `--xstats` against a running instance with traffic: flowgate
// run in a network namespace, two af_packet ports on veths carrying UDP flows that come and
// go (a new one every 50 ms, each idle after 50 ms, UDP timeout 1 s), a net_pcap port that
// replays a generated capture once, and a VLAN on the WAN port.
//
//   lan ns: lan1 192.168.0.2 ── lan0 [gw ns: flowgate eth0 | eth1 (+ eth1.100)] wan0 ── wan1 203.0.113.2 :wan ns
//                                                        eth2: net_pcap, rx from PCAP_FRAMES frames
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { PORT_RATES } from '../../lib/cli/stats-rates';
import type { WatchRecord } from '../../lib/cli/stats-watch';
import { detectMachine } from '../../lib/config';
import type { XstatsResult } from '../../lib/control/protocol';
import type { GatewayStats } from '../../lib/gateway/types';
import { ethernetFrame, ip4Packet } from '../../lib/packets';
import { writePcap } from '../../lib/pcap';
import { atExit, createNetns, deleteNetns, sh } from '../helpers/netns';
import { until } from '../helpers/wait';
import { parseExposition, sampleValue } from '../metrics/exposition';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');
const workerCpu = detectMachine().cpus.at(-1) ?? 0;
const METRICS_PORT = 9465;
const PCAP_FRAMES = 37;

interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

function flowgate(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [main, ...args], { cwd: repo, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

/** Runs `flowgate stats --watch ...` until `enough(stdout)`, then Ctrl-C; its output and exit. */
async function watch(args: string[], enough: (stdout: string) => boolean): Promise<Result & { signal: NodeJS.Signals | null }> {
  const child = spawn(process.execPath, [main, 'stats', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  const forget = atExit(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  try {
    await until('the watch to print enough', () => {
      if (child.exitCode !== null) throw new Error(`flowgate stats ${args.join(' ')} exited with ${child.exitCode}:\n${stdout}\n${stderr}`);
      return enough(stdout) ? true : undefined;
    }, 30_000);
    child.kill('SIGINT');
    const { code, signal } = await exited;
    return { status: code ?? -1, signal, stdout, stderr };
  } finally {
    child.kill('SIGKILL');
    forget();
  }
}

const lines = (text: string) => text.split('\n').filter((line) => line !== '');

/** `a` equals `b` up to the rounding of their computation. */
function close(a: number | null | undefined, b: number, what: string): void {
  assert.ok(typeof a === 'number' && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
}

describe('flowgate stats --watch and --xstats against a running instance', function () {
  this.timeout(180_000);

  let dir: string;
  let socketPath: string;
  let gw: string;
  let lan: string;
  let wan: string;
  let child: ChildProcess;
  let traffic: ChildProcess | undefined;
  let receiver: ChildProcess | undefined;
  let stderr = '';
  let exited: Promise<unknown>;
  const forgets: (() => void)[] = [];

  before(async function () {
    dir = mkdtempSync(path.join(tmpdir(), 'fg-watch-gw-'));
    socketPath = path.join(dir, 'flowgate.sock');
    const pcap = path.join(dir, 'eth2-rx.pcap');
    // Frames to another host's MAC: received (and counted by the device), then not forwarded.
    writePcap(
      pcap,
      Array.from({ length: PCAP_FRAMES }, (_, i) =>
        ethernetFrame('02:00:00:00:99:99', '02:00:00:00:99:98', ip4Packet({ src: '198.51.100.2', dst: '198.51.100.9' }, { udp: { sport: 1000 + i, dport: 9 } })),
      ),
    );
    gw = await createNetns('fgwatch-gw');
    lan = await createNetns('fgwatch-lan');
    wan = await createNetns('fgwatch-wan');
    await sh(['ip', 'link', 'add', 'lan0', 'netns', gw, 'type', 'veth', 'peer', 'name', 'lan1', 'netns', lan]);
    await sh(['ip', 'link', 'add', 'wan0', 'netns', gw, 'type', 'veth', 'peer', 'name', 'wan1', 'netns', wan]);
    await sh('ip link set lan0 up && ip link set wan0 up', { netns: gw });
    // veths leave checksums to the receiver; flowgate forwards frames as they are.
    await sh('ip link set lan1 up && ip addr add 192.168.0.2/24 dev lan1 && ip route add default via 192.168.0.1 && ethtool -K lan1 tx off >/dev/null', { netns: lan });
    await sh('ip link set wan1 up && ip addr add 203.0.113.2/24 dev wan1 && ip route add default via 203.0.113.1 && ethtool -K wan1 tx off >/dev/null', { netns: wan });
    const configFile = path.join(dir, 'flowgate.yaml');
    writeFileSync(
      configFile,
      [
        'ports:',
        '  eth0: { device: "net_af_packet0,iface=lan0", addresses: ["192.168.0.1/24"] }',
        '  eth1: { device: "net_af_packet1,iface=wan0", addresses: ["203.0.113.1/24"] }',
        '  eth1.100: { parent: eth1, vlan: 100, addresses: ["198.18.0.1/24"] }',
        `  eth2: { device: "net_pcap0,rx_pcap=${pcap},tx_pcap=${path.join(dir, 'eth2-tx.pcap')}" }`,
        'flowtable: { devices: [eth0, eth1], l4proto: [udp], timeout: { udp: 1 } }',
        `workers: { cpus: [${workerCpu}] }`,
        `control: { socket: "${socketPath}" }`,
        `metrics: { listen: "127.0.0.1:${METRICS_PORT}" }`,
        '',
      ].join('\n'),
    );
    child = spawn('ip', ['netns', 'exec', gw, process.execPath, main, 'run', '-c', configFile], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });
    forgets.push(atExit(() => child.kill('SIGKILL')));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    exited = new Promise((resolve) => child.on('exit', resolve));
    await until('flowgate to run', () => {
      if (child.exitCode !== null) throw new Error(`flowgate run exited with ${child.exitCode}:\n${stderr}`);
      return / msg=running( |$)/m.test(stderr) ? true : undefined;
    }, 90_000);
    // A receiver, so that the kernel answers no port unreachable; then flows that come and go.
    receiver = spawn('ip', ['netns', 'exec', wan, process.execPath, '-e', "require('dgram').createSocket('udp4').bind(5000)"], { stdio: 'ignore' });
    forgets.push(atExit(() => receiver?.kill('SIGKILL')));
    await until('the receiver to bind', async () => ((await sh(['ss', '-Hlun', 'sport = :5000'], { netns: wan })).trim() !== '' ? true : undefined));
    traffic = spawn(
      'ip',
      [
        'netns',
        'exec',
        lan,
        process.execPath,
        '-e',
        `const dgram = require('dgram'); let sport = 20000;
         setInterval(() => {
           const s = dgram.createSocket('udp4');
           s.bind(sport++, () => { let n = 0; const t = setInterval(() => { s.send('x', 5000, '203.0.113.2'); if (++n === 5) { clearInterval(t); s.close(); } }, 10); });
         }, 50);`,
      ],
      { stdio: 'ignore' },
    );
    forgets.push(atExit(() => traffic?.kill('SIGKILL')));
    // Flows offloaded, and some of them gone idle and removed already.
    await until('flows added and removed', async () => {
      const r = await flowgate('stats', '--json', '--socket', socketPath);
      const stats = JSON.parse(r.stdout) as GatewayStats;
      return stats.flows.added > 0 && stats.flows.removed > 0 ? true : undefined;
    }, 60_000);
  });

  after(async function () {
    this.timeout(60_000);
    traffic?.kill('SIGKILL');
    receiver?.kill('SIGKILL');
    if (child?.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      child.kill('SIGKILL');
    }
    for (const forget of forgets) forget();
    for (const netns of [gw, lan, wan]) if (netns !== undefined) await deleteNetns(netns);
    rmSync(dir, { recursive: true, force: true });
  });

  it('emits with --watch 1 --json an object per interval whose rates are its counter deltas over the instance seconds, flows added and removed included', async () => {
    const r = await watch(['--watch', '1', '--json', '--socket', socketPath], (out) => lines(out).length >= 4);
    assert.deepEqual({ status: r.status, signal: r.signal, stderr: r.stderr }, { status: 0, signal: null, stderr: '' }, 'Ctrl-C ends it quietly with status 0');
    const records = lines(r.stdout).map((line) => JSON.parse(line) as WatchRecord);
    let added = 0;
    let removed = 0;
    for (const [i, { interval, rates, notes, counters }] of records.entries()) {
      const { start, end } = counters;
      if (i > 0) assert.deepEqual(start, records[i - 1]?.counters.end, 'each interval starts with the sample that ended the previous one');
      assert.deepEqual(notes, []);
      assert.ok(rates !== null && interval.seconds > 0);
      assert.equal(interval.seconds, end.monotonic - start.monotonic);
      assert.deepEqual(Object.keys(rates.ports).sort(), ['eth0', 'eth1', 'eth1.100', 'eth2']);
      for (const [port, to] of Object.entries(end.ports)) {
        const from = start.ports[port]!;
        for (const { rate, counter, scale } of PORT_RATES) close(rates.ports[port]?.[rate], ((to[counter] - from[counter]) * scale) / interval.seconds, `${port} ${rate}`);
      }
      close(rates.fastpath.packets, (end.fastpath.packets - start.fastpath.packets) / interval.seconds, 'fast path packets');
      close(rates.fastpath.bits, ((end.fastpath.bytes - start.fastpath.bytes) * 8) / interval.seconds, 'fast path bits');
      close(rates.slowpath.packets, (end.slowpath.packets - start.slowpath.packets) / interval.seconds, 'slow path packets');
      for (const [reason, n] of Object.entries(end.slowpath.reasons)) close(rates.slowpath.reasons[reason], (n - (start.slowpath.reasons[reason] ?? 0)) / interval.seconds, `punt ${reason}`);
      for (const [reason, n] of Object.entries(end.drops.reasons)) close(rates.drops.reasons[reason], (n - (start.drops.reasons[reason] ?? 0)) / interval.seconds, `drop ${reason}`);
      close(rates.flows.added, (end.flows.added - start.flows.added) / interval.seconds, 'flows added');
      close(rates.flows.removed, (end.flows.removed - start.flows.removed) / interval.seconds, 'flows removed');
      added += end.flows.added - start.flows.added;
      removed += end.flows.removed - start.flows.removed;
      assert.ok((rates.ports.eth0?.rx_packets ?? 0) > 0, 'the LAN port receives the traffic');
    }
    assert.ok(added > 0 && removed > 0, `flows came (${added}) and went (${removed}) during the watch`);
  });

  it('appends a block per interval with --watch when its output is not a terminal', async () => {
    const r = await watch(['--watch', '1', '--socket', socketPath], (out) => (out.match(/^flows {6}added/gm) ?? []).length >= 2);
    assert.deepEqual({ status: r.status, stderr: r.stderr }, { status: 0, stderr: '' });
    assert.doesNotMatch(r.stdout, /\x1b/);
    const [first] = r.stdout.split(/\n(?=every )/);
    assert.match(first!, /^every 1 s: rates over the instance's last \d+\.\d{3} s; uptime \d\d:\d\d:\d\d\n\n/);
    for (const port of ['eth0', 'eth1', 'eth1.100', 'eth2']) assert.match(first!, new RegExp(`^${port.replace('.', '\\.')} +[\\d.]+( k)? +[\\d.]+ [kM]?bit/s `, 'm'), port);
    assert.match(first!, /^fast path {2}packets\/s [\d.]+( k)?, [\d.]+ [kM]?bit\/s$/m);
    assert.match(first!, /^slow path {2}packets\/s /m);
    assert.match(first!, /^flows {6}added\/s [\d.]+, removed\/s [\d.]+.*, active \d+$/m);
  });

  it('lists the NIC extended statistics of af_packet and net_pcap ports with --xstats, and none for a VLAN', async () => {
    const json = await flowgate('stats', '--xstats', '--json', '--socket', socketPath);
    assert.equal(json.status, 0, json.stderr);
    const { ports } = JSON.parse(json.stdout) as XstatsResult;
    assert.deepEqual(Object.keys(ports).sort(), ['eth0', 'eth1', 'eth2'], 'a VLAN sub-interface has no NIC');
    for (const port of ['eth0', 'eth1', 'eth2']) assert.equal(typeof ports[port]?.rx_good_packets, 'number', port);
    assert.ok((ports.eth0?.rx_good_packets ?? 0) > 0, 'the LAN port received traffic');
    assert.equal(ports.eth2?.rx_good_packets, PCAP_FRAMES, 'net_pcap counted each frame of its capture, once');
    assert.equal(ports.eth2?.rx_good_bytes, 42 * PCAP_FRAMES);
    const text = await flowgate('stats', '--xstats', '--socket', socketPath);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^eth2:\\n(?: {5}\\w+: [1-9]\\d*\\n)*? {5}rx_good_packets: ${PCAP_FRAMES}\\n`, 'm'));
    assert.match(text.stdout, /^eth0:\n {5}rx_good_packets: [1-9]\d*$/m);
    assert.doesNotMatch(text.stdout, /: 0$/m, 'zeros are left out without --all');
    const all = await flowgate('stats', '--xstats', '--all', '--socket', socketPath);
    assert.match(all.stdout, /^ {5}\w+: 0$/m, '--all lists the zeros too');
  });

  it('serves the NIC extended statistics on /metrics as flowgate_port_xstat{port,name}', async () => {
    const body = await sh([process.execPath, '-e', `fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then(async (r) => process.stdout.write(await r.text()))`], { netns: gw });
    const families = parseExposition(body);
    assert.ok((sampleValue(families, 'flowgate_port_xstat', { port: 'eth0', name: 'rx_good_packets' }) ?? 0) > 0);
    assert.equal(sampleValue(families, 'flowgate_port_xstat', { port: 'eth2', name: 'rx_good_packets' }), PCAP_FRAMES);
    const vlan = families.get('flowgate_port_xstat')?.samples.filter((s) => s.labels.port === 'eth1.100');
    assert.deepEqual(vlan, []);
  });
});
