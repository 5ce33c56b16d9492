// `flowgate capture` against a running instance (`flowgate run` on AF_PACKET ports, two
// flowgate sites, lib/demo/topology.ts) while real traffic flows through it: a mixed
// stream from the LAN host (UDP to two ports, TCP, ICMP), captured as the operator would,
// decoded by tshark.
//
//   lan ── [site A] eth0 … eth1 ═ underlay ═ [site B] ── remote
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic, type TrafficHandle } from '../../lib/demo/traffic';
import { spawnFlowgate } from '../helpers/cli';
import { tsharkFields } from '../helpers/dataplane';
import { sh } from '../helpers/netns';
import { HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, until } from './support';

const CAPTURED_PORT = 7777;
const OTHER_PORT = 7778;
const TCP_PORT = 7779;
const main = path.resolve(__dirname, '../../lib/cli/main.js');


describe('flowgate capture on a running instance (AF_PACKET, real traffic)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;
  let socket: string;
  let dir: string;
  const jobs: TrafficHandle<unknown>[] = [];

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({ farEnd: 'flowgate', prefix: 'fgcap', privateSockets: true });
    socket = topology.site('a').options.socket;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-capture-'));
    // The mixed stream, for the whole suite: UDP to two ports, a TCP echo and pings.
    const remote = DEMO_ADDRESSES.remoteHost;
    for (const port of [CAPTURED_PORT, OTHER_PORT]) {
      const receiver = startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: port, listen: true });
      await receiver.ready;
      jobs.push(receiver, startTraffic(topology.ns.lan, { kind: 'udp-peer', bind: port + 100, peer: { host: remote, port }, pps: 50, seconds: 300 }));
    }
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: TCP_PORT });
    await sink.ready;
    jobs.push(sink);
    for (const job of jobs) job.result.catch(() => undefined);
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    for (const job of jobs) job.kill();
    await topology?.destroy();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("writes exactly --count packets, all of them the 'udp port 7777' ones, out of a stream of other UDP, TCP and ICMP, and says so on stderr", async () => {
    const ping = sh(['ping', '-c', '40', '-i', '0.05', DEMO_ADDRESSES.remoteHost], { netns: topology.ns.lan }).catch(() => '');
    const tcp = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: TCP_PORT, seconds: 2 });
    tcp.result.catch(() => undefined);
    const file = path.join(dir, 'udp7777.pcapng');
    const r = await spawnFlowgate(['capture', '--socket', socket, '--port', 'eth0', '--direction', 'rx', '--count', '20', '-w', file, 'udp', 'port', '7777']);
    await ping;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^20 packets captured\n\d+ packets matched the filter\n0 packets lost\n$/);
    const got = await tsharkFields(file, ['ip.src', 'ip.dst', 'ip.proto', 'udp.dstport']);
    assert.equal(got.length, 20);
    for (const p of got) assert.deepEqual(p, [DEMO_ADDRESSES.lanHost, DEMO_ADDRESSES.remoteHost, '17', String(CAPTURED_PORT)]);
  });

  it('captures every protocol of the stream without a filter, ICMP included', async () => {
    const ping = sh(['ping', '-c', '40', '-i', '0.05', DEMO_ADDRESSES.remoteHost], { netns: topology.ns.lan }).catch(() => '');
    const file = path.join(dir, 'all.pcapng');
    const r = await spawnFlowgate(['capture', '--socket', socket, '--port', 'eth0', '--direction', 'rx', '--count', '60', '-w', file]);
    await ping;
    assert.equal(r.status, 0, r.stderr);
    const protocols = new Set((await tsharkFields(file, ['ip.proto'])).map(([p]) => p));
    assert.ok(protocols.has('1') && protocols.has('17'), `ICMP and UDP among ${[...protocols].join(', ')}`);
  });

  it('captures what the port sends with --direction tx: the LAN packets encapsulated in IPv6 by the site, with the encapsulation limit option', async () => {
    const file = path.join(dir, 'tx.pcapng');
    // The outer header's next header is the destination options (60) that carry the limit.
    const r = await spawnFlowgate(['capture', '--socket', socket, '--port', 'eth1', '--direction', 'tx', '--count', '5', '-w', file, 'ip6', 'proto', '60']);
    assert.equal(r.status, 0, r.stderr);
    const got = await tsharkFields(file, ['ipv6.src', 'ipv6.dst', 'ip.src', 'ip.dst']);
    assert.equal(got.length, 5);
    for (const p of got) assert.deepEqual(p, [DEMO_ADDRESSES.underlayA, DEMO_ADDRESSES.underlayB, DEMO_ADDRESSES.lanHost, DEMO_ADDRESSES.remoteHost]);
  });

  it('pipes pcapng into tshark with -w -', async () => {
    const out = await sh([
      'sh',
      '-c',
      `'${process.execPath}' '${main}' capture --socket '${socket}' --port eth0 --direction rx --count 10 -w - udp port ${CAPTURED_PORT} | tshark -r - -n -T fields -e udp.dstport`,
    ]);
    assert.deepEqual(out.trim().split('\n'), Array(10).fill(String(CAPTURED_PORT)));
  });

  it("refuses a filter libpcap refuses with libpcap's message and an unknown port, in one line and exit 2", async () => {
    const bad = await spawnFlowgate(['capture', '--socket', socket, '--port', 'eth0', '-w', path.join(dir, 'x'), 'udp', 'prot', '7777']);
    assert.deepEqual([bad.status, bad.stderr], [2, "flowgate capture: filter 'udp prot 7777': can't parse filter expression: syntax error\n"]);
    const unknown = await spawnFlowgate(['capture', '--socket', socket, '--port', 'eth9', '-w', path.join(dir, 'x')]);
    assert.deepEqual([unknown.status, unknown.stderr], [2, "flowgate capture: params.port: no port named 'eth9' (ports: eth0, eth1)\n"]);
  });

  it('stops on Ctrl-C with what it wrote and the counts on stderr, as tcpdump does', async () => {
    const file = path.join(dir, 'interrupted.pcapng');
    const child = spawn(process.execPath, [main, 'capture', '--socket', socket, '--port', 'eth0', '--direction', 'rx', '-w', file, 'udp'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await until('the capture to write packets', () => ((fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0) > 2000 ? true : undefined));
    child.kill('SIGINT');
    assert.equal(await exited, 0, stderr);
    const m = /^(\d+) packets captured\n(\d+) packets matched the filter\n(\d+) packets lost\n$/.exec(stderr);
    assert.ok(m !== null, stderr);
    assert.equal((await tsharkFields(file, ['udp.dstport'])).length, Number(m[1]), 'as many packets in the file as it says');
  });

  it('stops when the reader of its stdout leaves, with the counts on stderr and success', async () => {
    const out = await sh([
      'sh',
      '-c',
      `{ '${process.execPath}' '${main}' capture --socket '${socket}' --port eth0 --direction rx -w - udp 2>'${dir}/head.err'; echo "exit $?" >&2; } 2>'${dir}/head.status' | head -c 3000 > /dev/null; cat '${dir}/head.status' '${dir}/head.err'`,
    ]);
    assert.match(out, /^exit 0\n\d+ packets captured\n\d+ packets matched the filter\n\d+ packets lost\n$/);
  });

  it('stops when the client is killed mid-capture: the instance forwards on and the port takes a new capture', async () => {
    const file = path.join(dir, 'killed.pcapng');
    const child = spawn(process.execPath, [main, 'capture', '--socket', socket, '--port', 'eth0', '--direction', 'rx', '-w', file, 'udp'], { stdio: 'ignore' });
    await until('the capture to write a packet', () => ((fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0) > 400 ? true : undefined));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const before = await topology.site('a').stats();
    // A new capture on the same port: the killed one is gone.
    const again = await spawnFlowgate(['capture', '--socket', socket, '--port', 'eth0', '--direction', 'rx', '--count', '3', '-w', path.join(dir, 'again.pcapng'), 'udp']);
    assert.equal(again.status, 0, again.stderr);
    assert.equal((await tsharkFields(path.join(dir, 'again.pcapng'), ['udp.dstport'])).length, 3);
    const after = await topology.site('a').stats();
    assert.ok(after.fastpath.packets > before.fastpath.packets, 'the fast path kept forwarding the stream');
  });
});
