/**
 * Benchmark scenarios: what the traffic looks like and which flows make the fast path
 * forward it. The packet generator (traffic.ts) and the child that installs the flows
 * (child.ts) both derive flow i from the functions here, so the pcap and the flowtable can
 * never disagree about a tuple.
 *
 * Topology, as a one-worker gateway sees it:
 *
 *   pcap 'in' (infinite replay) ──> [flowgate] ──> null 'out' (sink; also the tunnel underlay)
 *                                       └─ misses ──> null 'punt' (the slow path's stand-in)
 */
import { FlowDirection, FlowPairOptions, PortOptions, TunnelMode, TunnelOptions, VlanOptions } from '../dataplane';
import { InvalidArgumentError } from '../errors';
import { ethernetFrame, ipInIp6Packet, ip4Packet, ip6Packet } from '../packets';

/** fwd4-vlan: fwd4 in on one 802.1Q VLAN of 'in' and out on another of 'out', tagged both sides. */
export type ScenarioKind = 'fwd4' | 'fwd6' | 'decap' | 'encap' | 'mixed' | 'fwd4-vlan';
export const SCENARIO_KINDS: readonly ScenarioKind[] = ['fwd4', 'fwd6', 'decap', 'encap', 'mixed', 'fwd4-vlan'];

/** The RFC 2473 Tunnel Encapsulation Limit: an option value, or no option at all. */
export type EncapLimit = number | 'none';

/** The tunnel modes of decap and encap scenarios besides ip4ip6, the reference one (mixed is ip4ip6 only). */
export const OTHER_TUNNEL_MODES: readonly TunnelMode[] = ['ip6ip6', 'ipip', 'sit'];

export interface Scenario {
  kind: ScenarioKind;
  /** Tunnel scenarios only (null for fwd4/fwd6, and for the modes over IPv4, which have no option). */
  encapLimit: EncapLimit | null;
  /** Tunnel scenarios only: the mode (null for fwd4/fwd6). */
  mode: TunnelMode | null;
  /** fwd4, fwd6, decap-limit4, encap-nolimit, mixed-limit4, decap-ip6ip6, decap-ip6ip6-nolimit, encap-sit, ... */
  name: string;
}

export function isTunnelKind(kind: ScenarioKind): boolean {
  return kind === 'decap' || kind === 'encap' || kind === 'mixed';
}

const overIpv4 = (mode: TunnelMode) => mode === 'ipip' || mode === 'sit';

/**
 * A scenario. ip4ip6 scenarios are named by their limit (decap-limit4, encap-nolimit), as
 * since the first benchmarks; the other modes by the mode, with -nolimit for ip6ip6
 * without the option (decap-ip6ip6, decap-ip6ip6-nolimit, encap-sit).
 */
export function makeScenario(kind: ScenarioKind, encapLimit: EncapLimit, mode: TunnelMode = 'ip4ip6'): Scenario {
  if (!isTunnelKind(kind)) return { kind, encapLimit: null, mode: null, name: kind };
  if (kind === 'mixed' && mode !== 'ip4ip6') throw new InvalidArgumentError(`mixed traffic is ip4ip6 only, not ${mode}`);
  if (mode === 'ip4ip6') return { kind, encapLimit, mode, name: `${kind}-${encapLimit === 'none' ? 'nolimit' : `limit${encapLimit}`}` };
  if (overIpv4(mode)) return { kind, encapLimit: null, mode, name: `${kind}-${mode}` };
  const suffix = encapLimit === 'none' ? '-nolimit' : encapLimit === 4 ? '' : `-limit${encapLimit}`;
  return { kind, encapLimit, mode, name: `${kind}-${mode}${suffix}` };
}

/** The inverse of Scenario.name ("encap-limit4", "fwd6", "decap-sit"). */
export function scenarioFromName(name: string): Scenario {
  const m = /^(fwd4-vlan|fwd4|fwd6|decap|encap|mixed)(?:-(ip6ip6|ipip|sit))?(?:-(?:limit(\d{1,3})|(nolimit)))?$/.exec(name);
  if (m === null) throw new InvalidArgumentError(`expected a scenario name such as fwd4, encap-limit4 or decap-sit, found '${name}'`);
  const kind = m[1] as ScenarioKind;
  const mode = (m[2] ?? 'ip4ip6') as TunnelMode;
  const limit: EncapLimit = m[4] !== undefined ? 'none' : m[3] !== undefined ? Number(m[3]) : 4;
  if (typeof limit === 'number' && limit > 255) throw new InvalidArgumentError(`encapsulation limit ${limit} is above 255`);
  if (!isTunnelKind(kind) && (m[2] !== undefined || m[3] !== undefined || m[4] !== undefined))
    throw new InvalidArgumentError(`${kind} has no tunnel, so no mode or encapsulation limit`);
  if (overIpv4(mode) && (m[3] !== undefined || m[4] !== undefined)) throw new InvalidArgumentError(`${mode} runs over IPv4: it has no encapsulation limit`);
  return makeScenario(kind, limit, mode);
}

