// `flowgate run` as users run it: a child process in a network namespace whose ports are
// af_packet vdevs on veths, a LAN host and a WAN host in namespaces of their own, the CLI
// talking to it over the control socket, signals for reload and stop, /metrics scraped.
//
//   lan ns: lan1 192.168.0.2 ── lan0 [gw ns: flowgate eth0 192.168.0.1 | eth1 203.0.113.1] wan0 ── wan1 203.0.113.2 :wan ns
//
// The cases run in order against one instance (starting EAL takes seconds); the last stops it.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { checkConfigText, detectMachine, formatIssue } from '../../lib/config';
import type { GatewayFlow, GatewayStats } from '../../lib/gateway/types';
import { atExit, createNetns, deleteNetns, linkExists, sh } from '../helpers/netns';
import { parseExposition, sampleValue } from '../metrics/exposition';
import { until } from '../helpers/wait';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');
const workerCpu = detectMachine().cpus.at(-1) ?? 0;
const METRICS_PORT = 9464;
const DATAGRAMS = 50;

function configText(socket: string, extra: string[] = []): string {
  return [
    'ports:',
    '  eth0: { device: "net_af_packet0,iface=lan0", addresses: ["192.168.0.1/24"] }',
    '  eth1: { device: "net_af_packet1,iface=wan0", addresses: ["203.0.113.1/24"] }',
    'flowtable: { devices: [eth0, eth1], l4proto: [udp] }',
    `workers: { cpus: [${workerCpu}] }`,
    `control: { socket: "${socket}" }`,
    `metrics: { listen: "127.0.0.1:${METRICS_PORT}" }`,
    ...extra,
    '',
  ].join('\n');
}

