// Tier 2: pcap in / pcap out through the real addon on DPDK virtual devices (net_pcap),
// flows installed through the TypeScript API. Inputs are built by scapy and outputs decoded
// by scapy and checked by tshark, so the fast path is never judged by its own parser.
import assert from 'node:assert/strict';

import type { FlowDirection, TunnelOptions } from '../../lib/dataplane';
import { JobResult, PcapBench, runJob, tsharkChecksums } from '../helpers/dataplane';
import { layer, scapyBuild, scapyDissect, ScapyFrame } from '../helpers/scapy';

const HOST = '02:00:00:00:00:10';
const GW_LAN = '00:00:22:33:11:55';
const GW_WAN = '00:11:22:33:11:55';
const PEER = '02:00:00:00:00:22';
const LOCAL = '2001:db8:2::1';
const REMOTE = '2001:db8:2::2';
const WORKERS = { cpus: [1] };
const SMALL = { flowCapacity: 4096, mbufs: 4095 };

const lanIp = (ip: string, l4: string) => `Ether(dst='${GW_LAN}', src='${HOST}')/${ip}/${l4}`;
const TEL = (limit: number) => `IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=bytes([${limit}])), PadN(optdata=b'\\x00')])`;
const fromPeer = (inner: string, encapLimit: number | null, tc = 0) =>
  `Ether(dst='${GW_WAN}', src='${PEER}')/IPv6(src='${REMOTE}', dst='${LOCAL}', tc=${tc})/` + (encapLimit === null ? '' : `${TEL(encapLimit)}/`) + inner;

function tunnel(encapLimit: number | 'none', extra: Partial<TunnelOptions> = {}): TunnelOptions {
  return { name: 'tun0', local: LOCAL, remote: REMOTE, encapLimit, underlay: 'wan', nextHopMac: PEER, ...extra };
}

// The reference connection, LAN host 192.168.0.10:40000 -> 10.0.0.1:80, through tun0.
const lanToTunnel: FlowDirection = { in: 'lan', proto: 'tcp', src: '192.168.0.10', dst: '10.0.0.1', sport: 40000, dport: 80, out: { tunnel: 'tun0' } };
const tunnelToLan: FlowDirection = { in: 'wan', tunnel: 'tun0', proto: 'tcp', src: '10.0.0.1', dst: '192.168.0.10', sport: 80, dport: 40000, out: { port: 'lan', mac: HOST } };

function fields(frame: ScapyFrame, name: string, nth = 0): Record<string, unknown> {
  return layer(frame, name, nth).fields;
}

async function assertChecksumsGood(pcap: string, expectPackets: number) {
  const status = await tsharkChecksums(pcap);
  assert.equal(status.length, expectPackets);
  status.forEach((s, i) => {
    for (const v of [...s.ip, ...s.udp, ...s.tcp]) assert.equal(v, 'Good', `packet ${i}: ${JSON.stringify(s)}`);
    assert.ok(s.ip.length + s.udp.length + s.tcp.length > 0, `packet ${i} has checksums to verify`);
  });
}

