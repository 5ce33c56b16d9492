// Linux's ipip (RFC 2003), sit (RFC 4213) and ip6tnl ip6ip6 (RFC 2473) in a stock Debian kernel
// under qemu, pinned down byte for byte: the outer headers flowgate's encapsulation of the same
// modes must reproduce (the IPv4 ID and the flow label aside), for each of the settings it
// accepts. test/interop/vm.test.ts does the same for ip6tnl ipip6; test/interop/README.md has
// the resulting table.
//
// One boot per mode; the guest has one tunnel per setting, each to its own remote address on
// the host's TAP, so that the settings are told apart by the outer destination:
//
//   host netns fgvm-*: TAP fgvm0 10.1.0.1, .11, .12, .13/24, 2001:db8:2::1, ::11, ::12, ::13/64
//        | qemu virtio-net                                     <-- scapy plays every far end
//   guest eth0 10.1.0.2/24, 2001:db8:2::2/64
//   guest tunN: local the guest's, remote the Nth host address; route to far-end LAN N
//               (192.168.N.0/24 or 2001:db8:10N::/64) dev tunN
//   guest netns lan: eth0 10.0.0.1/24 and 2001:db8:aa::1/64 via veth to the guest
//
// scapy sends an encapsulated echo request (or TCP SYN) from far-end LAN host N to the lan host
// and captures the encapsulated answer, which the guest forwarded (TTL 64 -> 63) into tunN.

import assert from 'node:assert/strict';
import { createNetns, deleteNetns, macAddress, sh } from '../helpers/netns';
import { layer, scapyChecksums, ScapyFrame, scapySendRecv } from '../helpers/scapy';
import { innerFamily, LinuxVm, outerFamily, TunnelSpec } from '../helpers/vm';

const TAP = 'fgvm0';
const GUEST_MAC = '52:54:00:f9:00:04';
const GUEST4 = '10.1.0.2';
const GUEST6 = '2001:db8:2::2';
const HOSTS4 = ['10.1.0.1', '10.1.0.11', '10.1.0.12', '10.1.0.13'];
const HOSTS6 = ['2001:db8:2::1', '2001:db8:2::11', '2001:db8:2::12', '2001:db8:2::13'];
const STRANGER4 = '10.1.0.99';
const STRANGER6 = '2001:db8:2::99';
const LAN4 = '10.0.0.1';
const LAN6 = '2001:db8:aa::1';
/** A port nothing listens on in the lan netns: a SYN to it draws a RST with DF set. */
const CLOSED_PORT = 9;
const ICMP_ID = 0x4647;
const ICMP_PAYLOAD = 16;
const ETHER_LENGTH = 14;

const BOOT_TIMEOUT_MS = 90_000;
const HOOK_TIMEOUT_MS = BOOT_TIMEOUT_MS + 60_000;
const TEST_TIMEOUT_MS = 90_000;
const SILENCE_MS = 3_000;
const REPLY_WINDOW_MS = 10_000;

// ECN codepoints (RFC 3168) in the low two bits of TOS / traffic class.
const NOT_ECT = 0b00;
const ECT_1 = 0b01;
const ECT_0 = 0b10;
const CE = 0b11;
const DSCP_EF = 0xb8;
/** A fixed outer DSCP (AF11), with the ECN bits clear: an odd TOS means `inherit` to ipip. */
const FIXED_TOS = 0x28;

/** A tunnel's settings, without the addresses that the suite assigns. */
type Settings =
  | { mode: 'ipip' | 'sit'; ttl: number | 'inherit'; tos: number | 'inherit'; pmtudisc: boolean }
  | { mode: 'ip6ip6'; encaplimit: number | 'none'; hoplimit: number | 'inherit'; tclass: number | 'inherit' };

interface Tunnel {
  index: number;
  name: string;
  spec: TunnelSpec;
  /** The far-end LAN host behind this tunnel: the source of requests, the destination of answers. */
  farHost: string;
  /** The guest's underlay address and this tunnel's remote. */
  guest: string;
  remote: string;
}

function describeSettings(s: Settings): string {
  return s.mode === 'ip6ip6'
    ? `encaplimit ${s.encaplimit}, hoplimit ${s.hoplimit}, tclass ${hexOrWord(s.tclass)}`
    : `ttl ${s.ttl}, tos ${hexOrWord(s.tos)}, ${s.pmtudisc ? 'pmtudisc' : 'nopmtudisc'}`;
}

