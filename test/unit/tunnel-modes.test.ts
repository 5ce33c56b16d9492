// Tier 1: every tunnel mode through the fast path's burst processing (the test-only exports,
// no EAL): ip4ip6 and ip6ip6 (RFC 2473, with and without the encapsulation limit option),
// ipip (RFC 2003) and sit (RFC 4213). Input frames are built by scapy and outputs decoded by
// scapy, so that neither side is the project's own packet code.
import assert from 'node:assert/strict';

import { native, NativeFlowSpec, NativeTunnelMode, NativeTunnelParams } from '../../lib/native';
import { parseIp, parseMac } from '../../lib/net/addr';
import { layer, scapyBuild, scapyChecksums, scapyDissect, ScapyFrame } from '../helpers/scapy';

const testing = native().testing;

// Ports: 0 LAN, 1 underlay, 2 LAN's slow path (a TAP), 3 underlay's slow path, 4 and 5 TUNs.
const LAN = 0;
const WAN = 1;
const LAN_SLOW = 2;
const WAN_SLOW = 3;
const TUN = 4;
const TUN2 = 5;
const HOST_MAC = '02:00:00:00:00:10';
const PEER_MAC = '02:00:00:00:00:22';
const GW_LAN_MAC = '00:00:22:33:11:55';
const GW_WAN_MAC = '00:11:22:33:11:55';
const PORTS = [
  { id: LAN, mac: parseMac(GW_LAN_MAC), mtu: 1500, slowpath: LAN_SLOW },
  { id: WAN, mac: parseMac(GW_WAN_MAC), mtu: 1500, slowpath: WAN_SLOW },
  { id: LAN_SLOW, mtu: 1500 },
  { id: WAN_SLOW, mtu: 1500 },
  { id: TUN, mtu: 1500, l3: true },
  { id: TUN2, mtu: 1500, l3: true },
];

interface Mode {
  /** The test's name for it. */
  name: string;
  mode: NativeTunnelMode;
  outer: 4 | 6;
  inner: 4 | 6;
  encapLimit: number | null;
}
const MODES: Mode[] = [
  { name: 'ip4ip6', mode: 'ip4ip6', outer: 6, inner: 4, encapLimit: 4 },
  { name: 'ip6ip6', mode: 'ip6ip6', outer: 6, inner: 6, encapLimit: 4 },
  { name: 'ip6ip6 encaplimit none', mode: 'ip6ip6', outer: 6, inner: 6, encapLimit: null },
  { name: 'ipip', mode: 'ipip', outer: 4, inner: 4, encapLimit: null },
  { name: 'sit', mode: 'sit', outer: 4, inner: 6, encapLimit: null },
];

const ENDPOINTS = {
  4: { local: '198.51.100.1', remote: '198.51.100.2', stranger: '198.51.100.99' },
  6: { local: '2001:db8:2::1', remote: '2001:db8:2::2', stranger: '2001:db8:2::99' },
} as const;
const HOSTS = {
  4: { lan: '192.168.0.10', far: '10.0.0.1' },
  6: { lan: '2001:db8:1::10', far: '2001:db8:3::1' },
} as const;

function overhead(m: Mode): number {
  return m.outer === 4 ? 20 : 40 + (m.encapLimit === null ? 0 : 8);
}

function tunnel(m: Mode, over: Partial<NativeTunnelParams & { id: number }> = {}): NativeTunnelParams & { id: number } {
  return {
    id: 0,
    mode: m.mode,
    local: parseIp(ENDPOINTS[m.outer].local).bytes,
    remote: parseIp(ENDPOINTS[m.outer].remote).bytes,
    encapLimit: m.encapLimit,
    hopLimit: 64,
    tclass: 0,
    flowLabel: 0,
    flowLabelHash: false,
    mtu: 1500 - overhead(m),
    port: WAN,
    dstMac: parseMac(PEER_MAC),
    srcMac: parseMac(GW_WAN_MAC),
    slowpathPort: null,
    ...over,
  };
}

