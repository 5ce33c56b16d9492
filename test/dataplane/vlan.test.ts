// Tier 2 for VLAN sub-interfaces (802.1Q, 802.1ad, QinQ): pcap in / pcap out through the
// real addon on net_pcap ports, inputs built by scapy and outputs decoded by scapy (Dot1Q,
// Dot1AD), never by the fast path's own parser.
import assert from 'node:assert/strict';

import type { FlowDirection, StartOptions, TunnelOptions, VlanOptions } from '../../lib/dataplane';
import { PcapBench, runJob } from '../helpers/dataplane';
import { layer, scapyBuild, scapyDissect, ScapyFrame } from '../helpers/scapy';

const HOST = '02:00:00:00:00:10';
const GW_LAN = '00:00:22:33:11:55';
const GW_WAN = '00:11:22:33:11:55';
const PEER = '02:00:00:00:00:22';
const OTHER = '02:00:00:00:00:99';
const LOCAL = '2001:db8:2::1';
const REMOTE = '2001:db8:2::2';
const WORKERS = { cpus: [1] };
const SMALL = { flowCapacity: 4096, mbufs: 4095 };

// lan carries 802.1Q VLANs 10 and 20; wan 802.1Q VLAN 100 and 802.1ad VLAN 300 with the
// 802.1Q VLAN 7 inside it (QinQ).
const VLANS: VlanOptions[] = [
  { name: 'lan.10', parent: 'lan', id: 10 },
  { name: 'lan.20', parent: 'lan', id: 20 },
  { name: 'wan.100', parent: 'wan', id: 100, pcp: 6 },
  // Listed before its parent: start() adds parents first.
  { name: 'wan.300.7', parent: 'wan.300', id: 7, pcp: 2 },
  { name: 'wan.300', parent: 'wan', id: 300, protocol: '802.1ad' },
];

function start(bench: PcapBench, inputs: { lan?: Buffer[]; wan?: Buffer[] }, extra: Partial<StartOptions> = {}): StartOptions {
  return {
    workers: WORKERS,
    ...SMALL,
    ports: [
      { name: 'lan', mac: GW_LAN, device: bench.device('lan', inputs.lan ?? []) },
      { name: 'wan', mac: GW_WAN, device: bench.device('wan', inputs.wan ?? []) },
    ],
    vlans: VLANS,
    ...extra,
  };
}

const udp = (dst: string, dport = 53) => `IP(src='192.168.0.10', dst='${dst}', ttl=64)/UDP(sport=5000, dport=${dport})/Raw(b'q'*20)`;
const toLan = (tags: string, l3: string, dst = GW_LAN) => `Ether(dst='${dst}', src='${HOST}')/${tags}${l3}`;
const toWan = (tags: string, l3: string) => `Ether(dst='${GW_WAN}', src='${PEER}')/${tags}${l3}`;
const flowOut = (inPort: string, dst: string, out: FlowDirection['out'], dport = 53): FlowDirection => ({
  in: inPort,
  proto: 'udp',
  src: '192.168.0.10',
  dst,
  sport: 5000,
  dport,
  out,
});

function fields(frame: ScapyFrame, name: string, nth = 0): Record<string, unknown> {
  return layer(frame, name, nth).fields;
}

/** Each tag of a frame as [scapy layer, VLAN id, PCP], outermost first. */
function tags(frame: ScapyFrame): [string, number, number][] {
  return frame.layers.filter((l) => l.name === 'Dot1Q' || l.name === 'Dot1AD').map((l) => [l.name, l.fields.vlan as number, l.fields.prio as number]);
}