function hexOrWord(v: number | string): string {
  return typeof v === 'number' ? `0x${hex2(v)}` : v;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

function tunnelsOf(settings: readonly Settings[]): Tunnel[] {
  return settings.map((s, index) => {
    const name = `tun${index}`;
    const outer6 = s.mode === 'ip6ip6';
    const guest = outer6 ? GUEST6 : GUEST4;
    const remote = (outer6 ? HOSTS6 : HOSTS4)[index] as string;
    const spec: TunnelSpec = s.mode === 'ip6ip6' ? { name, local: guest, remote, ...s } : { name, local: guest, remote, ...s };
    const farHost = innerFamily(spec) === 4 ? `192.168.${index}.10` : `2001:db8:10${index}::10`;
    return { index, name, spec, farHost, guest, remote };
  });
}

interface Guest {
  vm: LinuxVm;
  netns: string;
  hostMac: string;
  tunnels: Tunnel[];
}

/** Boots a guest with one tunnel per setting before the calling suite and shuts it down after. */
function guestPerSuite(settings: readonly Settings[]): () => Guest {
  let guest: Guest | undefined;
  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    const tunnels = tunnelsOf(settings);
    const netns = await createNetns('fgvm');
    let vm: LinuxVm | undefined;
    try {
      vm = await LinuxVm.boot({
        netns,
        tap: TAP,
        mac: GUEST_MAC,
        hostAddresses: [...HOSTS4.map((a) => `${a}/24`), ...HOSTS6.map((a) => `${a}/64`)],
        bootTimeoutMs: BOOT_TIMEOUT_MS,
        scenario: {
          underlay: [`${GUEST4}/24`, `${GUEST6}/64`],
          tunnels: tunnels.map((t) => t.spec),
          behind: { kind: 'netns', name: 'lan', address: [`${LAN4}/24`, `${LAN6}/64`], gateway: ['10.0.0.254/24', '2001:db8:aa::fe/64'] },
          routes: tunnels.map((t) => ({ to: innerFamily(t.spec) === 4 ? `192.168.${t.index}.0/24` : `2001:db8:10${t.index}::/64`, dev: t.name })),
        },
      });
      // The host has no tunnels of its own: without this its kernel would answer the guest's
      // tunnel packets with ICMP errors, which a real far end never sends.
      await sh(
        `nft add table inet fgvm
         nft add chain inet fgvm input '{ type filter hook input priority 0; }'
         nft add rule inet fgvm input iifname ${TAP} meta l4proto '{ 4, 41 }' drop`,
        { netns },
      );
      guest = { vm, netns, hostMac: await macAddress(TAP, netns), tunnels };
    } catch (err) {
      await vm?.shutdown();
      await deleteNetns(netns);
      throw err;
    }
  });
  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    if (!guest) return;
    try {
      await guest.vm.shutdown();
    } finally {
      await deleteNetns(guest.netns);
    }
  });
  return () => {
    assert.ok(guest, 'the VM did not boot');
    return guest;
  };
}

interface Request {
  seq: number;
  /** Inner TOS / traffic class; default 0. */
  tos?: number;
  /** Inner IPv4 DF; default clear. */
  df?: boolean;
  /** A TCP SYN to CLOSED_PORT instead of an echo request (IPv4 inside only). */
  syn?: boolean;
  /** Outer TOS / traffic class; default 0. */
  outerTos?: number;
  outerSrc?: string;
  /** ip6ip6: put the Tunnel Encapsulation Limit option (limit 4) in front; default true. */
  encapLimitOption?: boolean;
}