const encapFlow = (m: Mode, tunnelId = 0): NativeFlowSpec => ({
  inPort: LAN, l3: m.inner, l4: 6, src: parseIp(HOSTS[m.inner].lan).bytes, dst: parseIp(HOSTS[m.inner].far).bytes,
  sport: 40000, dport: 80, action: 'encap', tunnel: tunnelId,
});
const decapFlow = (m: Mode, tunnelId = 0): NativeFlowSpec => ({
  inPort: WAN, l3: m.inner, l4: 6, src: parseIp(HOSTS[m.inner].far).bytes, dst: parseIp(HOSTS[m.inner].lan).bytes,
  sport: 80, dport: 40000, action: 'decap', tunnel: tunnelId, outPort: LAN, dstMac: parseMac(HOST_MAC), srcMac: parseMac(GW_LAN_MAC),
});

/** scapy: the inner packet of a flow direction, with its TTL or hop limit and TOS or traffic class. */
function innerExpr(m: Mode, dir: 'out' | 'back', o: { ttl?: number; tos?: number; df?: boolean; payload?: number } = {}): string {
  const h = HOSTS[m.inner];
  const [src, dst, sport, dport] = dir === 'out' ? [h.lan, h.far, 40000, 80] : [h.far, h.lan, 80, 40000];
  const ip = m.inner === 4
    ? `IP(src='${src}', dst='${dst}', ttl=${o.ttl ?? 64}, tos=${o.tos ?? 0}, id=7${o.df === false ? '' : ", flags='DF'"})`
    : `IPv6(src='${src}', dst='${dst}', hlim=${o.ttl ?? 64}, tc=${o.tos ?? 0})`;
  return `${ip}/TCP(sport=${sport}, dport=${dport}, flags='A')/Raw(b'x' * ${o.payload ?? 20})`;
}

/** scapy: the inner packet inside the mode's outer headers, from `src` (default the remote) to the local address. */
function tunnelledExpr(m: Mode, inner: string, o: { tos?: number; src?: string; dst?: string; ttl?: number } = {}): string {
  const e = ENDPOINTS[m.outer];
  const src = o.src ?? e.remote;
  const dst = o.dst ?? e.local;
  const next = m.inner === 4 ? 4 : 41;
  let outer: string;
  if (m.outer === 4) outer = `IP(src='${src}', dst='${dst}', tos=${o.tos ?? 0}, ttl=${o.ttl ?? 64}, flags='DF', proto=${next})`;
  else if (m.encapLimit === null) outer = `IPv6(src='${src}', dst='${dst}', tc=${o.tos ?? 0}, hlim=${o.ttl ?? 64}, nh=${next})`;
  else outer = `IPv6(src='${src}', dst='${dst}', tc=${o.tos ?? 0}, hlim=${o.ttl ?? 64}, nh=60)/Raw(bytes([${next}, 0, 4, 1, ${m.encapLimit}, 1, 1, 0]))`;
  return `Ether(dst='${GW_WAN_MAC}', src='${PEER_MAC}')/${outer}/${inner}`;
}

const lanExpr = (m: Mode, o: Parameters<typeof innerExpr>[2] = {}) => `Ether(dst='${GW_LAN_MAC}', src='${HOST_MAC}')/${innerExpr(m, 'out', o)}`;

function process(setup: Parameters<typeof testing.process>[0], packets: { port: number; frame: Buffer }[]) {
  return testing.process(setup, packets);
}

function one(setup: Parameters<typeof testing.process>[0], port: number, frame: Buffer) {
  const r = process(setup, [{ port, frame }]).results[0];
  assert.ok(r);
  return r;
}

const num = (l: { fields: Record<string, unknown> }, f: string) => Number(l.fields[f]);

/** Every IPv4/TCP checksum of the frames is what scapy computes. */
async function assertChecksums(frames: Buffer[]): Promise<void> {
  const sums = await scapyChecksums(frames);
  sums.forEach((list, i) => {
    assert.ok(list.length > 0, `frame ${i} has checksums`);
    for (const s of list) assert.equal(s.found.toString(16), s.computed.toString(16), `frame ${i}: ${s.layer} checksum`);
  });
}

/** The outer and inner IP layers of a decoded tunnelled frame. */
function outerInner(f: ScapyFrame, m: Mode) {
  const outer = m.outer === 4 ? layer(f, 'IP') : layer(f, 'IPv6');
  const inner = m.inner === 4 ? layer(f, 'IP', m.outer === 4 ? 1 : 0) : layer(f, 'IPv6', m.outer === 6 ? 1 : 0);
  return { outer, inner };
}