// ---- the fixed part of the topology --------------------------------------------------

/** Addresses of the benchmark topology. Documentation ranges where they exist. */
export const TOPOLOGY = {
  /** The sending host (or tunnel peer) as the source MAC of the generated frames. */
  hostMac: '02:00:00:00:02:00',
  /** The gateway's address on the ingress side, as the destination MAC of generated frames. */
  gatewayMac: '02:00:00:00:01:00',
  /** The next hop of forwarded and decapsulated packets. */
  nextHopMac: '02:00:00:00:00:01',
  tunnel: {
    name: 'tun0',
    local: '2001:db8:2::1',
    remote: '2001:db8:2::2',
    /** The endpoints of the modes over IPv4 (ipip, sit). */
    local4: '198.51.100.1',
    remote4: '198.51.100.2',
    /** The underlay next hop towards the tunnel peer. */
    nextHopMac: '02:00:00:00:00:02',
  },
  /**
   * The underlay ('out') MTU in tunnel scenarios: 1500 + 100, so that the tunnel (MTU 1552
   * with the encapsulation limit option) carries full 1500-byte packets, as deployments that
   * tunnel do ("baby jumbo" underlays). With 1500 a --size 1500 encap run would only measure
   * the slow path's PMTU handling.
   */
  tunnelUnderlayMtu: 1600,
  /** fwd4-vlan: the 802.1Q VLANs the traffic arrives on ('in') and leaves by ('out'). */
  vlanIn: 100,
  vlanOut: 200,
} as const;

export const PORT_IN = 'in';
export const PORT_OUT = 'out';
export const PORT_PUNT = 'punt';

export const UDP_DPORT = 443;
const UDP_SPORT_BASE = 1024;
const UDP_SPORT_RANGE = 60000;

/** The most flows a run can have: the flowtable's index space (native MAX_FLOWS, 2^22). */
export const MAX_BENCH_FLOWS = 4_194_304;

// ---- flow tuples -----------------------------------------------------------------------