describe('pcap in, pcap out through the addon', function () {
  this.timeout(120_000);
  let bench: PcapBench;
  beforeEach(() => {
    bench = new PcapBench();
  });
  afterEach(() => bench.dispose());

  it('forwards IPv4 and IPv6 with TTL and hop limit decremented, next-hop MACs and valid checksums', async () => {
    const input = await scapyBuild([
      lanIp(`IP(src='192.168.0.10', dst='198.51.100.7', ttl=64, id=1)`, `UDP(sport=5000, dport=53)/Raw(b'q'*20)`),
      lanIp(`IP(src='192.168.0.10', dst='198.51.100.7', ttl=9, id=2)`, `UDP(sport=5000, dport=53)/Raw(b'q'*20)`),
      lanIp(`IPv6(src='2001:db8:1::10', dst='2001:db8:3::1', hlim=64)`, `TCP(sport=5001, dport=443, flags='A')/Raw(b'z'*30)`),
    ]);
    const r = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', input) }, { name: 'wan', mac: GW_WAN, device: bench.device('wan') }] },
      flows: [
        { original: { in: 'lan', proto: 'udp', src: '192.168.0.10', dst: '198.51.100.7', sport: 5000, dport: 53, out: { port: 'wan', mac: PEER } } },
        { original: { in: 'lan', proto: 'tcp', src: '2001:db8:1::10', dst: '2001:db8:3::1', sport: 5001, dport: 443, out: { port: 'wan', mac: PEER } } },
      ],
      expectRx: 3,
    });
    const out = await scapyDissect(bench.sent('wan'));
    assert.equal(out.length, 3);
    for (const f of out) assert.deepEqual([fields(f, 'Ether').dst, fields(f, 'Ether').src], [PEER, GW_WAN]);
    assert.deepEqual([fields(out[0]!, 'IP').ttl, fields(out[1]!, 'IP').ttl], [63, 8]);
    assert.equal(fields(out[2]!, 'IPv6').hlim, 63);
    await assertChecksumsGood(bench.output('wan'), 3);
    assert.equal(r.stats.fastpath.packets, 3);
    assert.deepEqual([r.flows[0]?.original.packets, r.flows[1]?.original.packets], [2, 1]);
    assert.equal(r.stats.ports.wan?.txPackets, 3);
  });

  it('moves the flows of one family to a next hop whose MAC changed in place: the packets carry the new MAC, other next hops and the other family keep theirs', async () => {
    const NEW_PEER = '02:00:00:00:0b:01';
    const OTHER = '02:00:00:00:0b:02';
    const udp = (dport: number) => lanIp(`IP(src='192.168.0.10', dst='198.51.100.7', ttl=64)`, `UDP(sport=5000, dport=${dport})/Raw(b'q'*20)`);
    const udp6 = lanIp(`IPv6(src='2001:db8:1::10', dst='2001:db8:3::1', hlim=64)`, `UDP(sport=5000, dport=4)/Raw(b'q'*20)`);
    const input = await scapyBuild([udp(1), udp(2), udp(3), udp6]);
    const flow = (dport: number, mac: string, v6 = false) => ({
      original: { in: 'lan', proto: 'udp' as const, src: v6 ? '2001:db8:1::10' : '192.168.0.10', dst: v6 ? '2001:db8:3::1' : '198.51.100.7', sport: 5000, dport, out: { port: 'wan', mac } },
    });
    const r = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', input) }, { name: 'wan', mac: GW_WAN, device: bench.device('wan') }] },
      // Flow 3 already goes to the new MAC through an adjacency of its own; flow 4 is IPv6 to the old MAC.
      flows: [flow(1, PEER), flow(2, OTHER), flow(3, NEW_PEER), flow(4, PEER, true)],
      nextHopRewrites: [
        { port: 'wan', family: 4, from: PEER, to: NEW_PEER },
        { port: 'lan', family: 4, from: OTHER, to: PEER },
        { port: 'wan', family: 4, from: '02:00:00:00:0e:0e', to: PEER },
      ],
      expectRx: 4,
    });
    assert.deepEqual(r.nextHopsRewritten, [1, 0, 0], 'one IPv4 adjacency on wan had PEER; none on lan had OTHER; none had the unknown MAC');
    const out = await scapyDissect(bench.sent('wan'));
    assert.deepEqual(
      out.map((f) => [fields(f, 'UDP').dport, fields(f, 'Ether').dst, fields(f, 'Ether').src]),
      [
        [1, NEW_PEER, GW_WAN],
        [2, OTHER, GW_WAN],
        [3, NEW_PEER, GW_WAN],
        [4, PEER, GW_WAN],
      ],
    );
    assert.deepEqual(
      r.flows.map((f) => ('port' in f.original.out ? f.original.out.mac : null)),
      [NEW_PEER, OTHER, NEW_PEER, PEER],
      'the flows read back with the MAC they are sent to',
    );
    assert.equal(r.stats.fastpath.packets, 4);
  });

  for (const encapLimit of [4, null]) {
    it(`decapsulates IPv4 in IPv6 ${encapLimit === null ? 'without' : 'with'} the encap-limit option and forwards it to the LAN`, async () => {
      const inner = `IP(src='10.0.0.1', dst='192.168.0.10', ttl=60, tos=0x2a)/TCP(sport=80, dport=40000, flags='PA')/Raw(b'r'*64)`;
      const input = await scapyBuild([fromPeer(inner, encapLimit), fromPeer(inner, encapLimit, 0x03)]);
      const r = await runJob({
        start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan') }, { name: 'wan', mac: GW_WAN, device: bench.device('wan', input) }] },
        tunnels: [tunnel(encapLimit ?? 'none')],
        flows: [{ original: lanToTunnel, reply: tunnelToLan }],
        expectRx: 2,
      });
      const out = await scapyDissect(bench.sent('lan'));
      assert.equal(out.length, 2);
      const [plain, marked] = out as [ScapyFrame, ScapyFrame];
      assert.deepEqual([fields(plain, 'Ether').dst, fields(plain, 'Ether').src, fields(plain, 'Ether').type], [HOST, GW_LAN, 0x0800]);
      assert.deepEqual(plain.layers.map((l) => l.name), ['Ether', 'IP', 'TCP', 'Raw']);
      assert.equal(fields(plain, 'IP').ttl, 59);
      assert.equal(fields(plain, 'IP').tos, 0x2a, 'ECT(0) under a not-CE outer header stays');
      assert.equal(fields(marked, 'IP').tos, 0x2b, 'ECT(0) under an outer CE becomes CE (RFC 6040)');
      await assertChecksumsGood(bench.output('lan'), 2);
      assert.equal(r.flows[0]?.reply?.packets, 2);
      assert.equal(r.flows[0]?.reply?.bytes, 2 * (20 + 20 + 64));
    });
  }

  for (const encapLimit of [4, 'none'] as const) {
    it(`encapsulates LAN traffic into the tunnel ${encapLimit === 'none' ? 'without' : 'with'} the encap-limit option`, async () => {
      const input = await scapyBuild([lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', ttl=64, tos=0xb9)`, `TCP(sport=40000, dport=80, flags='A')/Raw(b'l'*100)`)]);
      await runJob({
        start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', input) }, { name: 'wan', mac: GW_WAN, device: bench.device('wan') }] },
        tunnels: [tunnel(encapLimit, { hopLimit: 64, tclass: 'inherit' })],
        flows: [{ original: lanToTunnel, reply: tunnelToLan }],
        expectRx: 1,
      });
      const [out] = await scapyDissect(bench.sent('wan'));
      assert.ok(out);
      assert.deepEqual([fields(out, 'Ether').dst, fields(out, 'Ether').src, fields(out, 'Ether').type], [PEER, GW_WAN, 0x86dd]);
      const ip6 = fields(out, 'IPv6');
      assert.deepEqual([ip6.src, ip6.dst, ip6.hlim, ip6.tc, ip6.fl], [LOCAL, REMOTE, 64, 0xb9, 0]);
      if (encapLimit === 'none') {
        assert.deepEqual(out.layers.map((l) => l.name), ['Ether', 'IPv6', 'IP', 'TCP', 'Raw']);
        assert.deepEqual([ip6.nh, ip6.plen], [4, 140]);
      } else {
        assert.deepEqual(out.layers.map((l) => l.name), ['Ether', 'IPv6', 'IPv6ExtHdrDestOpt', 'IP', 'TCP', 'Raw']);
        assert.deepEqual([ip6.nh, ip6.plen], [60, 148]);
        assert.equal(out.bytes.subarray(54, 62).toString('hex'), '0400040104010100');
      }
      assert.equal(fields(out, 'IP').ttl, 63);
      await assertChecksumsGood(bench.output('wan'), 1);
    });
  }

  describe('exceptions', () => {
    let r: JobResult;
    let input: Buffer[];
    let ex: PcapBench;
    const tcp = (flags: string, ip = `IP(src='192.168.0.10', dst='10.0.0.1')`) => lanIp(ip, `TCP(sport=40000, dport=80, flags='${flags}')`);
    const EXCEPTIONS: [string, string][] = [
      ['miss', lanIp(`IP(src='192.168.0.99', dst='10.0.0.1')`, `UDP(sport=1, dport=2)`)],
      ['ttl_expired', tcp('A', `IP(src='192.168.0.10', dst='10.0.0.1', ttl=1)`)],
      ['ip_options', tcp('A', `IP(src='192.168.0.10', dst='10.0.0.1', options=[IPOption_RR()])`)],
      ['fragment', tcp('A', `IP(src='192.168.0.10', dst='10.0.0.1', flags='MF')`)],
      ['l4proto', lanIp(`IP(src='192.168.0.10', dst='10.0.0.1')`, `ICMP()`)],
      ['non_ip', `Ether(dst='${GW_LAN}', src='${HOST}')/ARP(op=2, psrc='192.168.0.10', pdst='192.168.0.2')`],
      ['multicast', `Ether(dst='ff:ff:ff:ff:ff:ff', src='${HOST}')/ARP(psrc='192.168.0.10', pdst='192.168.0.2')`],
      ['ipv6_ext', lanIp(`IPv6(src='2001:db8:1::10', dst='2001:db8:3::1')/IPv6ExtHdrHopByHop()`, `UDP()`)],
      ['too_big', tcp('A') + `/Raw(b'b'*1460)`],
    ];
    const MALFORMED: [string, string][] = [
      ['truncated', lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', len=900)`, `UDP(sport=1, dport=2)`)],
      ['bad_header', lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', version=5)`, `UDP(sport=1, dport=2)`)],
      ['bad_checksum', tcp('A', `IP(src='192.168.0.10', dst='10.0.0.1', chksum=0x1234)`)],
      ['other_host', `Ether(dst='02:00:00:00:00:99', src='${HOST}')/IP(src='192.168.0.10', dst='10.0.0.1')/TCP(sport=40000, dport=80, flags='A')`],
    ];

    before(async () => {
      ex = new PcapBench();
      input = await scapyBuild([...EXCEPTIONS.map(([, e]) => e), ...MALFORMED.map(([, e]) => e)]);
      r = await runJob({
        start: {
          workers: WORKERS,
          ...SMALL,
          ports: [
            { name: 'lan', mac: GW_LAN, device: ex.device('lan', input), slowpath: 'lan-tap' },
            { name: 'wan', mac: GW_WAN, device: ex.device('wan') },
            { name: 'lan-tap', device: ex.device('lan-tap'), poll: false },
          ],
        },
        tunnels: [tunnel(4)],
        flows: [{ original: lanToTunnel, reply: tunnelToLan }],
        expectRx: input.length,
      });
    });
    after(() => ex.dispose());

    it('hands every exception to the slow-path port unchanged, in order', () => {
      const punted = ex.sent('lan-tap');
      assert.equal(punted.length, EXCEPTIONS.length);
      punted.forEach((p, i) => assert.equal(p.toString("hex"), (input[i] as Buffer).toString("hex"), `exception ${EXCEPTIONS[i]?.[0]} arrived unchanged`));
      assert.equal(ex.sent('wan').length, 0, 'nothing of them was forwarded');
    });

    it('counts each exception by its reason', () => {
      const want: Record<string, number> = {};
      for (const [reason] of EXCEPTIONS) want[reason] = (want[reason] ?? 0) + 1;
      for (const [reason, n] of Object.entries(r.stats.slowpath.reasons)) assert.equal(n, want[reason] ?? 0, `punts for ${reason}`);
      assert.equal(r.stats.slowpath.packets, EXCEPTIONS.length);
    });

    it('drops malformed packets, counted by reason, and sends them nowhere', () => {
      for (const [reason] of MALFORMED) assert.equal(r.stats.drops.reasons[reason], 1, `drops for ${reason}`);
      assert.equal(r.stats.drops.packets, MALFORMED.length);
      assert.equal(r.stats.ports['lan-tap']?.txPackets, EXCEPTIONS.length);
    });

    it('forwards nothing and leaves the flow alone', () => {
      assert.deepEqual([r.flows[0]?.teardown, r.flows[0]?.closing], [false, false]);
      assert.equal(r.stats.fastpath.packets, 0);
    });
  });

  it('forwards FIN and keeps forwarding the closing flow; a SYN on it goes to the kernel and tears it down; reaping says it was closing', async () => {
    const tcp = (flags: string, payload = 0) => lanIp(`IP(src='192.168.0.10', dst='10.0.0.1')`, `TCP(sport=40000, dport=80, flags='${flags}')` + (payload ? `/Raw(b'd'*${payload})` : ''));
    const input = await scapyBuild([tcp('PA', 10), tcp('FA'), tcp('A'), tcp('S'), tcp('A')]);
    const r = await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [
          { name: 'lan', mac: GW_LAN, device: bench.device('lan', input), slowpath: 'lan-tap' },
          { name: 'wan', mac: GW_WAN, device: bench.device('wan') },
          { name: 'lan-tap', device: bench.device('lan-tap'), poll: false },
        ],
      },
      tunnels: [tunnel(4)],
      flows: [{ original: lanToTunnel, reply: tunnelToLan }],
      expectRx: input.length,
      reap: true,
    });
    const out = await scapyDissect(bench.sent('wan'));
    assert.deepEqual(out.map((f) => fields(f, 'TCP').flags), [0x18, 0x11, 0x10], 'PA, FA and A forwarded through the tunnel');
    const punted = bench.sent('lan-tap');
    assert.deepEqual(punted.map((p) => p.toString('hex')), [input[3], input[4]].map((p) => (p as Buffer).toString('hex')), 'the SYN and what follows it, unchanged');
    assert.deepEqual(r.stats.slowpath.reasons.teardown, 2);
    assert.deepEqual([r.flows[0]?.closing, r.flows[0]?.teardown], [true, true]);
    assert.equal(r.reaped.length, 1);
    assert.deepEqual([r.reaped[0]?.reason, r.reaped[0]?.flow.closing, r.reaped[0]?.flow.id], ['teardown', true, r.flowIds[0]]);
  });

  it('masquerades LAN traffic into the tunnel and translates the replies back, with valid checksums', async () => {
    const lanIn = await scapyBuild([
      lanIp(`IP(src='192.168.0.10', dst='10.0.0.1', ttl=64)`, `TCP(sport=40000, dport=80, flags='PA')/Raw(b'q'*40)`),
      lanIp(`IPv6(src='2001:db8:1::10', dst='2001:db8:3::1', hlim=64)`, `UDP(sport=5000, dport=53)/Raw(b'6'*20)`),
    ]);
    const wanIn = await scapyBuild([fromPeer(`IP(src='10.0.0.1', dst='192.168.100.1', ttl=60)/TCP(sport=80, dport=50000, flags='A')/Raw(b'r'*30)`, 4)]);
    const r = await runJob({
      start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', mac: GW_LAN, device: bench.device('lan', lanIn) }, { name: 'wan', mac: GW_WAN, device: bench.device('wan', wanIn) }] },
      tunnels: [tunnel(4)],
      flows: [
        {
          original: { ...lanToTunnel, nat: { src: '192.168.100.1', sport: 50000 } },
          reply: { ...tunnelToLan, dst: '192.168.100.1', dport: 50000, nat: { dst: '192.168.0.10', dport: 40000 } },
        },
        { original: { in: 'lan', proto: 'udp', src: '2001:db8:1::10', dst: '2001:db8:3::1', sport: 5000, dport: 53, out: { port: 'wan', mac: PEER }, nat: { src: '2001:db8:ff::1', sport: 33000 } } },
      ],
      expectRx: 3,
    });
    const toWan = await scapyDissect(bench.sent('wan'));
    assert.equal(toWan.length, 2);
    const [encapped, v6] = toWan as [ScapyFrame, ScapyFrame];
    assert.deepEqual([fields(encapped, 'IPv6').src, fields(encapped, 'IPv6').dst], [LOCAL, REMOTE]);
    assert.deepEqual([fields(encapped, 'IP').src, fields(encapped, 'IP').dst, fields(encapped, 'TCP').sport, fields(encapped, 'TCP').dport], ['192.168.100.1', '10.0.0.1', 50000, 80]);
    assert.deepEqual([fields(v6, 'IPv6').src, fields(v6, 'UDP').sport, fields(v6, 'IPv6').dst, fields(v6, 'UDP').dport], ['2001:db8:ff::1', 33000, '2001:db8:3::1', 53]);
    const [back] = await scapyDissect(bench.sent('lan'));
    assert.ok(back);
    assert.deepEqual([fields(back, 'IP').src, fields(back, 'IP').dst, fields(back, 'IP').ttl, fields(back, 'TCP').sport, fields(back, 'TCP').dport], ['10.0.0.1', '192.168.0.10', 59, 80, 40000]);
    await assertChecksumsGood(bench.output('wan'), 2);
    await assertChecksumsGood(bench.output('lan'), 1);
    assert.equal(r.stats.fastpath.packets, 3);
    assert.deepEqual(r.flows[0]?.original.nat, { src: '192.168.100.1', sport: 50000 });
    assert.deepEqual(r.flows[0]?.reply?.nat, { dst: '192.168.0.10', dport: 40000 });
    assert.deepEqual(r.flows[1]?.original.nat, { src: '2001:db8:ff::1', sport: 33000 });
  });

  for (const [nat, message] of [
    [{ src: '224.0.0.5' }, /original\.nat\.src: expected a unicast address, found 224\.0\.0\.5/],
    [{ dst: '2001:db8::1' }, /original\.nat\.dst: expected an IPv4 address as the flow's, found 2001:db8::1/],
    [{ sport: 0 }, /original\.nat\.sport: expected an integer 1\.\.65535, found 0/],
  ] as const) {
    it(`refuses a NAT of ${JSON.stringify(nat)}, naming the parameter`, async () => {
      const job = runJob({
        start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', device: bench.device('lan') }, { name: 'wan', device: bench.device('wan') }] },
        tunnels: [tunnel(4)],
        flows: [{ original: { ...lanToTunnel, nat } }],
        expectRx: 0,
      });
      await assert.rejects(job, message);
    });
  }

  for (const endpoints of [{ local: '::' }, { remote: '::' }, { remote: 'ff02::1' }, { local: '::1' }]) {
    it(`refuses a tunnel with the endpoint ${JSON.stringify(endpoints)}: nothing may be decapsulated from it`, async () => {
      const job = runJob({
        start: { workers: WORKERS, ...SMALL, ports: [{ name: 'lan', device: bench.device('lan') }, { name: 'wan', device: bench.device('wan') }] },
        tunnels: [tunnel(4, endpoints)],
        flows: [],
        expectRx: 0,
      });
      await assert.rejects(job, /tunnel endpoints must be unicast addresses/);
    });
  }

  describe('outer IPv6 fragments of tunnel packets (RFC 2473 section 7)', () => {
    let r: JobResult;
    let fb: PcapBench;
    let inner: Buffer[];
    let input: Buffer[];
    // Tunnel packets too large for a 1280-byte underlay hop, fragmented as RFC 8200 has it:
    // the fragment header right after the IPv6 header, the tunnel's destination options (when
    // present) in the fragmentable part (scapy's fragment6); and the last one as Linux's IPv6
    // stack fragments it (ip6_find_1stfragopt() counts a destination options header before
    // any routing header as unfragmentable): the options in each fragment, the fragment header
    // after them.
    const INNER = [
      `IP(src='10.0.0.1', dst='192.168.0.10', id=1)/UDP(sport=53, dport=5000)/Raw(b'a'*1400)`,
      `IP(src='10.0.0.1', dst='192.168.0.10', id=2)/UDP(sport=53, dport=5000)/Raw(b'b'*3000)`,
      `IP(src='10.0.0.1', dst='192.168.0.10', id=3, flags='DF')/TCP(sport=80, dport=40000, flags='A')/Raw(b'c'*1300)`,
      `IP(src='10.0.0.1', dst='192.168.0.10', id=4)/UDP(sport=53, dport=5001)/Raw(b'd'*3000)`,
    ];
    const fragment = (inner: string, id: number, nth: number, o: { src?: string; option?: boolean } = {}) =>
      `Ether(dst='${GW_WAN}', src='${PEER}')/fragment6(IPv6(src='${o.src ?? REMOTE}', dst='${LOCAL}')/IPv6ExtHdrFragment(id=${id})/${o.option === false ? '' : `${TEL(4)}/`}${inner}, 1280)[${nth}]`;
    const linuxFragment = (inner: string, id: number, nth: number) =>
      `Ether(dst='${GW_WAN}', src='${PEER}')/fragment6(IPv6(src='${REMOTE}', dst='${LOCAL}')/${TEL(4)}/IPv6ExtHdrFragment(id=${id})/${inner}, 1280)[${nth}]`;
    const FRAMES = [
      fragment(INNER[0] as string, 11, 0),
      fragment(INNER[0] as string, 11, 1),
      // Out of order, last first.
      fragment(INNER[1] as string, 12, 2),
      fragment(INNER[1] as string, 12, 0),
      fragment(INNER[1] as string, 12, 1),
      fragment(INNER[2] as string, 13, 0, { option: false }),
      fragment(INNER[2] as string, 13, 1, { option: false }),
      // From no tunnel's remote: for the kernel, as they are.
      fragment(INNER[0] as string, 14, 0, { src: '2001:db8:9::9' }),
      fragment(INNER[0] as string, 14, 1, { src: '2001:db8:9::9' }),
      // Hostile: the first fragment twice (overlap), and a fragment without payload.
      fragment(INNER[0] as string, 15, 0),
      fragment(INNER[0] as string, 15, 0),
      `Ether(dst='${GW_WAN}', src='${PEER}')/IPv6(src='${REMOTE}', dst='${LOCAL}')/IPv6ExtHdrFragment(id=16, m=1)`,
      // Linux's layout, out of order.
      linuxFragment(INNER[3] as string, 17, 1),
      linuxFragment(INNER[3] as string, 17, 2),
      linuxFragment(INNER[3] as string, 17, 0),
    ];
    const TUNNEL_FRAGMENTS = 13;

    before(async function () {
      this.timeout(120_000);
      fb = new PcapBench();
      input = await scapyBuild(FRAMES);
      inner = await scapyBuild(INNER);
      r = await runJob({
        start: {
          workers: WORKERS,
          ...SMALL,
          ports: [
            { name: 'wan', mac: GW_WAN, device: fb.device('wan', input), slowpath: 'wan-tap' },
            { name: 'wan-tap', device: fb.device('wan-tap'), poll: false },
            { name: 'tun0', device: fb.device('tun0'), poll: false, l3: true },
          ],
        },
        tunnels: [tunnel(4, { slowpath: 'tun0' })],
        expectRx: input.length,
      });
    });
    after(() => fb?.dispose());

    it('reassembles them, in any order, and hands each inner IPv4 packet decapsulated to the tunnel\'s TUN', () => {
      const sent = fb.sent('tun0');
      assert.equal(sent.length, INNER.length);
      sent.forEach((p, i) => assert.equal(p.toString('hex'), (inner[i] as Buffer).toString('hex'), `inner packet ${i}`));
      assert.equal(r.stats.slowpath.reasons.tunnel_fragment, TUNNEL_FRAGMENTS);
    });

    it('hands fragments of no tunnel to the underlay\'s slow path unchanged', () => {
      const sent = fb.sent('wan-tap');
      assert.equal(sent.length, 2);
      sent.forEach((p, i) => assert.ok(p.equals(input[7 + i] as Buffer), `fragment ${i} unchanged`));
      assert.equal(r.stats.slowpath.reasons.fragment, 2);
    });

    it('drops overlapping and empty fragments, counted, and delivers nothing of them', () => {
      assert.equal(r.stats.drops.reasons.reassembly, 3);
      assert.equal(r.stats.drops.packets, 3, JSON.stringify(r.stats.drops));
    });
  });

  it('lowers a tunnel\'s MTU to its underlay port\'s less the outer headers, further to the path MTU a packet too big reports, and raises it when that expires', async () => {
    const TELQ = TEL(4);
    const ptb = `Ether(dst='${GW_WAN}', src='${PEER}')/IPv6(src='2001:db8:5::1', dst='${LOCAL}')/ICMPv6PacketTooBig(mtu=1300)/` +
      `Raw(bytes(IPv6(src='${LOCAL}', dst='${REMOTE}')/${TELQ}/IP(src='192.168.100.1', dst='10.0.0.1', flags='DF')/TCP(sport=40000, dport=80, flags='A')/Raw(b'x'*1400))[:1232])`;
    const input = await scapyBuild([ptb]);
    const r = await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [
          { name: 'wan', mac: GW_WAN, device: bench.device('wan', input) },
          { name: 'tun0', device: bench.device('tun0'), poll: false, l3: true },
        ],
      },
      tunnels: [tunnel(4, { slowpath: 'tun0' })],
      portMtus: [{ port: 'wan', mtu: 1400 }],
      expectRx: 1,
      pathMtu: true,
      // Linux's net.ipv6.route.mtu_expires is 600 s; 2 s here.
      pathMtuExpiry: { waitMs: 2500, expiresSeconds: 2 },
    });
    assert.deepEqual(r.tunnelsBefore, [{ name: 'tun0', mtu: 1452, pathMtu: null, effectiveMtu: 1400 - 48 }], 'the underlay port MTU, lowered under the tunnel, bounds it');
    assert.deepEqual(r.pathMtuChanges, [{ name: 'tun0', mtu: 1452, pathMtu: 1300, effectiveMtu: 1300 - 48 }]);
    assert.deepEqual(r.tunnelMtus, r.pathMtuChanges);
    const [icmp] = bench.sent('tun0');
    assert.ok(icmp !== undefined, 'the ICMPv4 error went into the TUN');
    assert.deepEqual([icmp[20], icmp[21], icmp.readUInt16BE(26)], [3, 4, 1280], 'fragmentation needed, MTU floored at 1280 as Linux does');
    assert.deepEqual(r.pathMtuExpired, [{ name: 'tun0', mtu: 1452, pathMtu: null, effectiveMtu: 1400 - 48 }], 'the learnt path MTU expired');
  });

  it('decapsulates tunnel traffic it has no flow for into the tunnel\'s TUN port as raw IPv4', async () => {
    const inner = `IP(src='10.0.0.1', dst='192.168.0.10')/ICMP(type=8, id=7, seq=1)/Raw(b'ping')`;
    const input = await scapyBuild([fromPeer(inner, 4), fromPeer(inner, null)]);
    const [innerBytes] = await scapyBuild([inner]);
    await runJob({
      start: {
        workers: WORKERS,
        ...SMALL,
        ports: [
          { name: 'wan', mac: GW_WAN, device: bench.device('wan', input) },
          { name: 'tun0', device: bench.device('tun0'), poll: false, l3: true },
        ],
      },
      tunnels: [tunnel(4, { slowpath: 'tun0' })],
      expectRx: 2,
    });
    const sent = bench.sent('tun0');
    assert.equal(sent.length, 2);
    for (const p of sent) assert.ok(p.equals(innerBytes as Buffer), `got ${p.toString('hex')}`);
  });
});