/** A scapy expression for request `r` as tunnel `t`'s far end sends it to the lan host. */
function requestFrame(g: Guest, t: Tunnel, r: Request): string {
  const outer =
    outerFamily(t.spec) === 4
      ? `IP(src='${r.outerSrc ?? t.remote}', dst='${t.guest}', tos=${r.outerTos ?? 0}, ttl=64, flags='DF')`
      : `IPv6(src='${r.outerSrc ?? t.remote}', dst='${t.guest}', tc=${r.outerTos ?? 0}, hlim=64)` +
        (r.encapLimitOption === false ? '' : `/IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=b'\\x04'), PadN(optdata=b'\\x00')])`);
  const inner =
    innerFamily(t.spec) === 4
      ? `IP(src='${t.farHost}', dst='${LAN4}', ttl=64, tos=${r.tos ?? 0}, flags=${r.df ? "'DF'" : 0})` +
        (r.syn
          ? `/TCP(sport=${40000 + r.seq}, dport=${CLOSED_PORT}, flags='S', seq=1000)`
          : `/ICMP(type='echo-request', id=${ICMP_ID}, seq=${r.seq})/Raw(b'f' * ${ICMP_PAYLOAD})`)
      : `IPv6(src='${t.farHost}', dst='${LAN6}', hlim=64, tc=${r.tos ?? 0})/ICMPv6EchoRequest(id=${ICMP_ID}, seq=${r.seq}, data=b'f' * ${ICMP_PAYLOAD})`;
  return `Ether(src='${g.hostMac}', dst='${GUEST_MAC}')/${outer}/${inner}`;
}

/** Bytes of outer headers that Linux puts in front: 20 (IPv4), 40 (IPv6), 48 with the encap-limit option. */
function outerLength(t: Tunnel): number {
  if (t.spec.mode === 'ipip' || t.spec.mode === 'sit') return 20;
  return t.spec.mode === 'ip6ip6' && t.spec.encaplimit !== 'none' ? 48 : 40;
}

/**
 * A BPF filter for what the guest sends into tunnel `t` towards its far end: echo replies
 * (or, with `tcp`, any TCP segment) inside, so that router solicitations and MLD reports that
 * the guest sends through its tunnels by itself stay out of the capture.
 */
function answerFilter(t: Tunnel, tcp = false): string {
  const o = outerLength(t);
  const ip = outerFamily(t.spec) === 4 ? 'ip' : 'ip6';
  const inner =
    innerFamily(t.spec) === 4
      ? tcp ? `${ip}[${o + 9}] == 6` : `${ip}[${o + 9}] == 1 and ${ip}[${o + 20}] == 0`
      : `${ip}[${o + 6}] == 58 and ${ip}[${o + 40}] == 129`;
  return `ether src ${GUEST_MAC} and ${ip} dst host ${t.remote} and ${inner}`;
}

/**
 * Sends the requests into tunnel `t` and captures its encapsulated answers until `expect`
 * arrived or the window closed. Requests whose answer must not come go before the others.
 */
async function exchange(g: Guest, t: Tunnel, requests: Request[], expect: number): Promise<ScapyFrame[]> {
  return scapySendRecv({
    netns: g.netns,
    iface: TAP,
    send: requests.map((r) => requestFrame(g, t, r)),
    filter: answerFilter(t, requests.some((r) => r.syn)),
    count: expect,
    timeoutMs: expect ? REPLY_WINDOW_MS : SILENCE_MS,
    intervalMs: 50,
  });
}

/** The inner layer's name in scapy: IP or IPv6 after the outer headers. */
function innerLayer(t: Tunnel, frame: ScapyFrame) {
  return innerFamily(t.spec) === 4 ? layer(frame, 'IP', outerFamily(t.spec) === 4 ? 1 : 0) : layer(frame, 'IPv6', outerFamily(t.spec) === 6 ? 1 : 0);
}

/** The answers among `frames` by sequence number (the ICMP sequence, or the SYN's source port less 40000). */
function answersBySeq(t: Tunnel, frames: ScapyFrame[]): Map<number, ScapyFrame> {
  const answers = new Map<number, ScapyFrame>();
  for (const frame of frames) {
    const inner = innerLayer(t, frame).fields;
    assert.deepEqual([inner.src, inner.dst], [innerFamily(t.spec) === 4 ? LAN4 : LAN6, t.farHost], `not from the lan host to far end ${t.index}: ${frame.summary}`);
    const tcp = frame.layers.find((l) => l.name === 'TCP');
    if (tcp) {
      answers.set(Number(tcp.fields.dport) - 40000, frame);
    } else {
      const icmp = layer(frame, innerFamily(t.spec) === 4 ? 'ICMP' : 'ICMPv6EchoReply').fields;
      assert.equal(icmp.id, ICMP_ID, frame.summary);
      answers.set(Number(icmp.seq), frame);
    }
  }
  return answers;
}

