// Tier 2: the packet trace through the real addon on net_pcap ports. Each packet's record
// must say what the fast path did with it (the same thing its counters and the output
// pcaps show), with the bytes as received and as sent; inputs are built by scapy.
import assert from 'node:assert/strict';

import type { FlowDirection, TunnelOptions } from '../../lib/dataplane';
import type { JobTraceRecord } from '../helpers/dataplane-child';
import { JobResult, PcapBench, runJob } from '../helpers/dataplane';
import { scapyBuild } from '../helpers/scapy';

const HOST = '02:00:00:00:00:10';
const GW_LAN = '00:00:22:33:11:55';
const GW_WAN = '00:11:22:33:11:55';
const PEER = '02:00:00:00:00:22';
const LOCAL = '2001:db8:2::1';
const REMOTE = '2001:db8:2::2';
const WORKERS = { cpus: [1] };
const SMALL = { flowCapacity: 4096, mbufs: 4095 };

const lanIp = (ip: string, l4: string) => `Ether(dst='${GW_LAN}', src='${HOST}')/${ip}/${l4}`;
const wanIp = (ip: string, l4: string) => `Ether(dst='${GW_WAN}', src='${PEER}')/${ip}/${l4}`;
const TEL = `IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=bytes([4])), PadN(optdata=b'\\x00')])`;
const fromPeer = (inner: string) => `Ether(dst='${GW_WAN}', src='${PEER}')/IPv6(src='${REMOTE}', dst='${LOCAL}')/${TEL}/${inner}`;

const tunnel: TunnelOptions = { name: 'tun0', local: LOCAL, remote: REMOTE, encapLimit: 4, underlay: 'wan', nextHopMac: PEER };
const lanToTunnel: FlowDirection = { in: 'lan', proto: 'tcp', src: '192.168.0.10', dst: '10.0.0.1', sport: 40000, dport: 80, out: { tunnel: 'tun0' } };
const tunnelToLan: FlowDirection = { in: 'wan', tunnel: 'tun0', proto: 'tcp', src: '10.0.0.1', dst: '192.168.0.10', sport: 80, dport: 40000, out: { port: 'lan', mac: HOST } };
const udpForward: FlowDirection = { in: 'lan', proto: 'udp', src: '192.168.0.10', dst: '198.51.100.7', sport: 5000, dport: 53, out: { port: 'wan', mac: PEER } };

const udp53 = lanIp(`IP(src='192.168.0.10', dst='198.51.100.7', ttl=64)`, `UDP(sport=5000, dport=53)/Raw(b'q'*20)`);

/** The UDP destination port of an untagged IPv4 frame's bytes (hex), or null. */
function udpDport(hex: string): number | null {
  const b = Buffer.from(hex, 'hex');
  if (b.length < 38 || b.readUInt16BE(12) !== 0x0800 || b[23] !== 17) return null;
  return b.readUInt16BE(14 + (b[14]! & 0xf) * 4 + 2);
}