export interface Tuple {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

function ipv4(n: number): string {
  return `${(n >>> 24) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

const LAN4_BASE = 0x0a000000; // 10.0.0.0/16: 65,534 LAN hosts
const LAN_HOSTS = 65_534;

/** Host numbers 1..65534: neither the subnet's own address nor its broadcast. */
function lanHost(i: number): number {
  return (i % LAN_HOSTS) + 1;
}
const REMOTE4_BASE = 0x64400000; // 100.64.0.0/10: exactly 2^22 destinations, one per flow

/**
 * Flow i of the IPv4 scenarios: a LAN host talking to its own remote destination. Every
 * flow has a distinct destination, so that a destination-routing switch (the OVS-DPDK
 * comparison) needs one rule per flow as flowgate needs one flow per flow.
 */
export function tuple4(i: number): Tuple {
  return {
    src: ipv4(LAN4_BASE + lanHost(i)),
    dst: ipv4(REMOTE4_BASE + i),
    sport: UDP_SPORT_BASE + (i % UDP_SPORT_RANGE),
    dport: UDP_DPORT,
  };
}

/** The destination of flow i in dotted form (for OpenFlow rules that route on it). */
export function destination4(i: number): string {
  return ipv4(REMOTE4_BASE + i);
}

export function tuple6(i: number): Tuple {
  // Interface identifiers from 1: ::0 is the subnet-router anycast address.
  const host = lanHost(i);
  const remote = i + 1;
  return {
    src: `2001:db8:1::${host.toString(16)}`,
    dst: `2001:db8:100::${(remote >>> 16).toString(16)}:${(remote & 0xffff).toString(16)}`,
    sport: UDP_SPORT_BASE + (i % UDP_SPORT_RANGE),
    dport: UDP_DPORT,
  };
}

function reversed(t: Tuple): Tuple {
  return { src: t.dst, dst: t.src, sport: t.dport, dport: t.sport };
}

/** What flow i is: its direction through the gateway and its (inner) tuple. */
export type FlowRole = 'fwd4' | 'fwd6' | 'encap' | 'decap';

export function flowRole(kind: ScenarioKind, i: number): FlowRole {
  if (kind === 'mixed') return i % 2 === 0 ? 'encap' : 'decap';
  if (kind === 'fwd4-vlan') return 'fwd4';
  return kind;
}

/** The family of the packets flow i carries (inside the tunnel, when tunnelled). */
export function innerFamily(scenario: Pick<Scenario, 'kind' | 'mode'>): 4 | 6 {
  return scenario.kind === 'fwd6' || scenario.mode === 'ip6ip6' || scenario.mode === 'sit' ? 6 : 4;
}

/**
 * Flow i's (inner) tuple. In mixed traffic flows 2c and 2c+1 are the two directions of
 * connection c: LAN to the Internet through the tunnel, and the reply from the tunnel peer.
 * scenario: a kind, or the scenario when its mode may carry IPv6.
 */
export function flowTuple(scenario: ScenarioKind | Pick<Scenario, 'kind' | 'mode'>, i: number): Tuple {
  const kind = typeof scenario === 'string' ? scenario : scenario.kind;
  if (typeof scenario !== 'string' && innerFamily(scenario) === 6) return tuple6(i);
  if (kind === 'fwd6') return tuple6(i);
  if (kind === 'mixed') {
    const connection = tuple4(i >>> 1);
    return i % 2 === 0 ? connection : reversed(connection);
  }
  return tuple4(i);
}

// ---- packets ---------------------------------------------------------------------------

/** Ethernet FCS: counted in frame sizes (RFC 2544 "64-byte frames"), absent from pcaps and mbufs. */
export const FCS_BYTES = 4;
const ETH_HEADER = 14;
const IP4_UDP_HEADERS = 20 + 8;
const IP6_UDP_HEADERS = 40 + 8;

/** The smallest frame (with FCS) that carries a UDP header of this family. */
export function minimumFrameSize(family: 4 | 6): number {
  return ETH_HEADER + (family === 6 ? IP6_UDP_HEADERS : IP4_UDP_HEADERS) + FCS_BYTES;
}

/** The outer headers of a decap scenario's packets: IPv4, or IPv6 with the option unless none. */
function outerHeaders(scenario: Scenario, inner: Buffer): Buffer {
  const t = TOPOLOGY.tunnel;
  if (scenario.mode === 'ipip' || scenario.mode === 'sit') {
    // The inner packet as ip4Packet's payload: ipip (4) or sit (41), DF as Linux's pmtudisc.
    return ip4Packet({ src: t.remote4, dst: t.local4, ttl: 64, df: true }, { proto: scenario.mode === 'ipip' ? 4 : 41, data: inner });
  }
  const limit = scenario.encapLimit ?? 4;
  return ipInIp6Packet({ src: t.remote, dst: t.local, hopLimit: 64, encapLimit: limit === 'none' ? null : limit }, inner);
}

/**
 * The frame that carries flow i, its inner frame `frameSize` bytes long with FCS (the
 * stored frame is 4 bytes shorter). Sizes below the smallest UDP frame of the role
 * (IPv6/UDP needs 66) are raised to it. Decapsulation traffic arrives tunnelled, so its
 * frames are longer than frameSize by the outer headers.
 */
export function flowFrame(scenario: Scenario, i: number, frameSize: number): Buffer {
  const role = flowRole(scenario.kind, i);
  const t = flowTuple(scenario, i);
  const family = innerFamily(scenario);
  const inner = Math.max(frameSize, minimumFrameSize(family)) - FCS_BYTES;
  const udp = { udp: { sport: t.sport, dport: t.dport } };
  const ip =
    family === 6
      ? ip6Packet({ src: t.src, dst: t.dst, hopLimit: 64 }, udp, Buffer.alloc(inner - ETH_HEADER - IP6_UDP_HEADERS))
      : ip4Packet({ src: t.src, dst: t.dst, ttl: 64 }, udp, Buffer.alloc(inner - ETH_HEADER - IP4_UDP_HEADERS));
  if (scenario.kind === 'fwd4-vlan') return vlanTagged(ethernetFrame(TOPOLOGY.gatewayMac, TOPOLOGY.hostMac, ip), TOPOLOGY.vlanIn);
  return ethernetFrame(TOPOLOGY.gatewayMac, TOPOLOGY.hostMac, role === 'decap' ? outerHeaders(scenario, ip) : ip);
}

/**
 * The frame with an 802.1Q tag (PCP 0) after its MAC addresses: 4 bytes longer, as
 * decapsulation traffic is longer by its outer headers, so that fwd4-vlan forwards the same
 * IP packets as fwd4.
 */
function vlanTagged(frame: Buffer, vid: number): Buffer {
  const tag = Buffer.alloc(4);
  tag.writeUInt16BE(0x8100, 0);
  tag.writeUInt16BE(vid, 2);
  return Buffer.concat([frame.subarray(0, 12), tag, frame.subarray(12)]);
}

/** Flow i's inner frame size with FCS: frameSize, or the smallest UDP frame of its role if larger. */
export function innerFrameSize(scenario: Scenario, i: number, frameSize: number): number {
  return Math.max(frameSize, minimumFrameSize(innerFamily(scenario)));
}

// ---- the dataplane side ----------------------------------------------------------------

/** The in-port vdev: the traffic's pcaps replayed forever, one rx queue (and one dropping tx queue) per file. */
export function pcapDevice(files: readonly string[], index = 0): string {
  return `net_pcap${index},${files.map((f) => `rx_pcap=${f}`).join(',')},infinite_rx=1`;
}

export interface SinkOptions {
  /** The vdev that takes forwarded packets (default: the null sink). */
  device?: string;
}

/** The ports of the benchmark: pcap replay in, a sink out, a null port standing in for the slow path. */
export function benchPorts(scenario: Scenario, inDevice: string, sink: SinkOptions = {}): PortOptions[] {
  const out: PortOptions = { name: PORT_OUT, device: sink.device ?? 'net_null0,no-rx=1' };
  if (isTunnelKind(scenario.kind)) out.mtu = TOPOLOGY.tunnelUnderlayMtu;
  return [
    // The frames are sent to the gateway's address: a router forwards no others.
    { name: PORT_IN, device: inDevice, mac: TOPOLOGY.gatewayMac, slowpath: PORT_PUNT },
    out,
    // Never polled: it only takes the punted packets (misses), as a TAP would.
    { name: PORT_PUNT, device: 'net_null1,no-rx=1', poll: false },
  ];
}

/** The VLANs of the benchmark: fwd4-vlan's, on 'in' and 'out'. */
export function benchVlans(scenario: Scenario): VlanOptions[] {
  if (scenario.kind !== 'fwd4-vlan') return [];
  return [
    { name: vlanPort(PORT_IN), parent: PORT_IN, id: TOPOLOGY.vlanIn },
    { name: vlanPort(PORT_OUT), parent: PORT_OUT, id: TOPOLOGY.vlanOut },
  ];
}

function vlanPort(port: string): string {
  return `${port}.${port === PORT_IN ? TOPOLOGY.vlanIn : TOPOLOGY.vlanOut}`;
}

export function benchTunnel(scenario: Scenario): TunnelOptions | null {
  if (!isTunnelKind(scenario.kind)) return null;
  const t = TOPOLOGY.tunnel;
  const mode = scenario.mode ?? 'ip4ip6';
  const common = { name: t.name, mode, underlay: PORT_OUT, nextHopMac: t.nextHopMac };
  if (mode === 'ipip' || mode === 'sit') return { ...common, local: t.local4, remote: t.remote4 };
  return { ...common, local: t.local, remote: t.remote, encapLimit: scenario.encapLimit ?? 4 };
}

function direction(role: FlowRole, t: Tuple, vlan = false): FlowDirection {
  if (vlan) return { in: vlanPort(PORT_IN), proto: 'udp', ...t, out: { port: vlanPort(PORT_OUT), mac: TOPOLOGY.nextHopMac } };
  const base = { in: PORT_IN, proto: 'udp' as const, ...t };
  switch (role) {
    case 'encap':
      return { ...base, out: { tunnel: TOPOLOGY.tunnel.name } };
    case 'decap':
      return { ...base, tunnel: TOPOLOGY.tunnel.name, out: { port: PORT_OUT, mac: TOPOLOGY.nextHopMac } };
    default:
      return { ...base, out: { port: PORT_OUT, mac: TOPOLOGY.nextHopMac } };
  }
}

/**
 * The flows to install for `flows` flows of traffic, as addFlow() calls: one-way flows, one
 * flowtable entry per flow of traffic, except in mixed traffic, where both directions of a
 * connection are installed together as the learner would.
 */
export function* flowInstalls(scenario: Scenario, flows: number): Generator<FlowPairOptions> {
  if (scenario.kind === 'mixed') {
    for (let i = 0; i < flows; i += 2) {
      const original = direction('encap', flowTuple('mixed', i));
      if (i + 1 < flows) yield { original, reply: direction('decap', flowTuple('mixed', i + 1)) };
      else yield { original };
    }
    return;
  }
  for (let i = 0; i < flows; i++)
    yield { original: direction(flowRole(scenario.kind, i), flowTuple(scenario, i), scenario.kind === 'fwd4-vlan') };
}

/** How many addFlow() calls flowInstalls() makes. */
export function flowInstallCount(scenario: Scenario, flows: number): number {
  return scenario.kind === 'mixed' ? Math.ceil(flows / 2) : flows;
}