async function answersTo(g: Guest, t: Tunnel, requests: Request[]): Promise<Map<number, ScapyFrame>> {
  const answers = answersBySeq(t, await exchange(g, t, requests, requests.length));
  for (const r of requests) assert.ok(answers.has(r.seq), `no answer to seq ${r.seq} through ${t.name} within ${REPLY_WINDOW_MS} ms`);
  return answers;
}

function addressHex(address: string): string {
  if (!address.includes(':')) return address.split('.').map((b) => hex2(Number(b))).join('');
  const [head = '', tail = ''] = address.split('::');
  const words = (s: string) => (s ? s.split(':') : []);
  const missing = 8 - words(head).length - words(tail).length;
  return [...words(head), ...Array<string>(missing).fill('0'), ...words(tail)].map((w) => w.padStart(4, '0')).join('');
}

/** What an answer's outer header must carry, besides what the tunnel fixes. */
interface Expected {
  tos: number;
  ttl: number;
  /** IPv4 outer header only. */
  df?: boolean;
}

/**
 * Asserts every byte of each answer's outer headers against bytes written out here from RFC
 * 791 or RFC 8200 and RFC 2473: for IPv4 all but the ID and the checksum (which depends on
 * it, and which scapy checks instead, in one run for all the answers), for IPv6 all but the
 * flow label. And that the whole inner packet follows them.
 */
async function assertOuterHeaders(t: Tunnel, answers: Array<{ frame: ScapyFrame; expected: Expected }>): Promise<void> {
  const length = outerLength(t);
  const proto = hex2(innerFamily(t.spec) === 4 ? 4 : 41);
  for (const { frame, expected: e } of answers) {
    const inner = frame.bytes.subarray(ETHER_LENGTH + length);
    const innerLength = innerFamily(t.spec) === 4 ? inner.readUInt16BE(2) : 40 + inner.readUInt16BE(4);
    assert.equal(frame.bytes.length, ETHER_LENGTH + length + innerLength, 'frame length: the outer headers, the inner packet, no padding');
    const outer = Buffer.from(frame.bytes.subarray(ETHER_LENGTH, ETHER_LENGTH + length));
    let expected: string;
    if (outerFamily(t.spec) === 4) {
      assert.equal(frame.bytes.subarray(12, 14).toString('hex'), '0800', 'EtherType IPv4');
      outer.writeUInt16BE(0, 4); // identification
      outer.writeUInt16BE(0, 10); // header checksum
      expected =
        `45${hex2(e.tos)}${(20 + innerLength).toString(16).padStart(4, '0')}` +
        `0000${e.df ? '4000' : '0000'}` +
        `${hex2(e.ttl)}${proto}0000` +
        addressHex(t.guest) +
        addressHex(t.remote);
    } else {
      assert.equal(frame.bytes.subarray(12, 14).toString('hex'), '86dd', 'EtherType IPv6');
      outer[1] = (outer[1] ?? 0) & 0xf0;
      outer[2] = 0;
      outer[3] = 0;
      // Next header, length 0 (8 bytes), Tunnel Encapsulation Limit (type 4, length 1, the
      // limit), PadN (type 1, length 1, one zero byte).
      const option = t.spec.mode === 'ip6ip6' && t.spec.encaplimit !== 'none' ? `${proto}00` + `0401${hex2(t.spec.encaplimit)}` + '010100' : '';
      expected =
        `6${hex2(e.tos)}00000` +
        (length - 40 + innerLength).toString(16).padStart(4, '0') +
        (option ? '3c' : proto) +
        hex2(e.ttl) +
        addressHex(t.guest) +
        addressHex(t.remote) +
        option;
    }
    assert.equal(outer.toString('hex'), expected, `outer headers of ${frame.summary}`);
  }
  if (outerFamily(t.spec) === 4) {
    const sums = await scapyChecksums(answers.map((a) => a.frame.bytes));
    sums.forEach((frameSums, k) => {
      const outer = frameSums[0];
      assert.ok(outer && outer.layer === 'IP', 'scapy found the outer IPv4 header');
      assert.equal(outer.found, outer.computed, `outer IPv4 header checksum of ${answers[k]?.frame.summary}`);
    });
  }
}

function innerTos(t: Tunnel, frame: ScapyFrame): number {
  const f = innerLayer(t, frame).fields;
  return Number(innerFamily(t.spec) === 4 ? f.tos : f.tc);
}

function innerTtl(t: Tunnel, frame: ScapyFrame): number {
  const f = innerLayer(t, frame).fields;
  return Number(innerFamily(t.spec) === 4 ? f.ttl : f.hlim);
}