describe('packet trace through the addon', function () {
  this.timeout(120_000);
  let bench: PcapBench;
  beforeEach(() => {
    bench = new PcapBench();
  });
  afterEach(() => bench.dispose());

  describe('one packet of each outcome', () => {
    let r: JobResult;
    let input: Buffer[];
    let records: JobTraceRecord[];
    let ex: PcapBench;
    const LAN = {
      forward: udp53,
      miss: lanIp(`IP(src='192.168.0.99', dst='10.0.0.1')`, `UDP(sport=1, dport=2)`),
      ttl: lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', ttl=1)`, `TCP(sport=40000, dport=80, flags='A')`),
      malformed: lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', version=5)`, `UDP(sport=1, dport=2)`),
      encap: lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', ttl=64)`, `TCP(sport=40000, dport=80, flags='A')/Raw(b'e'*10)`),
    };
    const DECAP = fromPeer(`IP(src='10.0.0.1', dst='192.168.0.10', ttl=60)/TCP(sport=80, dport=40000, flags='A')/Raw(b'd'*10)`);

    before(async () => {
      ex = new PcapBench();
      input = await scapyBuild([...Object.values(LAN), DECAP]);
      r = await runJob({
        start: {
          workers: WORKERS,
          ...SMALL,
          ports: [
            { name: 'lan', mac: GW_LAN, device: ex.device('lan', input.slice(0, 5)), slowpath: 'lan-tap' },
            { name: 'wan', mac: GW_WAN, device: ex.device('wan', input.slice(5)) },
            { name: 'lan-tap', device: ex.device('lan-tap'), poll: false },
          ],
        },
        tunnels: [tunnel],
        flows: [{ original: lanToTunnel, reply: tunnelToLan }, { original: udpForward }],
        trace: { count: 6 },
        expectRx: input.length,
      });
      records = r.trace?.records ?? [];
    });
    after(() => ex.dispose());

    const recordOf = (frame: Buffer | undefined): JobTraceRecord => {
      const hex = frame!.toString('hex');
      const found = records.find((x) => hex.startsWith(x.rx));
      assert.ok(found, `a record of ${hex.slice(0, 60)}...`);
      return found;
    };

    it('traces every packet once, numbered in the order they were taken, and then turns itself off', () => {
      assert.equal(records.length, 6);
      assert.deepEqual(records.map((x) => x.seq).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5]);
      assert.deepEqual([r.trace?.running, r.trace?.remaining, r.trace?.lost], [false, 0, 0]);
      for (const x of records) assert.equal(x.worker, 0);
    });

    it('records a packet of an installed flow as forwarded, with the flow id, the output port and the rewritten bytes', () => {
      const x = recordOf(input[0]);
      assert.deepEqual([x.decision, x.reason, x.inPort, x.outPort], ['forward', null, 'lan', 'wan']);
      assert.equal(x.flow, r.flowIds[1]);
      assert.equal(x.flowDirection, 'original');
      assert.equal(x.wireLength, input[0]!.length);
      const sent = Buffer.from(x.tx ?? '', 'hex');
      assert.equal(sent.subarray(0, 6).toString('hex'), PEER.replace(/:/g, ''), 'to the next hop');
      assert.deepEqual([sent[22], Buffer.from(x.rx, 'hex')[22]], [63, 64], 'TTL decremented in what was sent, not in what was received');
      assert.equal(sent.toString('hex'), ex.sent('wan')[0]?.toString('hex'), 'the bytes that left the port');
    });

    it('records a miss as punted to the input port\'s TAP with reason miss and no flow', () => {
      const x = recordOf(input[1]);
      assert.deepEqual([x.decision, x.reason, x.flow, x.outPort], ['punt', 'miss', null, 'lan-tap']);
    });

    it('records a TTL-expired packet as punted with reason ttl_expired', () => {
      const x = recordOf(input[2]);
      assert.deepEqual([x.decision, x.reason, x.outPort], ['punt', 'ttl_expired', 'lan-tap']);
    });

    it('records a malformed packet as dropped with reason bad_header, sent nowhere', () => {
      const x = recordOf(input[3]);
      assert.deepEqual([x.decision, x.reason, x.outPort, x.tx], ['drop', 'bad_header', null, null]);
    });

    it('records a packet into the tunnel as encapsulated, sent as IPv6 on the underlay', () => {
      const x = recordOf(input[4]);
      assert.deepEqual([x.decision, x.outPort, x.flow, x.flowDirection], ['encap', 'wan', r.flowIds[0], 'original']);
      const sent = Buffer.from(x.tx ?? '', 'hex');
      assert.equal(sent.readUInt16BE(12), 0x86dd);
      assert.equal(sent[14 + 6], 60, 'next header: the destination options with the encapsulation limit');
      assert.equal(x.txLength, input[4]!.length + 48);
    });

    it('records a tunnelled packet from the peer as decapsulated, with the reply direction of its flow', () => {
      const x = recordOf(input[5]);
      assert.deepEqual([x.decision, x.inPort, x.outPort, x.flow, x.flowDirection], ['decap', 'wan', 'lan', r.flowIds[0], 'reply']);
      const sent = Buffer.from(x.tx ?? '', 'hex');
      assert.equal(sent.readUInt16BE(12), 0x0800, 'the inner IPv4 packet, behind a new Ethernet header');
      assert.equal(sent[22], 59, 'its TTL decremented');
    });
  });

  it('traces exactly the count asked for and forwards the rest untraced', async () => {
    const input = await scapyBuild(Array.from({ length: 10 }, () => udp53));
    const r = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', input) }, { name: 'wan', mac: GW_WAN, device: bench.device('wan') }] },
      flows: [{ original: udpForward }],
      trace: { count: 4 },
      expectRx: input.length,
    });
    assert.equal(r.trace?.records.length, 4);
    assert.deepEqual([r.trace?.running, r.trace?.remaining], [false, 0]);
    assert.equal(bench.sent('wan').length, 10);
    assert.equal(r.stats.fastpath.packets, 10);
  });

  it('selects by input port and by a tcpdump filter, and takes no budget for the others', async () => {
    const udp = (dport: number) => wanIp(`IP(src='198.51.100.7', dst='192.168.0.10')`, `UDP(sport=7, dport=${dport})`);
    const lanInput = await scapyBuild([udp53, udp53]);
    const wanInput = await scapyBuild([udp(53), udp(7777), udp(7777), udp(9), udp(7777)]);
    const r = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', lanInput) }, { name: 'wan', mac: GW_WAN, device: bench.device('wan', wanInput) }] },
      flows: [{ original: udpForward }],
      trace: { count: 10, port: 'wan', filter: 'udp dst port 7777' },
      expectRx: lanInput.length + wanInput.length,
    });
    const records = r.trace?.records ?? [];
    assert.equal(records.length, 3);
    for (const x of records) {
      assert.equal(x.inPort, 'wan');
      assert.equal(udpDport(x.rx), 7777);
    }
    assert.deepEqual([r.trace?.running, r.trace?.remaining], [true, 7]);
  });

  it('traces what the kernel sends out of a TAP as the slow-path thread forwarding it to the port', async () => {
    const fromKernel = await scapyBuild([`Ether(dst='${HOST}', src='${GW_LAN}')/IP(src='10.0.0.1', dst='192.168.0.10')/UDP(sport=53, dport=5000)`]);
    const r = await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [
          { name: 'lan', mac: GW_LAN, device: bench.device('lan'), slowpath: 'lan-tap' },
          { name: 'lan-tap', device: bench.device('lan-tap', fromKernel), poll: false },
        ],
      },
      trace: { count: 1 },
      expectRx: 0,
      expectKernelRx: 1,
    });
    const records = r.trace?.records ?? [];
    assert.equal(records.length, 1);
    const x = records[0]!;
    assert.deepEqual([x.worker, x.inPort, x.decision, x.outPort, x.flow], ['slowpath', 'lan-tap', 'forward', 'lan', null]);
    assert.equal(x.rx, fromKernel[0]!.toString('hex'));
    assert.equal(x.tx, bench.sent('lan')[0]?.toString('hex'));
  });

  it('traces what the kernel routes into a TUN as encapsulated by the slow-path thread, and a packet of the wrong family as dropped', async () => {
    const fromKernel = await scapyBuild([
      `IP(src='192.168.100.1', dst='10.0.0.1', ttl=64)/UDP(sport=5000, dport=53)`,
      `IPv6(src='2001:db8:1::1', dst='2001:db8:3::1')/UDP(sport=5000, dport=53)`,
    ]);
    const r = await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [
          // With a TAP: worker 0 sends the kernel's packets only on ports that have one.
          { name: 'wan', mac: GW_WAN, device: bench.device('wan'), slowpath: 'wan-tap' },
          { name: 'wan-tap', device: bench.device('wan-tap'), poll: false },
          { name: 'tun0', device: bench.device('tun0', fromKernel), poll: false, l3: true },
        ],
      },
      tunnels: [{ ...tunnel, slowpath: 'tun0' }],
      trace: { count: 2, port: 'tun0' },
      expectRx: 0,
      expectKernelRx: 2,
    });
    const records = r.trace?.records ?? [];
    assert.equal(records.length, 2);
    const [encap, wrong] = [records.find((x) => x.rx === fromKernel[0]!.toString('hex')), records.find((x) => x.rx === fromKernel[1]!.toString('hex'))];
    assert.deepEqual([encap?.worker, encap?.inPort, encap?.rxLink, encap?.decision, encap?.outPort, encap?.txLink], ['slowpath', 'tun0', 'ip', 'encap', 'wan', 'ethernet']);
    assert.equal(encap?.tx, bench.sent('wan')[0]?.toString('hex'), 'the frame that left the underlay');
    assert.deepEqual([wrong?.decision, wrong?.reason, wrong?.outPort, wrong?.tx], ['drop', 'tun_wrong_family', null, null]);
  });

  it('traces by VLAN: the sub-interface as input port, the filter on the untagged frame, the bytes as received with their tag', async () => {
    const tagged = (vid: number, dport: number) => `Ether(dst='${GW_LAN}', src='${HOST}')/Dot1Q(vlan=${vid})/IP(src='192.168.0.10', dst='198.51.100.7')/UDP(sport=5000, dport=${dport})`;
    const input = await scapyBuild([tagged(10, 53), tagged(20, 53), tagged(20, 54), tagged(99, 53)]);
    const r = await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', input) }],
        vlans: [
          { name: 'lan.10', parent: 'lan', id: 10 },
          { name: 'lan.20', parent: 'lan', id: 20 },
        ],
      },
      trace: { count: 10, port: 'lan.20', filter: 'udp dst port 53' },
      expectRx: input.length,
    });
    const records = r.trace?.records ?? [];
    assert.equal(records.length, 1);
    assert.deepEqual([records[0]?.inPort, records[0]?.rx], ['lan.20', input[1]!.toString('hex')]);
    assert.deepEqual([records[0]?.decision, records[0]?.reason, records[0]?.puntReason], ['drop', 'no_slowpath', 'miss']);
    // The frame of an unknown VLAN is the parent's, dropped before it has a sub-interface.
    const all = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan2', input) }], vlans: [{ name: 'lan.10', parent: 'lan', id: 10 }] },
      trace: { count: 10, port: 'lan' },
      expectRx: input.length,
    });
    const unknown = all.trace?.records.filter((x) => x.decision === 'drop' && x.reason === 'unknown_vlan') ?? [];
    assert.equal(unknown.length, 3, 'VLANs 20, 20 and 99 have no sub-interface here');
    for (const x of unknown) assert.equal(x.inPort, 'lan');
  });

  it("refuses a filter libpcap cannot compile, with libpcap's message", async () => {
    const r = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan') }] },
      trace: { filter: 'udp and and' },
      expectRx: 0,
      timeoutMs: 100,
    });
    assert.equal(r.traceError?.code, 'ERR_FLOWGATE_INVALID_ARGUMENT');
    assert.match(r.traceError?.message ?? '', /^filter 'udp and and': .*syntax error/);
  });
});
