// Tier 2: port captures through the real addon on net_pcap ports: a mixed stream in, the
// capture's pcapng out, decoded by tshark (never by flowgate's own parser).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { PcapBench, runChildJob, tsharkFields } from '../helpers/dataplane';
import type { CaptureJob, CaptureJobResult } from '../helpers/capture-child';
import { sh } from '../helpers/netns';
import { scapyBuild } from '../helpers/scapy';

const HOST = '02:00:00:00:00:10';
const GW_LAN = '00:00:22:33:11:55';
const GW_WAN = '00:11:22:33:11:55';
const PEER = '02:00:00:00:00:22';
const WORKERS = { cpus: [1] };
const SMALL = { flowCapacity: 4096, mbufs: 4095 };
const CHILD = path.join(__dirname, '../helpers/capture-child.js');

const lan = (l3l4: string) => `Ether(dst='${GW_LAN}', src='${HOST}')/${l3l4}`;
const udp = (dport: number, i: number) => lan(`IP(src='192.168.0.10', dst='198.51.100.7', ttl=64, id=${i})/UDP(sport=5000, dport=${dport})/Raw(b'u'*${40 + i})`);

/** UDP to 7777 (6), UDP to other ports (6), TCP to port 7777 (3) and ICMP (3), interleaved. */
function mixedStream(): string[] {
  const frames: string[] = [];
  for (let i = 0; i < 6; i++) {
    frames.push(udp(7777, i), udp(i % 2 === 0 ? 5353 : 7778, i));
    if (i % 2 === 0) frames.push(lan(`IP(src='192.168.0.10', dst='198.51.100.7', id=${100 + i})/TCP(sport=40000, dport=7777, flags='A')/Raw(b't'*10)`));
    else frames.push(lan(`IP(src='192.168.0.10', dst='198.51.100.7', id=${100 + i})/ICMP(id=7, seq=${i})`));
  }
  return frames;
}

function udpFlow(dport: number) {
  return { original: { in: 'lan', proto: 'udp' as const, src: '192.168.0.10', dst: '198.51.100.7', sport: 5000, dport, out: { port: 'wan', mac: PEER } } };
}

function runCaptureJob(job: CaptureJob): Promise<CaptureJobResult> {
  return runChildJob<CaptureJobResult>(CHILD, 'capture', job);
}

/** Where the first enhanced packet block of a pcapng stream starts, once it is there. */
function firstPacketAt(stream: Buffer): number | undefined {
  for (let at = 0; at + 8 <= stream.length; ) {
    const type = stream.readUInt32LE(at);
    const length = stream.readUInt32LE(at + 4);
    if (type === 6) return at;
    if (length < 12) return undefined;
    at += length;
  }
  return undefined;
}