async function tunnelCounter(g: Guest, t: Tunnel, counter: string): Promise<number> {
  return Number((await g.vm.exec(`cat /sys/class/net/${t.name}/statistics/${counter}`)).trim());
}

/**
 * INET_ECN_encapsulate(): the outer DSCP is the fixed one or, with inherit, the inner one; the
 * outer ECN field is the inner one, except that CE becomes ECT(0) (RFC 6040 normal mode).
 */
const ENCAP_ECN_CASES = [
  { inner: 0x00 },
  { inner: DSCP_EF | NOT_ECT },
  { inner: DSCP_EF | ECT_1 },
  { inner: DSCP_EF | ECT_0 },
  { inner: DSCP_EF | CE },
  { inner: CE },
] as const;

/**
 * The outer TOS that Linux wrote for each inner TOS of ENCAP_ECN_CASES, per outer setting,
 * as observed (test/interop/README.md): fixed 0, fixed FIXED_TOS, inherit.
 */
const OUTER_TOS: Record<string, readonly number[]> = {
  '0': [0x00, 0x00, ECT_1, ECT_0, ECT_0, ECT_0],
  [String(FIXED_TOS)]: [FIXED_TOS, FIXED_TOS, FIXED_TOS | ECT_1, FIXED_TOS | ECT_0, FIXED_TOS | ECT_0, FIXED_TOS | ECT_0],
  inherit: [0x00, DSCP_EF, DSCP_EF | ECT_1, DSCP_EF | ECT_0, DSCP_EF | ECT_0, ECT_0],
};

/**
 * INET_ECN_decapsulate() / IP6_ECN_decapsulate() (RFC 6040 section 4.2): outer CE marks an ECT
 * inner packet CE and drops a not-ECT one (an rx frame error); outer ECT(1) turns inner ECT(0)
 * into ECT(1); the outer DSCP is ignored. The lan host echoes the TOS it received.
 */
const DECAP_ECN_CASES = [
  { seq: 51, outer: CE, inner: ECT_0, arrived: CE },
  { seq: 52, outer: CE, inner: ECT_1, arrived: CE },
  { seq: 53, outer: ECT_1, inner: ECT_0, arrived: ECT_1 },
  { seq: 54, outer: ECT_0, inner: ECT_1, arrived: ECT_1 },
  { seq: 55, outer: ECT_1, inner: NOT_ECT, arrived: NOT_ECT },
  { seq: 56, outer: NOT_ECT, inner: CE, arrived: CE },
  { seq: 57, outer: DSCP_EF | ECT_0, inner: ECT_0, arrived: ECT_0 },
] as const;

interface ModeSuite {
  mode: 'ipip' | 'sit' | 'ip6ip6';
  rfc: string;
  settings: Settings[];
  /** The tunnel's MTU for settings i (underlay 1500). */
  mtu: (s: Settings) => number;
}

const SUITES: ModeSuite[] = [
  {
    mode: 'ipip',
    rfc: 'RFC 2003',
    settings: [
      { mode: 'ipip', ttl: 64, tos: 0, pmtudisc: true },
      { mode: 'ipip', ttl: 'inherit', tos: 'inherit', pmtudisc: true },
      { mode: 'ipip', ttl: 'inherit', tos: FIXED_TOS, pmtudisc: false },
    ],
    mtu: () => 1480,
  },
  {
    mode: 'sit',
    rfc: 'RFC 4213',
    settings: [
      { mode: 'sit', ttl: 64, tos: 0, pmtudisc: true },
      { mode: 'sit', ttl: 'inherit', tos: 'inherit', pmtudisc: true },
      { mode: 'sit', ttl: 'inherit', tos: FIXED_TOS, pmtudisc: false },
    ],
    mtu: () => 1480,
  },
  {
    mode: 'ip6ip6',
    rfc: 'RFC 2473',
    settings: [
      { mode: 'ip6ip6', encaplimit: 4, hoplimit: 64, tclass: 0 },
      { mode: 'ip6ip6', encaplimit: 'none', hoplimit: 64, tclass: 0 },
      { mode: 'ip6ip6', encaplimit: 4, hoplimit: 'inherit', tclass: 'inherit' },
      { mode: 'ip6ip6', encaplimit: 'none', hoplimit: 'inherit', tclass: FIXED_TOS },
    ],
    mtu: (s) => (s.mode === 'ip6ip6' && s.encaplimit !== 'none' ? 1452 : 1460),
  },
];