/** The CLI in this (root) namespace: the control socket is a path, reachable from any netns. */
function flowgate(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [main, ...args], { cwd: repo, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

async function json<T>(...args: string[]): Promise<T> {
  const r = await flowgate(...args);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}


/** Node inside a namespace: the tests need nothing that setup.sh does not install. */
function nodeIn(netns: string, script: string): Promise<string> {
  return sh([process.execPath, '-e', script], { netns });
}

/** Packets wan2 (the second WAN router) received so far. */
async function wan2Received(wan: string): Promise<number> {
  const [link] = JSON.parse(await sh(['ip', '-s', '-j', 'link', 'show', 'wan2'], { netns: wan })) as { stats64: { rx: { packets: number } } }[];
  return link?.stats64.rx.packets ?? 0;
}

/** One UDP datagram every 10 ms from the LAN host's `sport` to `dst:dport` until stopped. */
function udpStream(lan: string, dst: string, sport: number, dport: number): { stop(): void } {
  const child = spawn(
    'ip',
    ['netns', 'exec', lan, process.execPath, '-e', `const s = require('dgram').createSocket('udp4'); s.bind(${sport}, () => setInterval(() => s.send('x', ${dport}, '${dst}'), 10));`],
    { stdio: 'ignore' },
  );
  const forget = atExit(() => child.kill('SIGKILL'));
  return {
    stop: () => {
      child.kill('SIGKILL');
      forget();
    },
  };
}

describe('flowgate run in a network namespace', function () {
  this.timeout(120_000);

  let dir: string;
  let socketPath: string;
  let configFile: string;
  let gw: string;
  let lan: string;
  let wan: string;
  let child: ChildProcess;
  let stderr = '';
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let forgetChild: () => void;
  let ipForwardBefore: string;

  /** Log lines with this msg written since `from` (an offset into stderr). */
  const logged = (msg: string, from = 0) =>
    stderr
      .slice(from)
      .split('\n')
      .filter((line) => line.includes(` msg=${/\s/.test(msg) ? `"${msg}"` : msg}`));
  /** Waits for a line the gateway logs: its stderr reaches us later than its other effects. */
  const untilLogged = (msg: string, from: number) => until(`"${msg}" logged`, () => (logged(msg, from).length > 0 ? true : undefined));

  before(async function () {
    this.timeout(180_000);
    dir = mkdtempSync(path.join(tmpdir(), 'fg-gw-'));
    socketPath = path.join(dir, 'run', 'flowgate.sock');
    configFile = path.join(dir, 'flowgate.yaml');
    gw = await createNetns('fgrun-gw');
    lan = await createNetns('fgrun-lan');
    wan = await createNetns('fgrun-wan');
    await sh(['ip', 'link', 'add', 'lan0', 'netns', gw, 'type', 'veth', 'peer', 'name', 'lan1', 'netns', lan]);
    await sh(['ip', 'link', 'add', 'wan0', 'netns', gw, 'type', 'veth', 'peer', 'name', 'wan1', 'netns', wan]);
    await sh('ip link set lan0 up && ip link set wan0 up', { netns: gw });
    // The hosts complete their checksums: veths leave them to the receiver, and flowgate's
    // af_packet ports forward frames as they are (a real NIC computes them in hardware).
    await sh('ip link set lan1 up && ip addr add 192.168.0.2/24 dev lan1 && ip route add default via 192.168.0.1 && ethtool -K lan1 tx off >/dev/null', { netns: lan });
    await sh('ip link set wan1 up && ip addr add 203.0.113.2/24 dev wan1 && ip route add default via 203.0.113.1 && ethtool -K wan1 tx off >/dev/null', { netns: wan });
    // A second router on the WAN, with a MAC of its own (wan2, a macvlan on wan1), and two
    // destinations behind "both": what a route or neighbour change moves traffic between.
    // ARP for each address is answered only by the interface that has it.
    await sh(
      [
        'sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0',
        'ip link add wan2 link wan1 type macvlan mode bridge && ip link set wan2 up && ip addr add 203.0.113.3/24 dev wan2',
        'ip addr add 10.6.0.5/32 dev lo && ip addr add 10.7.0.5/32 dev lo && ip link set lo up',
      ].join(' && '),
      { netns: wan },
    );
    ipForwardBefore = (await sh(['sysctl', '-n', 'net.ipv4.ip_forward'], { netns: gw })).trim();
    writeFileSync(configFile, configText(socketPath));

    child = spawn('ip', ['netns', 'exec', gw, process.execPath, main, 'run', '-c', configFile], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });
    forgetChild = atExit(() => child.kill('SIGKILL'));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await until('flowgate to run', () => {
      if (child.exitCode !== null) throw new Error(`flowgate run exited with ${child.exitCode}:\n${stderr}`);
      return logged('running').length > 0 ? true : undefined;
    }, 90_000);
  });

  after(async function () {
    this.timeout(60_000);
    if (child?.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      child.kill('SIGKILL');
    }
    forgetChild?.();
    for (const netns of [gw, lan, wan]) if (netns !== undefined) await deleteNetns(netns);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves stats --json over its control socket, found through -c FILE, with the configured ports', async () => {
    const stats = await json<GatewayStats>('stats', '--json', '-c', configFile);
    assert.deepEqual(Object.keys(stats.ports).sort(), ['eth0', 'eth1']);
    for (const counters of Object.values(stats.ports)) assert.equal(typeof counters.rx_packets, 'number');
    assert.equal(stats.flows.capacity >= 1048576, true);
    assert.deepEqual(
      stats.workers.map((w) => w.cpu),
      [workerCpu],
    );
    const text = await flowgate('stats', '--socket', socketPath);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^eth0 /m);
    assert.match(text.stdout, /^eth1 /m);
  });

  it('carries a UDP flow from the LAN to the WAN on the fast path and lists it in flows --json and flows', async () => {
    // The receiver first, counting what arrives; then the sender, one datagram every 20 ms.
    const receiver = nodeIn(
      wan,
      `const s = require('dgram').createSocket('udp4'); let n = 0;
       s.on('message', () => { if (++n === ${DATAGRAMS}) { console.log(n); process.exit(0); } });
       s.bind(5000, () => console.error('ready'));
       setTimeout(() => { console.log(n); process.exit(0); }, 20000);`,
    );
    await until('the receiver to bind', async () => ((await sh(['ss', '-Hlun', 'sport = :5000'], { netns: wan })).trim() !== '' ? true : undefined));
    await nodeIn(
      lan,
      `const s = require('dgram').createSocket('udp4'); let i = 0;
       s.bind(4000, () => { const t = setInterval(() => { s.send('datagram ' + i, 5000, '203.0.113.2'); if (++i === ${DATAGRAMS}) { clearInterval(t); setTimeout(() => s.close(), 100); } }, 20); });`,
    );
    assert.equal(Number((await receiver).trim()), DATAGRAMS, 'every datagram arrived, once');

    const listing = await flowgate('flows', '--json', '--socket', socketPath);
    assert.equal(listing.status, 0, listing.stderr);
    // One JSON object per line.
    const flows = listing.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as GatewayFlow);
    const flow = flows.find((f) => f.proto === 'udp' && f.sport === 4000 && f.dport === 5000);
    assert.ok(flow, `the flow is offloaded: ${JSON.stringify(flows)}`);
    assert.deepEqual(
      { src: flow.src, dst: flow.dst, in: flow.in, out: flow.out, tunnel: flow.tunnel, state: flow.state },
      { src: '192.168.0.2', dst: '203.0.113.2', in: 'eth0', out: 'eth1', tunnel: null, state: 'offloaded' },
    );
    assert.ok(flow.packets > 0 && flow.packets < DATAGRAMS, `the kernel forwarded the first datagrams, the fast path the rest (${flow.packets})`);
    const stats = await json<GatewayStats>('stats', '--json', '--socket', socketPath);
    assert.ok(stats.fastpath.packets >= flow.packets);
    assert.ok(stats.flows.active >= 1);

    const text = await flowgate('flows', '--socket', socketPath);
    assert.match(text.stdout, /^udp {6}17 idle=\d+ offloaded src=192\.168\.0\.2 dst=203\.0\.113\.2 sport=4000 dport=5000 in=eth0 out=eth1 packets=\d+ bytes=\d+ \[UNREPLIED\] src=203\.0\.113\.2 dst=192\.168\.0\.2 sport=5000 dport=4000 id=\d+$/m);
  });

  /** flows --json: one flow per line. */
  const flowsNow = async (): Promise<GatewayFlow[]> => {
    const listing = await flowgate('flows', '--json', '--socket', socketPath);
    assert.equal(listing.status, 0, listing.stderr);
    return listing.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as GatewayFlow);
  };
  const offloaded = (sport: number) => until(`the flow from port ${sport} offloaded`, async () => (await flowsNow()).find((f) => f.sport === sport));

  it("moves an offloaded flow to its next hop's new MAC in place when the neighbour entry changes, without removing it", async () => {
    const stream = udpStream(lan, '203.0.113.2', 4001, 5001);
    try {
      const flow = await offloaded(4001);
      const before = await json<GatewayStats>('stats', '--json', '--socket', socketPath);
      const received = await wan2Received(wan);
      const from = stderr.length;
      const wan2Mac = (JSON.parse(await sh(['ip', '-j', 'link', 'show', 'wan2'], { netns: wan })) as { address: string }[])[0]?.address ?? '';
      await sh(['ip', 'neigh', 'replace', '203.0.113.2', 'lladdr', wan2Mac, 'dev', 'eth1', 'nud', 'permanent'], { netns: gw });
      await until('the datagrams to reach the new MAC', async () => ((await wan2Received(wan)) >= received + 20 ? true : undefined));
      const after = await json<GatewayStats>('stats', '--json', '--socket', socketPath);
      assert.equal((await flowsNow()).find((f) => f.sport === 4001)?.id, flow.id, 'the same flow carries on');
      assert.equal(after.flows.removed_by.invalidated, before.flows.removed_by.invalidated, 'no flow was removed');
      assert.ok(after.fastpath.packets > before.fastpath.packets);
      await untilLogged('next hop moved in place', from);
      assert.equal(logged('next hop moved in place', from).length, 1, stderr.slice(from));
    } finally {
      stream.stop();
      await sh(['ip', 'neigh', 'del', '203.0.113.2', 'dev', 'eth1'], { netns: gw });
    }
  });

  it('moves only the flow whose destination a changed route covers to the new next hop; the other stays offloaded', async () => {
    await sh('ip route add 10.6.0.0/24 via 203.0.113.2 dev eth1 && ip route add 10.7.0.0/24 via 203.0.113.2 dev eth1', { netns: gw });
    const moved = udpStream(lan, '10.7.0.5', 4002, 5002);
    const stays = udpStream(lan, '10.6.0.5', 4003, 5003);
    try {
      const [movedFlow, stayingFlow] = [await offloaded(4002), await offloaded(4003)];
      const received = await wan2Received(wan);
      const changedAt = performance.now();
      await sh(['ip', 'route', 'replace', '10.7.0.0/24', 'via', '203.0.113.3', 'dev', 'eth1'], { netns: gw });
      // Polled as fast as `ip -s link` answers (a few ms): the first datagram at the new next hop.
      await until('the first datagram at the second router', async () => ((await wan2Received(wan)) > received ? true : undefined));
      const movedMs = performance.now() - changedAt;
      await until('the moved flow to reach the second router', async () => ((await wan2Received(wan)) >= received + 20 ? true : undefined));
      const relearned = await until('the moved flow offloaded again', async () => (await flowsNow()).find((f) => f.sport === 4002 && f.id !== movedFlow.id));
      console.log(`      route change to the moved flow's first datagram at the new next hop: ${movedMs.toFixed(0)} ms; offloaded again: ${(performance.now() - changedAt).toFixed(0)} ms (CLI polls included)`);
      assert.equal(relearned.out, 'eth1');
      assert.equal((await flowsNow()).find((f) => f.sport === 4003)?.id, stayingFlow.id, 'the flow to 10.6.0.5 was not touched');
    } finally {
      moved.stop();
      stays.stop();
      await sh('ip route del 10.6.0.0/24 && ip route del 10.7.0.0/24', { netns: gw });
    }
  });

  it('keeps running and sets the MTU back when the kernel interface is given one its NIC refuses', async () => {
    const from = stderr.length;
    await sh(['ip', 'link', 'set', 'eth0', 'mtu', '16000'], { netns: gw });
    await until('the MTU to be put back', async () => {
      const [link] = JSON.parse(await sh(['ip', '-j', 'link', 'show', 'eth0'], { netns: gw })) as { mtu: number }[];
      return link?.mtu === 1500 ? true : undefined;
    });
    await untilLogged('port MTU refused by the NIC: the kernel interface is set back', from);
    assert.equal(logged('port MTU refused by the NIC: the kernel interface is set back', from).length, 1, stderr.slice(from));
    assert.equal(child.exitCode, null, 'still running');
    const stats = await json<GatewayStats>('stats', '--json', '--socket', socketPath);
    assert.deepEqual(Object.keys(stats.ports).sort(), ['eth0', 'eth1']);
  });

  it('serves /metrics in its namespace with the figures of its ports, flows and workers', async () => {
    const body = await nodeIn(
      gw,
      `fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then(async (r) => { if (r.status !== 200) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()); });`,
    );
    const families = parseExposition(body);
    for (const port of ['eth0', 'eth1']) assert.ok((sampleValue(families, 'flowgate_port_rx_packets_total', { port }) ?? -1) > 0, port);
    assert.ok((sampleValue(families, 'flowgate_fastpath_packets_total') ?? 0) > 0);
    assert.ok((sampleValue(families, 'flowgate_flows_added_total') ?? 0) >= 1);
    assert.equal(sampleValue(families, 'flowgate_flowtable_capacity'), (await json<GatewayStats>('stats', '--json', '--socket', socketPath)).flows.capacity);
    assert.equal(typeof sampleValue(families, 'flowgate_worker_busy_ratio', { worker: '0' }), 'number');
    const missing = await nodeIn(gw, `fetch('http://127.0.0.1:${METRICS_PORT}/').then((r) => console.log(r.status));`);
    assert.equal(missing.trim(), '404');
  });

  it('applies a valid change on SIGHUP: the new route is in the kernel and the change is logged', async () => {
    const from = stderr.length;
    writeFileSync(configFile, configText(socketPath, ['routes:', '  - { to: "10.9.0.0/16", via: 203.0.113.2, dev: eth1 }']));
    child.kill('SIGHUP');
    await until('the reload', () => (logged('config reloaded', from).length > 0 ? true : undefined));
    const routes = JSON.parse(await sh(['ip', '-j', 'route', 'show', '10.9.0.0/16'], { netns: gw })) as { dst: string; gateway?: string; dev: string }[];
    assert.deepEqual(
      routes.map((r) => ({ dst: r.dst, gateway: r.gateway, dev: r.dev })),
      [{ dst: '10.9.0.0/16', gateway: '203.0.113.2', dev: 'eth1' }],
    );
    assert.ok(logged('config change applied', from).length > 0, stderr.slice(from));
  });

  it('keeps the running config on SIGHUP with an invalid file, logging every problem', async () => {
    const from = stderr.length;
    const text = configText(socketPath, ['routes:', '  - { to: "10.8.0.0/99", via: 203.0.113.2, dev: eth1, metric: -1 }']);
    const expected = checkConfigText(text, configFile).issues.map(formatIssue);
    assert.equal(expected.length, 2);
    writeFileSync(configFile, text);
    child.kill('SIGHUP');
    await until('the rejection', () => (logged('reload rejected: the config is invalid; the running config stays in force', from).length > 0 ? true : undefined));
    const problems = logged('config problem', from).map((line) => JSON.parse(/ issue=("(?:[^"\\]|\\.)*")/.exec(line)?.[1] ?? 'null') as string);
    assert.deepEqual(problems, expected);
    const routes = JSON.parse(await sh(['ip', '-j', 'route', 'show', '10.9.0.0/16'], { netns: gw })) as unknown[];
    assert.equal(routes.length, 1, 'the route of the running config stays');
    const stats = await json<GatewayStats>('stats', '--json', '--socket', socketPath);
    assert.deepEqual(Object.keys(stats.ports).sort(), ['eth0', 'eth1'], 'still serving');
  });

  it('refuses a reload whose ruleset nft rejects before changing anything, naming FILE:LINE', async () => {
    const from = stderr.length;
    const routesBefore = await sh(['ip', 'route', 'show'], { netns: gw });
    const tablesBefore = await sh(['nft', 'list', 'tables'], { netns: gw });
    const text = configText(socketPath, [
      'routes:',
      '  - { to: "10.11.0.0/16", via: 203.0.113.2, dev: eth1 }',
      'nftables: |',
      '  table inet fgbad {',
      '    chain c1 { type filter hook forward priority 0; ip daddr 10.0.0.0/8 acept; }',
      '  }',
    ]);
    writeFileSync(configFile, text);
    const badLine = text.split('\n').findIndex((line) => line.includes('acept')) + 1;
    child.kill('SIGHUP');
    await until('the rejection', () => (logged('reload rejected: the config is invalid; the running config stays in force', from).length > 0 ? true : undefined));
    const problems = logged('config problem', from).join('\n');
    assert.match(problems, new RegExp(`${configFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${badLine}:`), problems);
    assert.equal(await sh(['ip', 'route', 'show'], { netns: gw }), routesBefore, 'no route added');
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: gw }), tablesBefore, 'no table added');
    writeFileSync(configFile, configText(socketPath, ['routes:', '  - { to: "10.9.0.0/16", via: 203.0.113.2, dev: eth1 }']));
  });

  it('rolls a reload back whole when a step fails: a port that cannot start leaves the routes, ports and ruleset as they were', async () => {
    const from = stderr.length;
    const routesBefore = await sh(['ip', 'route', 'show'], { netns: gw });
    const tablesBefore = await sh(['nft', 'list', 'tables'], { netns: gw });
    writeFileSync(
      configFile,
      configText(socketPath, [
        'routes:',
        '  - { to: "10.9.0.0/16", via: 203.0.113.2, dev: eth1 }',
        '  - { to: "10.10.0.0/16", via: 203.0.113.2, dev: eth1 }',
        'nftables: |',
        '  table inet fgreload { chain c1 { type filter hook forward priority 0; }; }',
      ]).replace('ports:\n', 'ports:\n  eth2: { device: "net_af_packet2,iface=nosuch0", addresses: ["198.51.100.1/24"] }\n'),
    );
    child.kill('SIGHUP');
    await until('the refusal', () => (logged('reload failed: the gateway refused the new config', from).length > 0 ? true : undefined));
    assert.match(stderr.slice(from), /reload failed and was rolled back/);
    assert.equal(await sh(['ip', 'route', 'show'], { netns: gw }), routesBefore, 'no route added or removed');
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: gw }), tablesBefore, 'no table added');
    assert.equal(await linkExists('eth2', gw), false);
    const stats = await json<GatewayStats>('stats', '--json', '--socket', socketPath);
    assert.deepEqual(Object.keys(stats.ports).sort(), ['eth0', 'eth1'], 'the running ports stay');
    writeFileSync(configFile, configText(socketPath, ['routes:', '  - { to: "10.9.0.0/16", via: 203.0.113.2, dev: eth1 }']));
  });

  it('tears down the flows through a port whose kernel interface goes down', async () => {
    const stream = udpStream(lan, '203.0.113.2', 4004, 5004);
    try {
      await offloaded(4004);
      await sh(['ip', 'link', 'set', 'eth1', 'down'], { netns: gw });
      await until('no flow through eth1', async () => ((await flowsNow()).some((f) => f.out === 'eth1' || f.in === 'eth1') ? undefined : true));
    } finally {
      stream.stop();
      await sh(['ip', 'link', 'set', 'eth1', 'up'], { netns: gw });
    }
  });

  it('stops on SIGTERM with exit status 0, leaving no interface, address, route or socket behind', async () => {
    child.kill('SIGTERM');
    const { code, signal } = await exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
    assert.equal(logged('stopped').length, 1);
    for (const dev of ['eth0', 'eth1']) assert.equal(await linkExists(dev, gw), false, `${dev} removed`);
    const links = (JSON.parse(await sh(['ip', '-j', 'link', 'show'], { netns: gw })) as { ifname: string }[]).map((l) => l.ifname).sort();
    assert.deepEqual(links, ['lan0', 'lo', 'wan0']);
    const addresses = (JSON.parse(await sh(['ip', '-j', 'addr', 'show'], { netns: gw })) as { addr_info: { family: string; local: string; scope: string }[] }[])
      .flatMap((l) => l.addr_info)
      .filter((a) => a.scope === 'global')
      .map((a) => a.local);
    assert.deepEqual(addresses, []);
    assert.equal((await sh(['ip', 'route', 'show'], { netns: gw })).trim(), '');
    assert.equal((await sh(['sysctl', '-n', 'net.ipv4.ip_forward'], { netns: gw })).trim(), ipForwardBefore);
    assert.equal(existsSync(socketPath), false, 'the control socket is removed');
    const r = await flowgate('stats', '--socket', socketPath);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /\[ERR_FLOWGATE_CONTROL_UNAVAILABLE\]\n$/);
  });
});