describe('tunnel modes in the fast path (ip4ip6, ip6ip6, ipip, sit)', function () {
  // scapy builds and decodes: an interpreter start each, seconds on a loaded machine.
  this.timeout(120_000);

  for (const m of MODES) {
    describe(m.name, () => {
      it('parses the tunnelled packet into its inner flow key, with the mode and the outer addresses (ip6ip6: their fold)', async () => {
        const [frame] = await scapyBuild([tunnelledExpr(m, innerExpr(m, 'back'))]);
        const r = testing.parse(frame as Buffer, WAN, { mac: parseMac(GW_WAN_MAC) });
        assert.deepEqual([r.verdict, r.key.tunnelMode, r.key.l3, r.meta.outerLen, r.meta.l3Off], ['ok', m.mode, m.inner, overhead(m), 14 + overhead(m)]);
        if (m.mode === 'ip6ip6') {
          assert.equal(r.key.outerSrc, undefined);
          assert.equal(r.key.outerFold?.length, 8);
        } else {
          assert.deepEqual([r.key.outerSrc, r.key.outerDst], [parseIp(ENDPOINTS[m.outer].remote).bytes, parseIp(ENDPOINTS[m.outer].local).bytes]);
        }
      });

      it('encapsulates as Linux writes the outer headers, the inner TTL or hop limit less one, checksums valid', async () => {
        const [input] = await scapyBuild([lanExpr(m, { ttl: 64, tos: 0x28 | 0x01, payload: 100 })]);
        const r = one({ ports: PORTS, tunnels: [tunnel(m)], flows: [{ orig: encapFlow(m) }] }, LAN, input as Buffer);
        assert.deepEqual([r.reason, r.port], ['forward', WAN]);
        const out = r.frame as Buffer;
        const innerLength = (input as Buffer).length - 14;
        assert.equal(out.length, 14 + overhead(m) + innerLength);
        const [f] = await scapyDissect([out]);
        assert.ok(f);
        const eth = layer(f, 'Ether');
        assert.deepEqual([eth.fields.dst, eth.fields.src], [PEER_MAC, GW_WAN_MAC]);
        const { outer, inner } = outerInner(f, m);
        const next = m.inner === 4 ? 4 : 41;
        if (m.outer === 4) {
          // iptunnel_xmit(): version 4, IHL 5, DF (pmtudisc), TTL 64, TOS 0 with the inner ECN.
          assert.deepEqual(
            [outer.fields.src, outer.fields.dst, num(outer, 'proto'), num(outer, 'ttl'), num(outer, 'tos'), num(outer, 'flags'), num(outer, 'frag'), num(outer, 'ihl'), num(outer, 'len'), num(outer, 'id')],
            [ENDPOINTS[4].local, ENDPOINTS[4].remote, next, 64, 0x01, 2, 0, 5, 20 + innerLength, 0],
          );
        } else {
          assert.deepEqual(
            [outer.fields.src, outer.fields.dst, num(outer, 'hlim'), num(outer, 'tc'), num(outer, 'fl'), num(outer, 'plen')],
            [ENDPOINTS[6].local, ENDPOINTS[6].remote, 64, 0x01, 0, overhead(m) - 40 + innerLength],
          );
          if (m.encapLimit === null) assert.equal(num(outer, 'nh'), next);
          else {
            assert.equal(num(outer, 'nh'), 60);
            // Byte for byte Linux's init_tel_txopt(): the option, then PadN of one zero byte.
            assert.equal(out.subarray(54, 62).toString('hex'), Buffer.from([next, 0, 4, 1, m.encapLimit, 1, 1, 0]).toString('hex'));
          }
        }
        assert.equal(num(inner, m.inner === 4 ? 'ttl' : 'hlim'), 63);
        assert.equal(num(layer(f, 'TCP'), 'sport'), 40000);
        await assertChecksums([out]);
      });

      it('decapsulates and forwards the inner packet with its TTL or hop limit less one', async () => {
        const [input] = await scapyBuild([tunnelledExpr(m, innerExpr(m, 'back', { ttl: 63 }))]);
        const r = one({ ports: PORTS, tunnels: [tunnel(m)], flows: [{ orig: decapFlow(m) }] }, WAN, input as Buffer);
        assert.deepEqual([r.reason, r.port], ['forward', LAN]);
        const out = r.frame as Buffer;
        assert.equal(out.length, (input as Buffer).length - overhead(m));
        const [f] = await scapyDissect([out]);
        assert.ok(f);
        assert.deepEqual(f.layers.map((l) => l.name).slice(0, 3), ['Ether', m.inner === 4 ? 'IP' : 'IPv6', 'TCP']);
        const eth = layer(f, 'Ether');
        assert.deepEqual([eth.fields.dst, eth.fields.src, num(eth, 'type')], [HOST_MAC, GW_LAN_MAC, m.inner === 4 ? 0x0800 : 0x86dd]);
        const inner = layer(f, m.inner === 4 ? 'IP' : 'IPv6');
        assert.equal(num(inner, m.inner === 4 ? 'ttl' : 'hlim'), 62);
        await assertChecksums([out]);
      });

      it('follows RFC 6040 at the exit: outer CE marks an ECT inner packet CE and drops a not-ECT one; outer ECT(1) makes ECT(0) ECT(1)', async () => {
        const setup = { ports: PORTS, tunnels: [tunnel(m)], flows: [{ orig: decapFlow(m) }] };
        const frames = await scapyBuild([
          tunnelledExpr(m, innerExpr(m, 'back', { tos: 0x28 | 0x02 }), { tos: 0x03 }),
          tunnelledExpr(m, innerExpr(m, 'back', { tos: 0 }), { tos: 0x03 }),
          tunnelledExpr(m, innerExpr(m, 'back', { tos: 0x28 | 0x02 }), { tos: 0x01 }),
        ]);
        const [ce, notEct, ect1] = frames.map((frame) => one(setup, WAN, frame));
        assert.deepEqual([notEct?.port, notEct?.reason], [null, 'ecn']);
        const decoded = await scapyDissect([ce?.frame as Buffer, ect1?.frame as Buffer]);
        const field = m.inner === 4 ? 'tos' : 'tc';
        const name = m.inner === 4 ? 'IP' : 'IPv6';
        assert.deepEqual(decoded.map((f) => num(layer(f, name), field)), [0x28 | 0x03, 0x28 | 0x01]);
        await assertChecksums([ce?.frame as Buffer, ect1?.frame as Buffer]);
      });

      it('copies the inner ECN at the entry (CE as ECT(0)), the inner TOS/traffic class with tclass inherit, the inner TTL with hoplimit inherit', async () => {
        const [input] = await scapyBuild([lanExpr(m, { ttl: 30, tos: 0xb8 | 0x03 })]);
        const fixed = one({ ports: PORTS, tunnels: [tunnel(m, { tclass: 0x20 })], flows: [{ orig: encapFlow(m) }] }, LAN, input as Buffer);
        const inherit = one({ ports: PORTS, tunnels: [tunnel(m, { tclass: null, hopLimit: 0 })], flows: [{ orig: encapFlow(m) }] }, LAN, input as Buffer);
        const [a, b] = await scapyDissect([fixed.frame as Buffer, inherit.frame as Buffer]);
        assert.ok(a && b);
        const tos = (f: ScapyFrame) => num(outerInner(f, m).outer, m.outer === 4 ? 'tos' : 'tc');
        const ttl = (f: ScapyFrame) => num(outerInner(f, m).outer, m.outer === 4 ? 'ttl' : 'hlim');
        assert.deepEqual([tos(a), ttl(a)], [0x20 | 0x02, 64]);
        assert.deepEqual([tos(b), ttl(b)], [0xb8 | 0x02, 29]);
        await assertChecksums([fixed.frame as Buffer, inherit.frame as Buffer]);
      });

      it('does not decapsulate a packet from another remote or to another local address: it goes to the underlay\'s slow path as it came', async () => {
        const e = ENDPOINTS[m.outer];
        const frames = await scapyBuild([
          tunnelledExpr(m, innerExpr(m, 'back'), { src: e.stranger }),
          tunnelledExpr(m, innerExpr(m, 'back'), { dst: e.stranger }),
        ]);
        for (const frame of frames) {
          const r = one({ ports: PORTS, tunnels: [tunnel(m)], flows: [{ orig: decapFlow(m) }] }, WAN, frame);
          assert.deepEqual([r.reason, r.port], ['miss', WAN_SLOW]);
          assert.ok((r.frame as Buffer).equals(frame));
        }
      });

      it('punts a miss decapsulated into the tunnel\'s TUN: the inner packet exactly, ECN applied', async () => {
        const [input] = await scapyBuild([tunnelledExpr(m, innerExpr(m, 'back', { tos: 0x02 }), { tos: 0x03 })]);
        const r = one({ ports: PORTS, tunnels: [tunnel(m, { slowpathPort: TUN })] }, WAN, input as Buffer);
        assert.deepEqual([r.reason, r.port], ['miss', TUN]);
        const out = r.frame as Buffer;
        assert.equal(out.length, (input as Buffer).length - 14 - overhead(m));
        assert.equal(out[0]! >> 4, m.inner);
        const [f] = await scapyDissect([Buffer.concat([Buffer.from(`${'00'.repeat(12)}${m.inner === 4 ? '0800' : '86dd'}`, 'hex'), out])]);
        assert.ok(f);
        assert.equal(num(layer(f, m.inner === 4 ? 'IP' : 'IPv6'), m.inner === 4 ? 'tos' : 'tc'), 0x03, 'CE from the outer header');
      });

      it('sends a packet larger than the tunnel MTU (underlay MTU less the outer headers) to the slow path unchanged', async () => {
        const mtu = 1500 - overhead(m);
        const headers = m.inner === 4 ? 40 : 60;
        const [fits, over] = await scapyBuild([lanExpr(m, { payload: mtu - headers }), lanExpr(m, { payload: mtu - headers + 1 })]);
        const setup = { ports: PORTS, tunnels: [tunnel(m)], flows: [{ orig: encapFlow(m) }] };
        assert.equal(one(setup, LAN, fits as Buffer).reason, 'forward');
        const r = one(setup, LAN, over as Buffer);
        assert.deepEqual([r.reason, r.port], ['too_big', LAN_SLOW]);
        assert.ok((r.frame as Buffer).equals(over as Buffer));
      });

      it('never forwards the tunnelled frame cut short at any length, nor crashes on it', async () => {
        const [whole] = await scapyBuild([tunnelledExpr(m, innerExpr(m, 'back', { payload: 4 }))]);
        const frame = whole as Buffer;
        const setup = { ports: PORTS, tunnels: [tunnel(m, { slowpathPort: TUN })], flows: [{ orig: decapFlow(m) }] };
        const packets = [];
        for (let len = 1; len < frame.length; len++) packets.push({ port: WAN, frame: frame.subarray(0, len) });
        const r = process(setup, packets);
        r.results.forEach((res, i) => assert.notEqual(res.port, LAN, `cut to ${i + 1} bytes: forwarded`));
        assert.equal(r.stats.fastPackets, 0);
        assert.equal(one(setup, WAN, frame).port, LAN, 'whole, it is forwarded');
      });
    });
  }

  describe('over an IPv4 underlay', () => {
    const ipip = MODES.find((m) => m.mode === 'ipip') as Mode;
    const sit = MODES.find((m) => m.mode === 'sit') as Mode;

    it('sets DF on every packet with pmtudisc (identification 0), copies the inner DF without it (identification sequential when clear)', async () => {
      const [df, noDf] = await scapyBuild([lanExpr(ipip, { df: true }), lanExpr(ipip, { df: false })]);
      const run = (pmtudisc: boolean, frame: Buffer) =>
        process({ ports: PORTS, tunnels: [tunnel(ipip, { pmtudisc })], flows: [{ orig: encapFlow(ipip) }] }, [{ port: LAN, frame }, { port: LAN, frame }]).results.map((r) => r.frame as Buffer);
      const outs = [...run(true, noDf as Buffer), ...run(false, df as Buffer), ...run(false, noDf as Buffer)];
      const decoded = await scapyDissect(outs);
      const outer = decoded.map((f) => layer(f, 'IP'));
      assert.deepEqual(outer.slice(0, 4).map((l) => [num(l, 'flags'), num(l, 'id')]), [[2, 0], [2, 0], [2, 0], [2, 0]]);
      assert.deepEqual(outer.slice(4).map((l) => num(l, 'flags')), [0, 0]);
      assert.equal(num(outer[5]!, 'id'), (num(outer[4]!, 'id') + 1) & 0xffff, 'sequential identification without DF');
      await assertChecksums(outs);
    });

    it('sit without pmtudisc sends DF clear (an IPv6 inner packet has no DF to copy)', async () => {
      const [input] = await scapyBuild([lanExpr(sit)]);
      const r = one({ ports: PORTS, tunnels: [tunnel(sit, { pmtudisc: false })], flows: [{ orig: encapFlow(sit) }] }, LAN, input as Buffer);
      const [f] = await scapyDissect([r.frame as Buffer]);
      assert.ok(f);
      assert.equal(num(layer(f, 'IP'), 'flags'), 0);
      await assertChecksums([r.frame as Buffer]);
    });

    it('decapsulates a packet whose outer TTL is 1: it is for this host, not forwarded (ip_local_deliver())', async () => {
      const [input] = await scapyBuild([tunnelledExpr(ipip, innerExpr(ipip, 'back'), { ttl: 1 })]);
      const r = one({ ports: PORTS, tunnels: [tunnel(ipip)], flows: [{ orig: decapFlow(ipip) }] }, WAN, input as Buffer);
      assert.deepEqual([r.reason, r.port], ['forward', LAN]);
    });

    it('drops a tunnelled packet with a wrong outer header checksum, as ip_rcv_core() does', async () => {
      const [input] = await scapyBuild([tunnelledExpr(ipip, innerExpr(ipip, 'back'))]);
      const bad = Buffer.from(input as Buffer);
      bad.writeUInt16BE(bad.readUInt16BE(14 + 10) ^ 0x0101, 14 + 10);
      const r = one({ ports: PORTS, tunnels: [tunnel(ipip)], flows: [{ orig: decapFlow(ipip) }] }, WAN, bad);
      assert.deepEqual([r.reason, r.port], ['bad_checksum', null]);
    });
  });

  describe('several tunnels on one underlay', () => {
    it('keeps ipip and sit between the same two addresses apart, and ip4ip6 and ip6ip6 too: each flow by its own tunnel, each miss into its own TUN', async () => {
      for (const [a, b] of [['ipip', 'sit'], ['ip4ip6', 'ip6ip6']] as const) {
        const ma = MODES.find((m) => m.mode === a) as Mode;
        const mb = MODES.find((m) => m.mode === b) as Mode;
        const tunnels = [tunnel(ma, { id: 0, slowpathPort: TUN }), tunnel(mb, { id: 1, slowpathPort: TUN2 })];
        const frames = await scapyBuild([tunnelledExpr(ma, innerExpr(ma, 'back')), tunnelledExpr(mb, innerExpr(mb, 'back'))]);
        const flows = process({ ports: PORTS, tunnels, flows: [{ orig: decapFlow(ma, 0) }, { orig: decapFlow(mb, 1) }] }, frames.map((frame) => ({ port: WAN, frame })));
        assert.deepEqual(flows.results.map((r) => r.port), [LAN, LAN], `${a} and ${b} flows`);
        assert.deepEqual(flows.flows.map((f) => f.orig.packets), [1, 1], `${a} and ${b}: each flow took its own packet`);
        const misses = process({ ports: PORTS, tunnels }, frames.map((frame) => ({ port: WAN, frame })));
        assert.deepEqual(misses.results.map((r) => r.port), [TUN, TUN2], `${a} and ${b} misses`);
      }
    });
  });

  describe('ICMP errors about tunnel packets', () => {
    const ip6ip6 = MODES.find((m) => m.name === 'ip6ip6') as Mode;
    const ptbSource = '2001:db8:5::1';
    const quotedInner6 = `IPv6(src='2001:db8:1::10', dst='2001:db8:3::1', hlim=63)/TCP(sport=40000, dport=80, flags='A', seq=1234)/Raw(b'x'*1400)`;
    const TEL6 = `IPv6ExtHdrDestOpt(nh=41, options=[HBHOptUnknown(otype=4, optdata=bytes([4])), PadN(optdata=b'\\x00')])`;
    const ptb6 = (mtu: number) =>
      `Ether(dst='${GW_WAN_MAC}', src='${PEER_MAC}')/IPv6(src='${ptbSource}', dst='${ENDPOINTS[6].local}')/ICMPv6PacketTooBig(mtu=${mtu})/` +
      `Raw(bytes(IPv6(src='${ENDPOINTS[6].local}', dst='${ENDPOINTS[6].remote}', nh=60)/${TEL6}/${quotedInner6})[:1280 - 48])`;
    const fragNeeded = (mtu: number, proto: 4 | 41, inner: string) =>
      `Ether(dst='${GW_WAN_MAC}', src='${PEER_MAC}')/IP(src='198.51.100.77', dst='${ENDPOINTS[4].local}')/ICMP(type=3, code=4, nexthopmtu=${mtu})/` +
      `Raw(bytes(IP(src='${ENDPOINTS[4].local}', dst='${ENDPOINTS[4].remote}', proto=${proto}, flags='DF')/${inner})[:548])`;

    it('ip6ip6: relays a packet too big to the inner sender as ICMPv6 packet too big with the MTU less the outer headers, into the TUN, and reports the path MTU', async () => {
      const [frame] = await scapyBuild([ptb6(1400)]);
      const r = process({ ports: PORTS, tunnels: [tunnel(ip6ip6, { slowpathPort: TUN })] }, [{ port: WAN, frame: frame as Buffer }]);
      assert.equal(r.results[0]?.port, TUN);
      assert.deepEqual(r.pathMtuReports, [{ tunnel: 0, mtu: 1400 }]);
      const icmp = r.results[0]?.frame as Buffer;
      const [f] = await scapyDissect([Buffer.concat([Buffer.from('00'.repeat(12) + '86dd', 'hex'), icmp])]);
      assert.ok(f);
      const ip = layer(f, 'IPv6').fields;
      const ptb = layer(f, 'ICMPv6PacketTooBig').fields;
      // From the quoted packet's destination to its source, as if it came out of the tunnel.
      assert.deepEqual([ip.src, ip.dst, Number(ip.nh), Number(ip.hlim), Number(ip.plen)], ['2001:db8:3::1', '2001:db8:1::10', 58, 64, icmp.length - 40]);
      assert.equal(Number(ptb.mtu), 1400 - 48);
      // All of the inner packet the packet too big quoted (1232 - 48 bytes), within RFC 4443 2.4's 1280.
      assert.equal(icmp.length, 40 + 8 + 1232 - 48);
      assert.ok(icmp.subarray(48).equals((frame as Buffer).subarray(14 + 40 + 8 + 48)), 'quotes the inner packet as it was sent');
      assert.equal(layer(f, 'IPerror6').fields.src, '2001:db8:1::10');
      const [sums] = await scapyChecksums([Buffer.concat([Buffer.from('00'.repeat(12) + '86dd', 'hex'), icmp])]);
      assert.ok(sums);
      for (const c of sums.filter((x) => x.layer.startsWith('ICMPv6'))) assert.equal(c.found, c.computed, 'ICMPv6 checksum');
    });

    it('ip6ip6: floors the relayed MTU and the tunnel\'s effective MTU at 1280, IPv6\'s minimum', async () => {
      const [frame] = await scapyBuild([ptb6(1300)]);
      const r = process({ ports: PORTS, tunnels: [tunnel(ip6ip6, { slowpathPort: TUN })] }, [{ port: WAN, frame: frame as Buffer }]);
      const [f] = await scapyDissect([Buffer.concat([Buffer.from('00'.repeat(12) + '86dd', 'hex'), r.results[0]?.frame as Buffer])]);
      assert.equal(Number(layer(f as ScapyFrame, 'ICMPv6PacketTooBig').fields.mtu), 1280);
      // A path MTU of 1280 leaves 1232 for IPv4 inside, but IPv6 inside keeps 1280.
      const [fits] = await scapyBuild([lanExpr(ip6ip6, { payload: 1280 - 60 })]);
      const setup = { ports: PORTS, tunnels: [{ ...tunnel(ip6ip6), pathMtu: 1280 }], flows: [{ orig: encapFlow(ip6ip6) }] };
      assert.equal(one(setup, LAN, fits as Buffer).reason, 'forward');
    });

    for (const m of MODES.filter((x) => x.outer === 4)) {
      it(`${m.name}: learns the path MTU from ICMPv4 fragmentation needed (floor 552, as ipv4_update_pmtu()) and hands the error on unchanged`, async () => {
        const inner = innerExpr(m, 'out', { payload: 1400 });
        const frames = await scapyBuild([fragNeeded(1400, m.inner === 4 ? 4 : 41, inner), fragNeeded(300, m.inner === 4 ? 4 : 41, inner), fragNeeded(1400, m.inner === 4 ? 41 : 4, inner)]);
        const setup = { ports: PORTS, tunnels: [tunnel(m, { slowpathPort: TUN })] };
        const [right, low, otherMode] = frames.map((frame) => process(setup, [{ port: WAN, frame }]));
        assert.deepEqual(right?.pathMtuReports, [{ tunnel: 0, mtu: 1400 }]);
        assert.deepEqual(low?.pathMtuReports, [{ tunnel: 0, mtu: 552 }]);
        assert.deepEqual(otherMode?.pathMtuReports, [], 'about the other mode between the same addresses: not this tunnel\'s');
        assert.deepEqual([right?.results[0]?.port, right?.results[0]?.frame?.equals(frames[0] as Buffer)], [WAN_SLOW, true]);
      });
    }
  });

  describe('ip6ip6 keys hold a fold of the outer addresses', () => {
    // outer_fold6() = s0 ^ rotl(s1, 16) ^ rotl(d0, 32) ^ rotl(d1, 48) over the addresses'
    // 64-bit halves (little-endian loads): flipping bits a of the source's second half and
    // rotl(a, 32) of the destination's second half leaves the fold as it was.
    function sameFold(src: string, dst: string): { src: string; dst: string } {
      const s = parseIp(src).bytes;
      const d = parseIp(dst).bytes;
      const a = 0x0000_0000_0000_ff00n;
      const rotl = (x: bigint, r: bigint) => ((x << r) | (x >> (64n - r))) & 0xffff_ffff_ffff_ffffn;
      s.writeBigUInt64LE(s.readBigUInt64LE(8) ^ a, 8);
      d.writeBigUInt64LE(d.readBigUInt64LE(8) ^ rotl(a, 32n), 8);
      const text = (b: Buffer) => b.toString('hex').match(/.{4}/g)!.join(':');
      return { src: text(s), dst: text(d) };
    }

    it('never decapsulates, by the flow that shares its fold, a packet whose outer addresses are not the flow\'s tunnel\'s', async () => {
      const m = MODES.find((x) => x.mode === 'ip6ip6') as Mode;
      const forged = sameFold(ENDPOINTS[6].remote, ENDPOINTS[6].local);
      const [real, fake] = await scapyBuild([tunnelledExpr(m, innerExpr(m, 'back')), tunnelledExpr(m, innerExpr(m, 'back'), forged)]);
      const keys = [real, fake].map((f) => testing.parse(f as Buffer, WAN, { mac: parseMac(GW_WAN_MAC) }).keyBytes.toString('hex'));
      assert.equal(keys[0], keys[1], 'the forged outer addresses fold as the tunnel\'s');
      assert.notEqual(forged.src, ENDPOINTS[6].remote);
      const setup = { ports: PORTS, tunnels: [tunnel(m, { slowpathPort: TUN })], flows: [{ orig: decapFlow(m) }] };
      const r = process(setup, [{ port: WAN, frame: fake as Buffer }, { port: WAN, frame: real as Buffer }]);
      assert.deepEqual(r.results.map((x) => x.port), [WAN_SLOW, LAN]);
      assert.equal(r.stats.punts.miss, 1);
      assert.ok((r.results[0]?.frame as Buffer).equals(fake as Buffer), 'the forged packet reaches the slow path as it came');
      assert.equal(r.flows[0]?.orig.packets, 1, 'only the real packet counted on the flow');
    });
  });
});