/** The outer TOS Linux writes with settings `s` for ENCAP_ECN_CASES[k]'s inner TOS (k = 0: TOS 0). */
function outerTos(s: Settings, k = 0): number {
  const table = OUTER_TOS[String(tosSetting(s))];
  assert.ok(table, `no pinned outer TOS for the setting ${tosSetting(s)}`);
  return table[k] as number;
}

function ttlSetting(s: Settings): number | 'inherit' {
  return s.mode === 'ip6ip6' ? s.hoplimit : s.ttl;
}

function tosSetting(s: Settings): number | 'inherit' {
  return s.mode === 'ip6ip6' ? s.tclass : s.tos;
}

/** The outer DF bit Linux sets (IPv4 outer only): always with pmtudisc, else the inner IPv4 DF; none for sit's IPv6 inside. */
function outerDf(s: Settings, innerDf: boolean): boolean | undefined {
  if (s.mode === 'ip6ip6') return undefined;
  return s.pmtudisc || (s.mode === 'ipip' && innerDf);
}

for (const suite of SUITES) {
  describe(`interop: Linux ${suite.mode} (${suite.rfc}), one tunnel per setting`, function () {
    this.timeout(TEST_TIMEOUT_MS);
    const g = guestPerSuite(suite.settings);
    const tunnelOf = (i: number) => g().tunnels[i] as Tunnel;

    suite.settings.forEach((s, i) => {
      describe(describeSettings(s), () => {
        it(`encapsulates the forwarded answer with the outer headers of these settings and the inner ${ttlSetting(s) === 'inherit' ? 'TTL after forwarding as TTL' : 'packet as it left the lan host, less one hop'}`, async () => {
          const t = tunnelOf(i);
          const answer = (await answersTo(g(), t, [{ seq: 1 }])).get(1) as ScapyFrame;
          // The lan host answered with TTL (hop limit) 64 and the guest forwarded it.
          assert.equal(innerTtl(t, answer), 63);
          const ttl = ttlSetting(s);
          await assertOuterHeaders(t, [{ frame: answer, expected: { tos: outerTos(s), ttl: ttl === 'inherit' ? 63 : ttl, df: outerDf(s, false) } }]);
        });

        it(`writes the outer ${s.mode === 'ip6ip6' ? 'traffic class' : 'TOS'} from ${tosSetting(s) === 'inherit' ? 'the inner one' : 'the fixed one'} and the inner ECN field, CE as ECT(0)`, async () => {
          const t = tunnelOf(i);
          const answers = await answersTo(g(), t, ENCAP_ECN_CASES.map((c, k) => ({ seq: 10 + k, tos: c.inner })));
          const ttl = ttlSetting(s);
          const checked = ENCAP_ECN_CASES.map((c, k) => {
            const frame = answers.get(10 + k) as ScapyFrame;
            assert.equal(innerTos(t, frame), c.inner, 'the lan host echoes the TOS it received');
            return { frame, expected: { tos: outerTos(s, k), ttl: ttl === 'inherit' ? 63 : ttl, df: outerDf(s, false) } };
          });
          await assertOuterHeaders(t, checked);
        });

        if (s.mode !== 'ip6ip6') {
          const df = s.pmtudisc ? 'sets DF on every outer header (pmtudisc)' : s.mode === 'ipip' ? 'copies DF from the inner header (nopmtudisc)' : 'never sets DF (nopmtudisc, IPv6 inside)';
          it(df, async () => {
            const t = tunnelOf(i);
            // An echo reply (Linux's ICMP socket sends without DF) and, for IPv4 inside, a RST
            // (the TCP control socket sends with DF): both values of the inner DF.
            const withoutDf = (await answersTo(g(), t, [{ seq: 20 }])).get(20) as ScapyFrame;
            const ttl = (frame: ScapyFrame) => (s.ttl === 'inherit' ? innerTtl(t, frame) : s.ttl);
            const checked = [{ frame: withoutDf, expected: { tos: outerTos(s), ttl: ttl(withoutDf), df: outerDf(s, false) } }];
            if (s.mode === 'ipip') {
              assert.equal(Number(innerLayer(t, withoutDf).fields.flags) & 2, 0, 'the echo reply has no DF');
              const withDf = (await answersTo(g(), t, [{ seq: 21, syn: true }])).get(21) as ScapyFrame;
              assert.equal(Number(innerLayer(t, withDf).fields.flags) & 2, 2, 'the RST has DF');
              checked.push({ frame: withDf, expected: { tos: outerTos(s), ttl: ttl(withDf), df: outerDf(s, true) } });
            }
            await assertOuterHeaders(t, checked);
          });
        }

        it(`gives the tunnel the underlay MTU less the outer headers: ${suite.mtu(s)}`, async () => {
          assert.equal((await g().vm.exec(`cat /sys/class/net/tun${i}/mtu`)).trim(), String(suite.mtu(s)));
        });
      });
    });

    // What follows depends on the mode, not on the settings: the first tunnel stands for all.
    it('decapsulates ECN per RFC 6040: outer CE marks ECT inner packets CE and drops not-ECT ones, outer ECT(1) marks ECT(0) ECT(1)', async () => {
      const t = tunnelOf(0);
      const errors = await tunnelCounter(g(), t, 'rx_frame_errors');
      const dropped: Request = { seq: 50, outerTos: CE, tos: NOT_ECT };
      const cases = DECAP_ECN_CASES.map((c) => ({ seq: c.seq, outerTos: c.outer, tos: c.inner }));
      const answers = answersBySeq(t, await exchange(g(), t, [dropped, ...cases], cases.length));
      assert.deepEqual([...answers.keys()].sort(), cases.map((c) => c.seq), 'only the not-ECT packet under outer CE is dropped');
      for (const c of DECAP_ECN_CASES) {
        assert.equal(innerTos(t, answers.get(c.seq) as ScapyFrame), c.arrived, `outer 0x${hex2(c.outer)} inner 0x${hex2(c.inner)}`);
      }
      assert.equal(await tunnelCounter(g(), t, 'rx_frame_errors'), errors + 1);
    });

    it('decapsulates only packets from the tunnel’s remote address', async () => {
      const t = tunnelOf(0);
      const received = await tunnelCounter(g(), t, 'rx_packets');
      const stranger = outerFamily(t.spec) === 4 ? STRANGER4 : STRANGER6;
      await sh(['ip', 'addr', 'add', `${stranger}/${outerFamily(t.spec) === 4 ? 24 : 64}`, 'dev', TAP, ...(outerFamily(t.spec) === 6 ? ['nodad'] : [])], { netns: g().netns });
      const answers = answersBySeq(t, await exchange(g(), t, [{ seq: 60, outerSrc: stranger }, { seq: 61 }], 1));
      assert.deepEqual([...answers.keys()], [61], 'only the control, from the remote, is answered');
      assert.equal(await tunnelCounter(g(), t, 'rx_packets'), received + 1, `${t.name} received only the control`);
    });

    if (suite.mode === 'ip6ip6') {
      it('decapsulates packets with and without the encap-limit option, whatever its own encaplimit', async () => {
        for (const i of [0, 1]) {
          const t = tunnelOf(i);
          const answers = await answersTo(g(), t, [{ seq: 70, encapLimitOption: true }, { seq: 71, encapLimitOption: false }]);
          assert.deepEqual([...answers.keys()].sort(), [70, 71], t.name);
        }
      });
    }

    const inherits = suite.settings.findIndex((s) => ttlSetting(s) === 'inherit');
    it(`takes the outer ${suite.mode === 'ip6ip6' ? 'hop limit' : 'TTL'} with inherit from the inner packet as it leaves the guest, not a constant`, async () => {
      const t = tunnelOf(inherits);
      const lan = innerFamily(t.spec) === 4 ? 'net.ipv4.ip_default_ttl' : 'net.ipv6.conf.eth0.hop_limit';
      await g().vm.exec(`ip netns exec lan sysctl -w ${lan}=20`);
      try {
        const answer = (await answersTo(g(), t, [{ seq: 80 }])).get(80) as ScapyFrame;
        assert.equal(innerTtl(t, answer), 19);
        const s = suite.settings[inherits] as Settings;
        await assertOuterHeaders(t, [{ frame: answer, expected: { tos: outerTos(s), ttl: 19, df: outerDf(s, false) } }]);
      } finally {
        await g().vm.exec(`ip netns exec lan sysctl -w ${lan}=64`);
      }
    });
  });
}