describe('port capture through the addon (pcapng, libpcap filters run by rte_bpf)', function () {
  this.timeout(120_000);
  let bench: PcapBench;
  let input: Buffer[];
  before(async () => {
    input = await scapyBuild(mixedStream());
  });
  beforeEach(() => {
    bench = new PcapBench();
  });
  afterEach(() => bench.dispose());

  const ports = () => [
    { name: 'lan', mac: GW_LAN, device: bench.device('lan', input) },
    { name: 'wan', mac: GW_WAN, device: bench.device('wan') },
  ];
  const file = (name: string) => path.join(bench.dir, `${name}.pcapng`);

  it("holds exactly the frames 'udp port 7777' matches of a mixed stream, as received and as sent, and forwards all the same", async () => {
    const r = await runCaptureJob({
      start: { workers: WORKERS, ...SMALL, ports: ports() },
      flows: [udpFlow(7777), udpFlow(5353), udpFlow(7778)],
      captures: [
        { port: 'lan', direction: 'rx', filter: 'udp port 7777', file: file('lan-rx') },
        { port: 'wan', direction: 'tx', filter: 'udp port 7777', file: file('wan-tx') },
      ],
      expectRx: input.length,
    });
    assert.equal(r.rx, input.length);
    assert.equal(r.fastPackets, 12, 'every UDP frame forwarded, captured or not');
    assert.equal(r.txPackets.wan, 12);
    const rx = await tsharkFields(file('lan-rx'), ['eth.src', 'eth.dst', 'ip.ttl', 'ip.id', 'udp.dstport', 'tcp.dstport', 'frame.len']);
    assert.deepEqual(
      rx.map(([src, dst, ttl, id, dport, tcp]) => [src, dst, ttl, id, dport, tcp]),
      [0, 1, 2, 3, 4, 5].map((i) => [HOST, GW_LAN, '64', `0x${i.toString(16).padStart(4, '0')}`, '7777', '']),
      'the UDP 7777 frames as they arrived, in order; not the TCP ones to port 7777, not the other UDP ports, not ICMP',
    );
    const tx = await tsharkFields(file('wan-tx'), ['eth.src', 'eth.dst', 'ip.ttl', 'udp.dstport']);
    assert.deepEqual(tx, Array(6).fill([GW_WAN, PEER, '63', '7777']), 'as sent: next-hop MACs, TTL decremented');
    assert.deepEqual(
      r.captures.map((c) => [c.written, c.matched, c.lost, c.end]),
      [
        [6, 6, 0, 'stopped'],
        [6, 6, 0, 'stopped'],
      ],
    );
    // The pcapng says which way each frame went (EPB flags).
    const dirs = await tsharkFields(file('lan-rx'), ['frame.packet_flags_direction']);
    const outDirs = await tsharkFields(file('wan-tx'), ['frame.packet_flags_direction']);
    assert.deepEqual([dirs[0], outDirs[0]], [['0x00000001'], ['0x00000002']], 'inbound on lan, outbound on wan');
  });

  it('captures every frame without a filter, and nothing in a direction the port does not carry', async () => {
    const r = await runCaptureJob({
      start: { workers: WORKERS, ...SMALL, ports: ports() },
      flows: [udpFlow(7777)],
      captures: [
        { port: 'lan', direction: 'both', file: file('lan-both') },
        { port: 'wan', direction: 'rx', file: file('wan-rx') },
      ],
      expectRx: input.length,
    });
    const all = await tsharkFields(file('lan-both'), ['frame.len']);
    assert.deepEqual(
      all.map(([len]) => Number(len)),
      input.map((f) => f.length),
      'the whole stream, each frame whole',
    );
    assert.equal((await tsharkFields(file('wan-rx'), ['frame.len'])).length, 0);
    assert.deepEqual(r.captures.map((c) => c.written), [input.length, 0]);
  });

  it('stops writing after --count packets, and keeps only snaplen bytes of each', async () => {
    const r = await runCaptureJob({
      start: { workers: WORKERS, ...SMALL, ports: ports() },
      flows: [udpFlow(7777)],
      captures: [{ port: 'lan', direction: 'rx', filter: 'udp', count: 3, snaplen: 64, file: file('count') }],
      expectRx: input.length,
    });
    const got = await tsharkFields(file('count'), ['frame.len', 'frame.cap_len', 'udp.dstport']);
    assert.equal(got.length, 3);
    for (const [len, cap] of got) assert.deepEqual([Number(len) > 64, Number(cap)], [true, 64]);
    assert.deepEqual(got.map((g) => g[2]), ['7777', '5353', '7777']);
    assert.equal(r.captures[0]?.end, 'count');
    assert.equal(r.captures[0]?.written, 3);
  });

  it("refuses a filter libpcap refuses with libpcap's message, a second capture on a port, an unknown port and a VLAN with a hint", async () => {
    const r = await runCaptureJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: ports(),
        vlans: [{ name: 'lan.100', parent: 'lan', id: 100 }],
      },
      captures: [{ port: 'lan', direction: 'rx', file: file('first') }],
      badCaptures: [
        { port: 'wan', filter: 'udp port 99999', file: file('bad1') },
        { port: 'wan', filter: 'udp prot 7777', file: file('bad2') },
        { port: 'lan', filter: 'udp', file: file('bad3') },
        { port: 'nope', file: file('bad4') },
        { port: 'lan.100', file: file('bad5') },
        { port: 'wan', direction: 'sideways' as 'rx', file: file('bad6') },
      ],
      expectRx: input.length,
    });
    assert.deepEqual(r.captureErrors, [
      "filter 'udp port 99999': illegal port number 99999 > 65535",
      "filter 'udp prot 7777': can't parse filter expression: syntax error",
      'port lan has a capture running already (one per port)',
      "capture.port: no port named 'nope' (ports: lan, wan, lan.100)",
      'port lan.100 is a VLAN: capture on its parent with a filter, --port lan vlan 100',
      'capture.direction: expected rx, tx or both, found sideways',
    ]);
  });

  it('ends when the reader of its FIFO goes away, forwarding all the same, and the port then takes a new capture', async () => {
    const fifo = path.join(bench.dir, 'capture.fifo');
    await sh(['mkfifo', fifo]);
    // A reader that takes the pcapng header and the first packet, then leaves, as a killed
    // tshark would. Opened before the capture: a FIFO opens for writing only with a reader.
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const reader = new net.Socket({ fd, readable: true, writable: false });
    const readerGone = new Promise<number>((resolve) => {
      let got = Buffer.alloc(0);
      reader.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (firstPacketAt(got) === undefined) return;
        reader.destroy();
        resolve(got.length);
      });
    });
    const r = await runCaptureJob({
      start: { workers: WORKERS, ...SMALL, ports: ports() },
      flows: [udpFlow(7777), udpFlow(5353), udpFlow(7778)],
      captures: [{ port: 'lan', direction: 'rx', file: fifo }],
      expectRx: input.length,
      awaitEnd: true,
      restart: { port: 'lan', direction: 'rx', file: file('again') },
    });
    assert.ok((await readerGone) > 0, 'the reader got the header and a packet');
    assert.equal(r.captures[0]?.end, 'reader_gone');
    assert.equal(r.fastPackets, 12, 'the fast path forwarded every UDP frame');
    assert.equal(r.txPackets.wan, 12);
    assert.equal(r.restarted?.end, 'stopped', 'a new capture started on the port and stopped');
    // Its file is a valid, empty capture.
    assert.deepEqual(await tsharkFields(file('again'), ['frame.len']), []);
  });
});