describe('VLAN sub-interfaces through the addon (pcap in, pcap out)', function () {
  this.timeout(120_000);
  let bench: PcapBench;
  beforeEach(() => {
    bench = new PcapBench();
  });
  afterEach(() => bench.dispose());

  it('forwards 802.1Q to 802.1Q with the other VLAN id and the received PCP, tags untagged frames with the VLAN\'s PCP, and untags frames leaving by the port', async () => {
    const lan = await scapyBuild([
      toLan(`Dot1Q(vlan=10, prio=3)/`, udp('198.51.100.7')),
      toLan('', udp('198.51.100.8')),
      toLan(`Dot1Q(vlan=20, prio=5)/`, udp('198.51.100.9')),
    ]);
    const r = await runJob({
      start: start(bench, { lan }),
      flows: [
        { original: flowOut('lan.10', '198.51.100.7', { port: 'wan.100', mac: PEER }) },
        { original: flowOut('lan', '198.51.100.8', { port: 'wan.100', mac: PEER }) },
        { original: flowOut('lan.20', '198.51.100.9', { port: 'wan', mac: PEER }) },
      ],
      expectRx: 3,
    });
    const out = await scapyDissect(bench.sent('wan'));
    assert.equal(out.length, 3);
    assert.deepEqual(out.map(tags), [[['Dot1Q', 100, 3]], [['Dot1Q', 100, 6]], []]);
    for (const f of out) {
      assert.deepEqual([fields(f, 'Ether').dst, fields(f, 'Ether').src], [PEER, GW_WAN]);
      assert.equal(fields(f, 'IP').ttl, 63);
      assert.equal(fields(f, 'UDP').sport, 5000);
    }
    assert.equal(fields(out[0]!, 'Dot1Q').type, 0x0800);
    assert.equal(fields(out[2]!, 'Ether').type, 0x0800);
    assert.equal(r.stats.fastpath.packets, 3);
    // Flows and counters name the VLANs.
    assert.deepEqual(
      r.flows.map((f) => [f.original.in, 'port' in f.original.out ? f.original.out.port : null, f.original.packets]),
      [
        ['lan.10', 'wan.100', 1],
        ['lan', 'wan.100', 1],
        ['lan.20', 'wan', 1],
      ],
    );
    assert.equal(r.stats.ports['lan.10']?.rxPackets, 1);
    assert.equal(r.stats.ports['lan.20']?.rxPackets, 1);
    assert.equal(r.stats.ports['wan.100']?.txPackets, 2);
    assert.equal(r.stats.ports['wan.100']?.txBytes, 2 * (14 + 4 + 20 + 8 + 20));
    assert.equal(r.stats.ports.wan?.txPackets, 3);
    assert.deepEqual(
      r.vlans.map((v) => [v.name, v.parent, v.id, v.protocol, v.pcp, v.mac, v.mtu]),
      [
        ['lan.10', 'lan', 10, '802.1Q', 0, GW_LAN, 1500],
        ['lan.20', 'lan', 20, '802.1Q', 0, GW_LAN, 1500],
        ['wan.100', 'wan', 100, '802.1Q', 6, GW_WAN, 1500],
        ['wan.300', 'wan', 300, '802.1ad', 0, GW_WAN, 1500],
        ['wan.300.7', 'wan.300', 7, '802.1Q', 2, GW_WAN, 1500],
      ],
    );
  });

  it('pops and pushes QinQ (802.1ad outside, 802.1Q inside) both ways, keeping the received PCP on both tags', async () => {
    const wan = await scapyBuild([toWan(`Dot1AD(vlan=300, prio=4)/Dot1Q(vlan=7, prio=1)/`, udp('192.168.10.2', 60))]);
    const lan = await scapyBuild([toLan(`Dot1Q(vlan=10, prio=1)/`, udp('203.0.113.5', 61)), toLan('', udp('203.0.113.6', 62))]);
    const r = await runJob({
      start: start(bench, { lan, wan }),
      flows: [
        { original: flowOut('wan.300.7', '192.168.10.2', { port: 'lan.10', mac: HOST }, 60) },
        { original: flowOut('lan.10', '203.0.113.5', { port: 'wan.300.7', mac: PEER }, 61) },
        { original: flowOut('lan', '203.0.113.6', { port: 'wan.300.7', mac: PEER }, 62) },
      ],
      expectRx: 3,
    });
    const toHost = await scapyDissect(bench.sent('lan'));
    assert.deepEqual(toHost.map(tags), [[['Dot1Q', 10, 4]]]);
    assert.deepEqual([fields(toHost[0]!, 'Ether').dst, fields(toHost[0]!, 'Ether').type], [HOST, 0x8100]);
    assert.equal(fields(toHost[0]!, 'IP').ttl, 63);
    const toPeer = await scapyDissect(bench.sent('wan'));
    assert.deepEqual(toPeer.map(tags), [
      [
        ['Dot1AD', 300, 1],
        ['Dot1Q', 7, 1],
      ],
      [
        ['Dot1AD', 300, 2],
        ['Dot1Q', 7, 2],
      ],
    ]);
    for (const f of toPeer) {
      assert.equal(fields(f, 'Ether').type, 0x88a8);
      assert.equal(fields(f, 'Dot1Q').type, 0x0800);
      assert.equal(fields(f, 'IP').ttl, 63);
    }
    assert.equal(r.stats.fastpath.packets, 3);
    assert.equal(r.stats.ports['wan.300.7']?.rxPackets, 1);
    assert.equal(r.stats.ports['wan.300.7']?.txPackets, 2);
  });

  it('drops and counts frames of unknown VLAN ids and with more tags than configured, and frames to another host\'s MAC', async () => {
    const l3 = udp('198.51.100.7');
    const lan = await scapyBuild([
      toLan(`Dot1Q(vlan=99)/`, l3),
      toLan(`Dot1Q(vlan=10)/Dot1Q(vlan=5)/`, l3),
      toLan(`Dot1AD(vlan=10)/`, l3),
      toLan(`Dot1Q(vlan=10)/`, l3, OTHER),
    ]);
    const wan = await scapyBuild([toWan(`Dot1AD(vlan=300)/Dot1Q(vlan=8)/`, l3), toWan(`Dot1AD(vlan=301)/Dot1Q(vlan=7)/`, l3), toWan(`Dot1Q(vlan=300)/`, l3)]);
    const r = await runJob({
      start: start(bench, { lan, wan }),
      flows: [{ original: flowOut('lan.10', '198.51.100.7', { port: 'wan.100', mac: PEER }) }],
      expectRx: 7,
    });
    assert.equal(bench.sent('wan').length + bench.sent('lan').length, 0);
    assert.equal(r.stats.drops.reasons.unknown_vlan, 6);
    assert.equal(r.stats.drops.reasons.other_host, 1);
    assert.equal(r.stats.drops.packets, 7);
    assert.equal(r.stats.fastpath.packets, 0);
    assert.equal(r.stats.ports['lan.10']?.rxPackets, 1, 'the frame to another MAC reached its VLAN, and no more');
  });

  it('neither forwards nor crashes on tagged frames cut at every length', async () => {
    const full = await scapyBuild([
      toWan(`Dot1AD(vlan=300)/Dot1Q(vlan=7)/`, udp('192.168.10.2', 60)),
      toLan(`Dot1Q(vlan=10)/`, udp('203.0.113.5', 61)),
    ]);
    const [qinq, dot1q] = full as [Buffer, Buffer];
    const cuts = (f: Buffer) => Array.from({ length: f.length - 1 }, (_, i) => f.subarray(0, f.length - 1 - i));
    const wan = cuts(qinq);
    const lan = cuts(dot1q);
    const r = await runJob({
      start: start(bench, { lan, wan }),
      flows: [
        { original: flowOut('wan.300.7', '192.168.10.2', { port: 'lan.10', mac: HOST }, 60) },
        { original: flowOut('lan.10', '203.0.113.5', { port: 'wan.300.7', mac: PEER }, 61) },
      ],
      expectRx: wan.length + lan.length,
    });
    assert.equal(r.received, wan.length + lan.length);
    assert.equal(bench.sent('wan').length + bench.sent('lan').length, 0);
    assert.equal(r.stats.fastpath.packets, 0);
    // Every frame is accounted for: dropped (truncated, or too short to be any VLAN's) or
    // punted to a slow path that these ports do not have (dropped as no_slowpath).
    assert.equal(r.stats.drops.packets, wan.length + lan.length);
    assert.equal(r.stats.drops.reasons.unknown_vlan ?? 0, 0);
    assert.ok((r.stats.drops.reasons.truncated ?? 0) > 0);
  });

  it('punts a VLAN\'s packets untagged to its slow-path port and sends what the kernel sends out of it tagged by the parent', async () => {
    const lan = await scapyBuild([toLan(`Dot1Q(vlan=20, prio=3)/`, udp('198.51.100.7')), toLan(`Dot1Q(vlan=20)/`, `ARP(op=1, psrc='192.168.20.2', pdst='192.168.20.1')`)]);
    // What the kernel sends out of the TAP 'lan.20': untagged, as from a plain interface.
    const fromKernel = await scapyBuild([`Ether(dst='${HOST}', src='${GW_LAN}')/IP(src='198.51.100.7', dst='192.168.0.10', ttl=63)/UDP(sport=53, dport=5000)/Raw(b'a'*20)`]);
    const vlans = VLANS.map((v) => (v.name === 'lan.20' ? { ...v, slowpath: 'lan.20-tap', pcp: 5 } : v));
    const r = await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [
          { name: 'lan', mac: GW_LAN, device: bench.device('lan', lan) },
          { name: 'wan', mac: GW_WAN, device: bench.device('wan') },
          { name: 'lan.20-tap', device: bench.device('lan.20-tap', fromKernel), poll: false },
        ],
        vlans,
      },
      expectRx: 2,
      expectKernelRx: 1,
    });
    const punted = await scapyDissect(bench.sent('lan.20-tap'));
    assert.deepEqual(punted.map(tags), [[], []], 'the kernel gets the VLAN\'s frames untagged');
    assert.deepEqual(
      punted.map((f) => f.layers[1]?.name),
      ['IP', 'ARP'],
    );
    assert.equal(fields(punted[0]!, 'IP').ttl, 64, 'unmodified');
    assert.deepEqual([r.stats.slowpath.reasons.miss, r.stats.slowpath.reasons.non_ip], [1, 1]);
    const sent = await scapyDissect(bench.sent('lan'));
    assert.equal(sent.length, 1);
    assert.deepEqual(tags(sent[0]!), [['Dot1Q', 20, 5]], 'tagged with the VLAN\'s id and PCP');
    assert.deepEqual([fields(sent[0]!, 'Ether').dst, fields(sent[0]!, 'Dot1Q').type, fields(sent[0]!, 'UDP').dport], [HOST, 0x0800, 5000]);
    assert.equal(r.stats.kernel.rxPackets, 1);
    assert.equal(r.vlans.find((v) => v.name === 'lan.20')?.slowpath, 'lan.20-tap');
  });

  it('runs a 4in6 tunnel over a VLAN: encapsulates, then tags; pops the tag, then decapsulates', async () => {
    const TEL = `IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=bytes([4])), PadN(optdata=b'\\x00')])`;
    const inner = `IP(src='10.0.0.1', dst='192.168.0.10', ttl=60)/TCP(sport=80, dport=40000, flags='PA')/Raw(b'r'*32)`;
    const wan = await scapyBuild([toWan(`Dot1Q(vlan=100, prio=2)/IPv6(src='${REMOTE}', dst='${LOCAL}')/${TEL}/`, inner)]);
    const lan = await scapyBuild([toLan('', `IP(src='192.168.0.10', dst='10.0.0.1', ttl=64)/TCP(sport=40000, dport=80, flags='A')/Raw(b'z'*32)`)]);
    const tunnel: TunnelOptions = { name: 'tun0', local: LOCAL, remote: REMOTE, underlay: 'wan.100', nextHopMac: PEER };
    const r = await runJob({
      start: start(bench, { lan, wan }),
      tunnels: [tunnel],
      flows: [
        {
          original: { in: 'lan', proto: 'tcp', src: '192.168.0.10', dst: '10.0.0.1', sport: 40000, dport: 80, out: { tunnel: 'tun0' } },
          reply: { in: 'wan.100', tunnel: 'tun0', proto: 'tcp', src: '10.0.0.1', dst: '192.168.0.10', sport: 80, dport: 40000, out: { port: 'lan', mac: HOST } },
        },
      ],
      expectRx: 2,
    });
    const encapsulated = await scapyDissect(bench.sent('wan'));
    assert.equal(encapsulated.length, 1);
    const e = encapsulated[0]!;
    assert.deepEqual(
      e.layers.map((l) => l.name),
      ['Ether', 'Dot1Q', 'IPv6', 'IPv6ExtHdrDestOpt', 'IP', 'TCP', 'Raw'],
    );
    assert.deepEqual(tags(e), [['Dot1Q', 100, 6]], 'the VLAN\'s PCP on a frame that arrived untagged');
    assert.deepEqual([fields(e, 'Ether').dst, fields(e, 'Ether').src, fields(e, 'Dot1Q').type], [PEER, GW_WAN, 0x86dd]);
    assert.deepEqual([fields(e, 'IPv6').src, fields(e, 'IPv6').dst, fields(e, 'IP').ttl], [LOCAL, REMOTE, 63]);
    const decapsulated = await scapyDissect(bench.sent('lan'));
    assert.equal(decapsulated.length, 1);
    assert.deepEqual(
      decapsulated[0]!.layers.map((l) => l.name),
      ['Ether', 'IP', 'TCP', 'Raw'],
    );
    assert.equal(fields(decapsulated[0]!, 'IP').ttl, 59);
    assert.deepEqual([r.flows[0]?.original.packets, r.flows[0]?.reply?.packets, r.flows[0]?.reply?.in], [1, 1, 'wan.100']);
    // The tunnel's MTU is the VLAN's less the outer headers.
    assert.equal(r.tunnelMtus[0]?.effectiveMtu, 1500 - 48);
  });

  it('refuses VLANs that 802.1Q/802.1ad stacking or the parent do not allow, and lowers VLAN MTUs with their port\'s', async () => {
    const r = await runJob({
      start: start(bench, {}),
      expectRx: 0,
      portMtus: [
        { port: 'lan.10', mtu: 1000 },
        { port: 'wan', mtu: 1400 },
      ],
      badVlans: [
        { name: 'lan.0', parent: 'lan', id: 0 },
        { name: 'lan.4095', parent: 'lan', id: 4095 },
        { name: 'lan.10b', parent: 'lan', id: 10 },
        { name: 'lan.10', parent: 'lan', id: 11 },
        { name: 'lan.10.5', parent: 'lan.10', id: 5 },
        { name: 'wan.300.ad', parent: 'wan.300', id: 8, protocol: '802.1ad' },
        { name: 'wan.300.7.1', parent: 'wan.300.7', id: 1 },
        { name: 'lan.30', parent: 'lan', id: 30, mtu: 9000 },
        { name: 'lan.31', parent: 'lan', id: 31, pcp: 8 },
        { name: 'lan.32', parent: 'nope', id: 32 },
        { name: 'lan.10ad', parent: 'lan', id: 10, protocol: '802.1ad' },
      ],
    });
    const [v0, v4095, dupId, dupName, onQ, adOnAd, third, mtu, pcp, noParent, adSameId] = r.vlanErrors;
    assert.match(v0 ?? '', /id/);
    assert.match(v4095 ?? '', /id/);
    assert.match(dupId ?? '', /already/);
    assert.match(dupName ?? '', /exists already/);
    assert.match(onQ ?? '', /802\.1Q on an 802\.1ad VLAN/);
    assert.match(adOnAd ?? '', /802\.1Q on an 802\.1ad VLAN/);
    assert.match(third ?? '', /802\.1Q on an 802\.1ad VLAN/);
    assert.match(mtu ?? '', /MTU 9000 above/);
    assert.match(pcp ?? '', /pcp/);
    assert.match(noParent ?? '', /no port named 'nope'/);
    assert.equal(adSameId, null, 'an 802.1ad VLAN may have the id of an 802.1Q one');
    assert.deepEqual(
      r.vlans.map((v) => [v.name, v.mtu]),
      [
        ['lan.10', 1000],
        ['lan.20', 1500],
        ['wan.100', 1400],
        ['wan.300', 1400],
        ['wan.300.7', 1400],
        ['lan.10ad', 1500],
      ],
    );
  });

  it('removes a VLAN with its flows and the tunnels over it, and a port with its VLANs (QinQ ones included)', async () => {
    const tunnel: TunnelOptions = { name: 'tun0', local: LOCAL, remote: REMOTE, underlay: 'wan.300.7', nextHopMac: PEER };
    const r = await runJob({
      start: start(bench, {}),
      tunnels: [tunnel],
      flows: [
        { original: flowOut('lan.10', '198.51.100.7', { port: 'wan', mac: PEER }) },
        { original: flowOut('lan', '198.51.100.8', { port: 'lan.20', mac: HOST }) },
        { original: flowOut('lan', '198.51.100.9', { tunnel: 'tun0' }) },
        { original: flowOut('lan', '198.51.100.10', { port: 'wan', mac: PEER }) },
      ],
      expectRx: 0,
      removals: [{ vlan: 'lan.10' }, { port: 'wan' }],
    });
    assert.deepEqual(r.afterRemovals.ports, ['lan', 'lan.20']);
    assert.deepEqual(r.afterRemovals.vlans, ['lan.20']);
    // Flow 0 came in by lan.10; 2 left by a tunnel over wan.300.7; 3 left by wan.
    assert.deepEqual(r.afterRemovals.flows, [r.flowIds[1]]);
    assert.deepEqual(r.afterRemovals.tunnels, []);
  });
});
