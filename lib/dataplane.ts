/**
 * The fast path as a TypeScript object: EAL, ports, workers, tunnels and flows, named the
 * way iproute2 names them (ports and tunnels by name, addresses as text). Validation and
 * naming live here; the addon gets plain, checked records (lib/native.ts).
 *
 *   const dp = new Dataplane();
 *   dp.start({ workers: { cpus: [1] }, ports: [{ name: 'eth0', device: 'net_pcap0,...' }] });
 *   dp.addFlow({ original: {...}, reply: {...} });
 *   dp.stats();
 *   dp.stop();
 *
 * EAL can be initialised once per process: a stopped Dataplane cannot start again, and a
 * second Dataplane in the same process fails with ERR_FLOWGATE_EAL_ALREADY_INITIALIZED.
 */
import * as os from 'node:os';

import { estimateMemory, HugepageMode, isPciDevice, planEal } from './eal';
import { DataplaneError, intIn, InvalidArgumentError, StateError } from './errors';
import { decodeFlowRecords, decodeReapedRecords } from './flow-records';
import { formatIp, formatMac, IpAddress, parseIp, parseMac } from './net/addr';
import { decodeObservations, Observation } from './slowpath/observations';
import {
  native,
  NativeAddon,
  NativeCaptureStats,
  NativeFlowInfo,
  NativeFlowNat,
  NativeFlowSpec,
  NativePortCounters,
  NativePortSpec,
  NativeTunnelMode,
  NativeTraceRecord,
  NativeTunnelParams,
  NativeVlanSpec,
} from './native';

export type IdleMode = 'busy' | 'adaptive';

export interface PortOptions {
  /** The port's name (the kernel mirror's interface name in a gateway). */
  name: string;
  /** A PCI address ("0000:03:00.0") or a DPDK vdev string ("net_af_packet0,iface=veth0"). */
  device: string;
  mtu?: number;
  /** Default: the device's own address. */
  mac?: string;
  promiscuous?: boolean;
  /** Whether the fast path polls this port's rx queues (default true). */
  poll?: boolean;
  /** An L3 device without Ethernet header (default: decided by the driver, net_tun). */
  l3?: boolean;
  /** The port that takes this port's punted packets (misses and exceptions). */
  slowpath?: string;
}

export type VlanProtocol = '802.1Q' | '802.1ad';

/**
 * A VLAN sub-interface, a logical port usable wherever a port name is (flow in/out, a
 * tunnel's underlay): the fast path pops its tag(s) on receive and pushes them on send.
 */
export interface VlanOptions {
  /** As iproute2 names them, e.g. 'eth0.100'. */
  name: string;
  /** A port (802.1Q or 802.1ad), or an 802.1ad VLAN: this VLAN is then its inner 802.1Q tag (QinQ). */
  parent: string;
  /** The VLAN id, 1..4094. */
  id: number;
  /** Default '802.1Q'; '802.1ad' only directly on a port. */
  protocol?: VlanProtocol;
  /** Default the parent's; at most the parent's. */
  mtu?: number;
  /** Default the parent's. */
  mac?: string;
  /** The port (a TAP named like the sub-interface) that takes its punted packets, untagged. */
  slowpath?: string;
  /** 0..7: the PCP of tags pushed onto packets that arrived untagged (forwarded tagged packets keep theirs). Default 0. */
  pcp?: number;
}

export interface VlanInfo {
  name: string;
  parent: string;
  id: number;
  protocol: VlanProtocol;
  mtu: number;
  mac: string;
  pcp: number;
  slowpath: string | null;
}

export interface StartOptions {
  workers?: { cpus?: number[]; idle?: IdleMode };
  hugepages?: HugepageMode;
  /** Extra EAL arguments, appended after flowgate's own. */
  eal?: string[];
  flowCapacity?: number;
  mbufs?: number;
  /** Packet bytes per mbuf (without headroom). */
  mbufDataRoom?: number;
  rxDescriptors?: number;
  txDescriptors?: number;
  logLevel?: 'debug' | 'info' | 'notice' | 'warning' | 'error';
  ports?: PortOptions[];
  /** VLAN sub-interfaces of the ports (in any order: parents first is worked out). */
  vlans?: VlanOptions[];
  /** Start with the workers not polling yet (resume() starts them), e.g. to install flows first. */
  paused?: boolean;
  /**
   * Receives observation records (punts and kernel egress) in batches, on the JavaScript
   * thread: what the learner needs to offload flows. Without it, none are collected.
   */
  onObservations?: (records: Observation[]) => void;
  /** Called with non-fatal problems (the --no-huge fallback); default process.emitWarning. */
  onWarning?: (message: string) => void;
}

export type CaptureDirection = 'rx' | 'tx' | 'both';

/** Copies of a port's frames as pcapng (native/dp/capture.h). */
export interface CaptureOptions {
  /** An Ethernet port the workers poll (not a VLAN: capture on its parent with a 'vlan ID' filter). */
  port: string;
  /** rx: frames received, before processing; tx: frames sent (forwarded and from the kernel). Default both. */
  direction?: CaptureDirection;
  /** A tcpdump filter expression, compiled by libpcap; default: every frame. */
  filter?: string;
  /** Bytes kept of each frame; default 262144 (the whole frame). */
  snaplen?: number;
  /** Stop writing after this many packets; default 0: until stopCapture(). */
  count?: number;
  /** Where the pcapng goes: a file or FIFO descriptor open for writing. Duplicated: the caller closes its own. */
  fd: number;
}

/**
 * A capture's counts: packets written, frames the filter matched, copies lost (a slow
 * reader or a burst larger than the capture's ring), bytes written; and why it ended
 * ('running' while it writes; 'count', 'reader_gone', 'write_error', 'stopped').
 */
export type CaptureStats = NativeCaptureStats;

const CAPTURE_DIRECTIONS: Record<CaptureDirection, 1 | 2 | 3> = { rx: 1, tx: 2, both: 3 };

/** Every capture direction, for those who check one before it reaches startCapture(). */
export const CAPTURE_DIRECTION_NAMES = Object.keys(CAPTURE_DIRECTIONS) as readonly CaptureDirection[];

/** Packets a trace takes when no count is given (`flowgate trace`, the `trace` method). */
export const DEFAULT_TRACE_COUNT = 50;

export interface TunnelMtu {
  name: string;
  /** As configured. */
  mtu: number;
  /** The underlay path MTU towards the remote learnt from ICMPv6 packet too big or ICMPv4 fragmentation needed; null: none. */
  pathMtu: number | null;
  /** min(mtu, underlay port MTU - outer headers, pathMtu - outer headers): the largest inner packet sent. */
  effectiveMtu: number;
}

export interface PortInfo {
  id: number;
  name: string;
  device: string;
  driver: string;
  mac: string;
  mtu: number;
  rxQueues: number;
  txQueues: number;
  linkUp: boolean;
  linkSpeedMbps: number;
  l3: boolean;
  poll: boolean;
  slowpath: string | null;
  /** A VLAN sub-interface's parent, id, protocol and PCP; null for a port. */
  vlan: { parent: string; id: number; protocol: VlanProtocol; pcp: number } | null;
}

/**
 * Tunnel encapsulations, as Linux names them: ip6tnl's `ip4ip6` and `ip6ip6` (RFC 2473),
 * `ipip` (RFC 2003) and `sit` (IPv6 in IPv4, RFC 4213).
 */
export type TunnelMode = NativeTunnelMode;

export interface TunnelOptions {
  name: string;
  /** Default 'ip4ip6'. */
  mode?: TunnelMode;
  /** Outer addresses: IPv6 for ip4ip6 and ip6ip6, IPv4 for ipip and sit. */
  local: string;
  remote: string;
  /** IPv6 underlay: Tunnel Encapsulation Limit option value (RFC 2473), or 'none' for no option. Default 4. */
  encapLimit?: number | 'none';
  /** Outer hop limit (IPv6) or TTL (IPv4). Default 64; 'inherit' copies the inner TTL or hop limit. */
  hopLimit?: number | 'inherit';
  /** Outer traffic class (IPv6) or TOS (IPv4). Default 0; 'inherit' copies the inner one. ECN follows RFC 6040 either way. */
  tclass?: number | 'inherit';
  /** IPv6 underlay: a fixed flow label (default 0) or 'hash': one per inner flow. */
  flowLabel?: number | 'hash';
  /**
   * IPv4 underlay: Linux's pmtudisc. true (default): the outer header has DF set; false: DF
   * is copied from an inner IPv4 packet (and clear for IPv6 inside sit).
   */
  pmtudisc?: boolean;
  /** Default: the underlay port's MTU less the outer headers (40, 48 with the encapsulation limit option, 20 for IPv4). */
  mtu?: number;
  /** The port the outer IPv6 packets leave by. */
  underlay: string;
  /** Ethernet address of the underlay next hop towards remote. */
  nextHopMac: string;
  /** Default: the underlay port's address. */
  srcMac?: string;
  /** Where this tunnel's punted packets go, decapsulated (an L3 port: the tunnel's TUN). */
  slowpath?: string;
}

export type FlowOutput = { port: string; mac: string; srcMac?: string } | { tunnel: string };

/** One direction of a connection, by what the packet looks like where it enters. */
export interface FlowDirection {
  /** The port the packet arrives on. */
  in: string;
  proto: 'tcp' | 'udp';
  /** Addresses and ports of the (inner, when tunnelled) IP packet. */
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Set when the packet arrives inside this tunnel: it is decapsulated. */
  tunnel?: string;
  /** Where it leaves: a port with the next hop's MAC, or a tunnel (encapsulated). */
  out: FlowOutput;
  /**
   * Address and port translation (SNAT, DNAT, masquerade): the values the (inner) IP packet
   * leaves with, only the fields that change, as conntrack's reply tuple says. Applied
   * before the TTL decrement and encapsulation, so a flow can be NATed into a tunnel or
   * out of one.
   */
  nat?: FlowNat;
}

export interface FlowNat {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
}

export interface FlowPairOptions {
  original: FlowDirection;
  /** The reverse direction; omit for one-way flows. */
  reply?: FlowDirection;
}

export interface FlowCounter {
  packets: number;
  bytes: number;
}

export interface Flow {
  id: number;
  original: FlowDirection & FlowCounter;
  reply: (FlowDirection & FlowCounter) | null;
  idleSeconds: number;
  /**
   * Marked for teardown (a TCP SYN on a closing flow): packets go to the slow path until it
   * is reaped.
   */
  teardown: boolean;
  /** TCP FIN or RST seen: still forwarded; the connection is closing (the kernel's NF_FLOW_CLOSING). */
  closing: boolean;
}

export interface ReapedFlow {
  flow: Flow;
  reason: 'teardown' | 'idle';
}

export interface DataplaneStats {
  ports: Record<string, NativePortCounters>;
  fastpath: { packets: number; bytes: number };
  slowpath: { packets: number; reasons: Record<string, number> };
  drops: { packets: number; reasons: Record<string, number> };
  flows: { active: number; entries: number; capacity: number; added: number; removed: number; insertFailed: number };
  workers: { index: number; lcore: number; cpu: number; rxPackets: number; fastPackets: number; busyRatio: number; sleeps: number }[];
  adjacencies: number;
  /**
   * The mbuf pool: taken (rings, queues, lcore caches) and its size. In use that does not
   * come back to its idle level once traffic stops is a leak.
   */
  mbufs: { inUse: number; total: number };
  /** Observation records handed to onObservations, and lost on the way (queues full). */
  observations: { delivered: number; lost: number };
  /** Packets the kernel sent out of TAPs/TUNs, and those that found their port's queue full. */
  kernel: { rxPackets: number; txDropped: number };
}

const IPPROTO = { tcp: 6, udp: 17 } as const;
const DEFAULT_FLOW_CAPACITY = 1_048_576;
/**
 * Connections per page of Dataplane.flowPages(). Measured with 200k connections: a page of
 * 256 takes about 1.5 ms to decode and serialise; one of 2048 about 35 ms, not 8 times
 * that, since its short-lived objects outgrow V8's young generation and are copied out.
 */
const FLOW_PAGE_SIZE = 256;
const DEFAULT_MBUFS = 16_383;
const DEFAULT_MBUF_DATA_ROOM = 2048;
const IPV6_HEADER = 40;
const IPV4_HEADER = 20;
const TUNNEL_ENCAP_LIMIT_OPTION = 8;
/** Outer (underlay) and inner (payload) families of each mode. */
const TUNNEL_MODE_FAMILIES: Record<TunnelMode, { outer: 4 | 6; inner: 4 | 6 }> = {
  ip4ip6: { outer: 6, inner: 4 },
  ip6ip6: { outer: 6, inner: 6 },
  ipip: { outer: 4, inner: 4 },
  sit: { outer: 4, inner: 6 },
};

type State = 'new' | 'running' | 'stopped';

/** Call into the addon, rethrowing its errors as DataplaneErrors with this call site's stack. */
function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw DataplaneError.fromNative(err);
  }
}

function ipOf(text: string, what: string): IpAddress {
  try {
    return parseIp(text);
  } catch (err) {
    throw new InvalidArgumentError(`${what}: ${(err as Error).message}`);
  }
}

/** An address a packet may be translated to: a unicast host address of the flow's family. */
function natAddressOf(text: unknown, family: 4 | 6, what: string): Buffer {
  if (typeof text !== 'string') throw new InvalidArgumentError(`${what}: expected an IPv${family} address, found ${String(text)}`);
  const a = ipOf(text, what);
  if (a.family !== family) throw new InvalidArgumentError(`${what}: expected an IPv${family} address as the flow's, found ${text}`);
  const b = a.bytes;
  const unusable =
    family === 4
      ? b.readUInt32BE(0) === 0 || b.readUInt32BE(0) === 0xffffffff || ((b[0] as number) & 0xf0) === 0xe0
      : b.every((x) => x === 0) || b[0] === 0xff;
  if (unusable)
    throw new InvalidArgumentError(`${what}: expected a unicast address, found ${text} (unspecified, broadcast or multicast)`);
  return b;
}

function natOf(nat: FlowNat, family: 4 | 6, what: string): NativeFlowNat {
  if (typeof nat !== 'object' || nat === null) throw new InvalidArgumentError(`${what}: expected an object, found ${String(nat)}`);
  const out: NativeFlowNat = {};
  if (nat.src !== undefined) out.src = natAddressOf(nat.src, family, `${what}.src`);
  if (nat.dst !== undefined) out.dst = natAddressOf(nat.dst, family, `${what}.dst`);
  if (nat.sport !== undefined) out.sport = intIn(nat.sport, `${what}.sport`, 1, 65535);
  if (nat.dport !== undefined) out.dport = intIn(nat.dport, `${what}.dport`, 1, 65535);
  if (Object.keys(out).length === 0) throw new InvalidArgumentError(`${what}: expected at least one of src, dst, sport, dport`);
  return out;
}

function macOf(text: string, what: string): Buffer {
  try {
    return parseMac(text);
  } catch (err) {
    throw new InvalidArgumentError(`${what}: ${(err as Error).message}`);
  }
}

interface TunnelRecord {
  id: number;
  options: TunnelOptions;
  local: Buffer;
  remote: Buffer;
}

/** A packet trace to start (Dataplane.traceStart). */
export interface TraceOptions {
  /** Packets to trace, default 50; tracing turns itself off after them. */
  count?: number;
  /** Only packets arriving on this port or VLAN (a TAP or TUN: what the kernel sends out of it). */
  port?: string;
  /** A tcpdump-style filter expression (libpcap's), on the frame as the port sees it (a TUN's: the IP packet). */
  filter?: string;
}

/** One traced packet: what the fast path (or the slow-path thread) did with it. */
export interface TraceRecord {
  /** 0.. in the order packets were taken. */
  seq: number;
  /** When it was handled, milliseconds since the epoch. */
  time: number;
  /** The worker that handled it, or 'slowpath' for what the kernel sent out of a TAP or TUN. */
  worker: number | 'slowpath';
  inPort: string;
  /** Output port, or the TAP/TUN it was punted to; null when it went nowhere (dropped, held for reassembly). */
  outPort: string | null;
  decision: NativeTraceRecord['decision'];
  /** The punt or drop reason (exceptionReasons() names, or a slow-path drop's). */
  reason: string | null;
  /** Why it was punted, also when the punt ended in a drop. */
  puntReason: string | null;
  /** The flow (connection) it hit: the id `flows` lists; null on a miss. */
  flow: number | null;
  /** Which direction of that flow. */
  flowDirection: 'original' | 'reply' | null;
  wireLength: number;
  /** Its first bytes as received (up to 128): an Ethernet frame, or an IP packet from a TUN. */
  rx: Buffer;
  rxLink: 'ethernet' | 'ip';
  /** As sent, when it left somewhere. */
  tx: Buffer | null;
  txLength: number | null;
  txLink: 'ethernet' | 'ip' | null;
}

/** A page of trace records (Dataplane.traceRead). */
export interface TracePage {
  records: TraceRecord[];
  /** Packets are still being traced; false once the count is reached or the trace stopped. */
  running: boolean;
  /** Packets still to trace. */
  remaining: number;
  /** Records lost because they were not read fast enough. */
  lost: number;
}

export class Dataplane {
  private readonly addon: NativeAddon;
  private state: State = 'new';
  private readonly portIds = new Map<string, number>();
  private readonly portNames = new Map<number, string>();
  private readonly tunnels = new Map<string, TunnelRecord>();
  private workerCpus: number[] = [];
  private tscRate = 0;
  /** The EAL arguments the dataplane started with. */
  ealArgs: string[] = [];
  /** Whether EAL runs on hugepages (false: the --no-huge fallback). */
  hugepages = false;

  constructor(addon: NativeAddon = native()) {
    this.addon = addon;
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Initialise EAL, create the ports and start the workers. */
  start(options: StartOptions = {}): void {
    if (this.state !== 'new')
      throw new StateError(
        'ERR_FLOWGATE_STATE',
        this.state === 'running' ? 'the dataplane is already running' : 'a stopped dataplane cannot start again (EAL runs once per process)',
      );
    const cpus = options.workers?.cpus ?? [os.availableParallelism() - 1];
    const flowCapacity = options.flowCapacity ?? DEFAULT_FLOW_CAPACITY;
    const mbufs = options.mbufs ?? DEFAULT_MBUFS;
    const mbufDataRoom = options.mbufDataRoom ?? DEFAULT_MBUF_DATA_ROOM;
    const ports = options.ports ?? [];
    const plan = planEal({
      workerCpus: cpus,
      hugepages: options.hugepages ?? 'auto',
      memoryBytes: estimateMemory({ flowCapacity, workers: cpus.length, mbufs, mbufDataRoom }),
      pciDevices: ports.filter((p) => isPciDevice(p.device)).map((p) => p.device.split(',')[0] as string),
      extraArgs: options.eal ?? [],
      ...(options.logLevel === undefined ? {} : { logLevel: options.logLevel }),
    });
    if (plan.warning !== undefined) (options.onWarning ?? ((m: string) => process.emitWarning(m, 'FlowgateWarning')))(plan.warning);
    call(() =>
      this.addon.init({
        ealArgs: plan.args,
        flowCapacity,
        mbufs,
        mbufDataRoom,
        ...(options.rxDescriptors === undefined ? {} : { rxDesc: options.rxDescriptors }),
        ...(options.txDescriptors === undefined ? {} : { txDesc: options.txDescriptors }),
        idle: options.workers?.idle ?? 'busy',
      }),
    );
    this.ealArgs = plan.args;
    this.hugepages = plan.hugepages;
    this.workerCpus = cpus;
    this.tscRate = call(() => this.addon.stats()).tscHz;
    this.state = 'running';
    try {
      const listener = options.onObservations;
      if (listener !== undefined) {
        const reasons = this.addon.reasons().punt.map((r) => r.name);
        call(() => this.addon.onObservations((buf) => listener(decodeObservations(buf, reasons))));
      }
      for (const p of ports) this.addPort({ ...p, slowpath: undefined });
      // A VLAN after its parent: QinQ's 802.1Q VLANs after their 802.1ad one.
      const vlans = [...(options.vlans ?? [])];
      while (vlans.length > 0) {
        const ready = vlans.findIndex((v) => this.portIds.has(v.parent));
        const [v] = vlans.splice(ready === -1 ? 0 : ready, 1);
        if (v !== undefined) this.addVlan({ ...v, slowpath: undefined });
      }
      for (const p of [...ports, ...(options.vlans ?? [])]) if (p.slowpath !== undefined) this.setSlowpath(p.name, p.slowpath);
      if (options.paused !== true) call(() => this.addon.start());
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** Whether the workers are polling (false after start({ paused: true }) or pause()). */
  get polling(): boolean {
    return this.state === 'running' && this.addon.running();
  }

  /** Stop polling: the workers finish their burst and are joined. Ports, flows and counters stay. */
  pause(): void {
    this.requireRunning();
    call(() => this.addon.stop());
  }

  /** Start (or restart) the workers polling. */
  resume(): void {
    this.requireRunning();
    call(() => this.addon.start());
  }

  /** Stop the workers, close the ports and clean up EAL. Safe to call more than once. */
  stop(): void {
    if (this.state !== 'running') return;
    this.state = 'stopped';
    call(() => this.addon.shutdown());
    this.portIds.clear();
    this.portNames.clear();
    this.tunnels.clear();
  }

  private requireRunning(): void {
    if (this.state !== 'running')
      throw new StateError('ERR_FLOWGATE_STATE', `the dataplane is ${this.state === 'new' ? 'not started' : 'stopped'}`);
  }

  private portId(name: string, what: string): number {
    const id = this.portIds.get(name);
    if (id === undefined)
      throw new InvalidArgumentError(`${what}: no port named '${name}' (ports: ${[...this.portIds.keys()].join(', ') || 'none'})`);
    return id;
  }

  private tunnel(name: string, what: string): TunnelRecord {
    const t = this.tunnels.get(name);
    if (t === undefined)
      throw new InvalidArgumentError(`${what}: no tunnel named '${name}' (tunnels: ${[...this.tunnels.keys()].join(', ') || 'none'})`);
    return t;
  }

  // ---- ports ---------------------------------------------------------------------------

  addPort(options: PortOptions): PortInfo {
    this.requireRunning();
    if (typeof options.name !== 'string' || options.name === '') throw new InvalidArgumentError('port.name: expected a non-empty string');
    if (this.portIds.has(options.name)) throw new InvalidArgumentError(`port.name: a port named '${options.name}' exists already`);
    if (typeof options.device !== 'string' || options.device === '')
      throw new InvalidArgumentError(`port ${options.name}: device: expected a PCI address or vdev string`);
    const spec: NativePortSpec = { name: options.name, device: options.device };
    if (options.mtu !== undefined) spec.mtu = intIn(options.mtu, `port ${options.name}: mtu`, 68, 65535);
    if (options.mac !== undefined) spec.mac = macOf(options.mac, `port ${options.name}: mac`);
    if (options.promiscuous !== undefined) spec.promiscuous = options.promiscuous;
    if (options.poll !== undefined) spec.poll = options.poll;
    if (options.l3 !== undefined) spec.l3 = options.l3;
    const id = call(() => this.addon.addPort(spec));
    this.portIds.set(options.name, id);
    this.portNames.set(id, options.name);
    if (options.slowpath !== undefined) this.setSlowpath(options.name, options.slowpath);
    return this.port(options.name);
  }

  /**
   * Remove a port; flows in or out of it, and tunnels over it, stop using it first. Its
   * VLAN sub-interfaces go with it (their flows and tunnels too), as the kernel removes a
   * device's VLAN devices with it.
   */
  removePort(name: string): void {
    this.requireRunning();
    const id = this.portId(name, 'removePort');
    if (this.port(name).vlan !== null)
      throw new InvalidArgumentError(`removePort: '${name}' is a VLAN sub-interface (remove it with removeVlan)`);
    call(() => this.addon.removePort(id));
    this.forgetRemoved();
  }

  // ---- VLANs ---------------------------------------------------------------------------

  /** Forget the names of ports, VLANs and tunnels that the addon no longer has. */
  private forgetRemoved(): void {
    const live = new Set(call(() => this.addon.ports()));
    for (const [name, id] of this.portIds) {
      if (live.has(id)) continue;
      this.portIds.delete(name);
      this.portNames.delete(id);
    }
    for (const [tname, t] of this.tunnels) if (!this.portIds.has(t.options.underlay)) this.tunnels.delete(tname);
  }

  /** Add a VLAN sub-interface (see VlanOptions). */
  addVlan(options: VlanOptions): VlanInfo {
    this.requireRunning();
    if (typeof options.name !== 'string' || options.name === '') throw new InvalidArgumentError('vlan.name: expected a non-empty string');
    const what = `vlan ${options.name}`;
    if (this.portIds.has(options.name)) throw new InvalidArgumentError(`${what}: a port named '${options.name}' exists already`);
    const parent = this.portId(options.parent, `${what}: parent`);
    const protocol = options.protocol ?? '802.1Q';
    if (protocol !== '802.1Q' && protocol !== '802.1ad')
      throw new InvalidArgumentError(`${what}: protocol: expected '802.1Q' or '802.1ad', found ${String(protocol)}`);
    const parentVlan = this.port(options.parent).vlan;
    if (parentVlan !== null && (protocol !== '802.1Q' || parentVlan.protocol !== '802.1ad'))
      throw new InvalidArgumentError(`${what}: a VLAN on a VLAN must be 802.1Q on an 802.1ad VLAN (QinQ), found ${protocol} on ${parentVlan.protocol} ${options.parent}`);
    const spec: NativeVlanSpec = { name: options.name, parent, id: intIn(options.id, `${what}: id`, 1, 4094), ad: protocol === '802.1ad' };
    if (options.mtu !== undefined) spec.mtu = intIn(options.mtu, `${what}: mtu`, 68, 65535);
    if (options.mac !== undefined) spec.mac = macOf(options.mac, `${what}: mac`);
    if (options.pcp !== undefined) spec.pcp = intIn(options.pcp, `${what}: pcp`, 0, 7);
    const id = call(() => this.addon.addVlan(spec));
    this.portIds.set(options.name, id);
    this.portNames.set(id, options.name);
    if (options.slowpath !== undefined) this.setSlowpath(options.name, options.slowpath);
    return this.vlan(options.name);
  }

  /** Remove a VLAN sub-interface, its flows, the tunnels over it and (802.1ad) the VLANs on it. */
  removeVlan(name: string): void {
    this.requireRunning();
    const id = this.portId(name, 'removeVlan');
    if (this.port(name).vlan === null) throw new InvalidArgumentError(`removeVlan: '${name}' is a port, not a VLAN sub-interface`);
    call(() => this.addon.removeVlan(id));
    this.forgetRemoved();
  }

  vlan(name: string): VlanInfo {
    const p = this.port(name);
    if (p.vlan === null) throw new InvalidArgumentError(`vlan: '${name}' is a port, not a VLAN sub-interface`);
    return { name, parent: p.vlan.parent, id: p.vlan.id, protocol: p.vlan.protocol, mtu: p.mtu, mac: p.mac, pcp: p.vlan.pcp, slowpath: p.slowpath };
  }

  vlans(): VlanInfo[] {
    return this.ports()
      .filter((p) => p.vlan !== null)
      .map((p) => this.vlan(p.name));
  }

  /** Send port's punted packets to slowpath (null: drop them, counted). */
  setSlowpath(port: string, slowpath: string | null): void {
    this.requireRunning();
    const id = this.portId(port, 'setSlowpath');
    const sp = slowpath === null ? null : this.portId(slowpath, `port ${port}: slowpath`);
    call(() => this.addon.setPortSlowpath(id, sp));
  }

  setMtu(port: string, mtu: number): void {
    this.requireRunning();
    const id = this.portId(port, 'setMtu');
    call(() => this.addon.setPortMtu(id, intIn(mtu, `port ${port}: mtu`, 68, 65535)));
  }

  /** Limit the packets a port hands to the slow path (a token bucket); rate 0: no limit. */
  setPuntPolicer(port: string, policer: { rate: number; burst: number }): void {
    this.requireRunning();
    const id = this.portId(port, 'setPuntPolicer');
    call(() =>
      this.addon.setPuntPolicer(id, {
        rate: intIn(policer.rate, `port ${port}: punt rate`, 0, 2 ** 32 - 1),
        burst: intIn(policer.burst, `port ${port}: punt burst`, 1, 2 ** 32 - 1),
      }),
    );
  }

  /** The TSC now: observation records carry TSC times. */
  tsc(): number {
    return this.addon.tsc();
  }

  /** TSC ticks per second. */
  get tscHz(): number {
    this.requireRunning();
    return this.tscRate;
  }

  /** Per-flow packet and byte counters (nft flowtable's `counter` flag); on by default. */
  setFlowCounters(on: boolean): void {
    this.requireRunning();
    call(() => this.addon.setFlowCounters(on));
  }

  /** The name of a port id (observation records carry ids). */
  portName(id: number): string | undefined {
    return this.portNames.get(id);
  }

  /** The name of a tunnel id. */
  tunnelName(id: number): string | undefined {
    for (const [name, t] of this.tunnels) if (t.id === id) return name;
    return undefined;
  }

  port(name: string): PortInfo {
    this.requireRunning();
    const info = call(() => this.addon.portInfo(this.portId(name, 'port')));
    const v = info.vlan;
    return {
      ...info,
      mac: formatMac(info.mac),
      slowpath: info.slowpath === null ? null : (this.portNames.get(info.slowpath) ?? null),
      vlan: v === null ? null : { parent: this.portNames.get(v.parent) ?? String(v.parent), id: v.id, protocol: v.ad ? '802.1ad' : '802.1Q', pcp: v.pcp },
    };
  }

  ports(): PortInfo[] {
    this.requireRunning();
    return [...this.portIds.keys()].map((name) => this.port(name));
  }

  // ---- tunnels -------------------------------------------------------------------------

  private tunnelParams(o: TunnelOptions): { params: NativeTunnelParams; local: Buffer; remote: Buffer } {
    const what = `tunnel ${o.name}`;
    const mode = o.mode ?? 'ip4ip6';
    const families = TUNNEL_MODE_FAMILIES[mode];
    if (families === undefined) throw new InvalidArgumentError(`${what}: mode: expected 'ip4ip6', 'ip6ip6', 'ipip' or 'sit', found ${String(mode)}`);
    const local = ipOf(o.local, `${what}: local`);
    const remote = ipOf(o.remote, `${what}: remote`);
    if (local.family !== families.outer || remote.family !== families.outer)
      throw new InvalidArgumentError(`${what}: ${mode} tunnels have IPv${families.outer} endpoints, found local ${o.local} and remote ${o.remote}`);
    const underlay = this.port(o.underlay);
    let headers = IPV4_HEADER;
    let encapLimit: number | null = null;
    if (families.outer === 6) {
      encapLimit = o.encapLimit === undefined ? 4 : o.encapLimit === 'none' ? null : intIn(o.encapLimit, `${what}: encapLimit`, 0, 255);
      headers = IPV6_HEADER + (encapLimit === null ? 0 : TUNNEL_ENCAP_LIMIT_OPTION);
      if (o.pmtudisc !== undefined) throw new InvalidArgumentError(`${what}: pmtudisc is for tunnels over IPv4, not ${mode}`);
    } else {
      for (const key of ['encapLimit', 'flowLabel'] as const)
        if (o[key] !== undefined) throw new InvalidArgumentError(`${what}: ${key} is for tunnels over IPv6, not ${mode}`);
    }
    const mtu = o.mtu === undefined ? underlay.mtu - headers : intIn(o.mtu, `${what}: mtu`, 68, underlay.mtu - headers);
    const params: NativeTunnelParams = {
      mode,
      local: local.bytes,
      remote: remote.bytes,
      encapLimit,
      hopLimit: o.hopLimit === undefined ? 64 : o.hopLimit === 'inherit' ? 0 : intIn(o.hopLimit, `${what}: hopLimit`, 1, 255),
      tclass: o.tclass === undefined ? 0 : o.tclass === 'inherit' ? null : intIn(o.tclass, `${what}: tclass`, 0, 255),
      flowLabel: o.flowLabel === undefined || o.flowLabel === 'hash' ? 0 : intIn(o.flowLabel, `${what}: flowLabel`, 0, 0xfffff),
      flowLabelHash: o.flowLabel === 'hash',
      pmtudisc: o.pmtudisc ?? true,
      mtu,
      port: underlay.id,
      dstMac: macOf(o.nextHopMac, `${what}: nextHopMac`),
      srcMac: o.srcMac === undefined ? parseMac(underlay.mac) : macOf(o.srcMac, `${what}: srcMac`),
      slowpathPort: o.slowpath === undefined ? null : this.portId(o.slowpath, `${what}: slowpath`),
    };
    return { params, local: local.bytes, remote: remote.bytes };
  }

  addTunnel(options: TunnelOptions): void {
    this.requireRunning();
    if (this.tunnels.has(options.name)) throw new InvalidArgumentError(`tunnel.name: a tunnel named '${options.name}' exists already`);
    const { params, local, remote } = this.tunnelParams(options);
    const id = call(() => this.addon.addTunnel(params));
    this.tunnels.set(options.name, { id, options: { ...options }, local, remote });
  }

  /** Change a tunnel in place (e.g. a new next-hop MAC); its flows stay unless the endpoints change. */
  updateTunnel(options: TunnelOptions): void {
    this.requireRunning();
    const t = this.tunnel(options.name, 'updateTunnel');
    const { params, local, remote } = this.tunnelParams(options);
    call(() => this.addon.updateTunnel(t.id, params));
    this.tunnels.set(options.name, { id: t.id, options: { ...options }, local, remote });
  }

  removeTunnel(name: string): void {
    this.requireRunning();
    const t = this.tunnel(name, 'removeTunnel');
    call(() => this.addon.removeTunnel(t.id));
    this.tunnels.delete(name);
  }

  /** A tunnel's MTUs: configured, the underlay path's learnt from packet too big, and the effective one. */
  tunnelMtu(name: string): TunnelMtu {
    this.requireRunning();
    const t = this.tunnel(name, 'tunnelMtu');
    const m = call(() => this.addon.tunnelMtu(t.id));
    return { name, mtu: m.mtu, pathMtu: m.pathMtu, effectiveMtu: m.effectiveMtu };
  }

  /**
   * Lowers the path MTU of the tunnels about whose packets the workers received ICMPv6
   * packet too big (or ICMPv4 fragmentation needed, over IPv4) since the last call (the fast path then sends larger packets to the
   * kernel), forgets path MTUs learnt `expiresSeconds` ago or more (default 600, Linux's
   * net.ipv6.route.mtu_expires), and returns the tunnels whose MTUs changed.
   */
  applyPathMtuReports(options: { expiresSeconds?: number } = {}): TunnelMtu[] {
    this.requireRunning();
    return call(() => this.addon.applyPathMtuReports(options)).flatMap((m) => {
      const name = this.tunnelName(m.id);
      return name === undefined ? [] : [{ name, mtu: m.mtu, pathMtu: m.pathMtu, effectiveMtu: m.effectiveMtu }];
    });
  }

  // ---- flows ---------------------------------------------------------------------------

  private nativeFlow(d: FlowDirection, what: string): NativeFlowSpec {
    const proto = IPPROTO[d.proto];
    if (proto === undefined) throw new InvalidArgumentError(`${what}.proto: expected 'tcp' or 'udp', found ${String(d.proto)}`);
    const src = ipOf(d.src, `${what}.src`);
    const dst = ipOf(d.dst, `${what}.dst`);
    if (src.family !== dst.family) throw new InvalidArgumentError(`${what}: src ${d.src} and dst ${d.dst} are of different families`);
    const spec: NativeFlowSpec = {
      inPort: this.portId(d.in, `${what}.in`),
      l3: src.family,
      l4: proto,
      src: src.bytes,
      dst: dst.bytes,
      sport: intIn(d.sport, `${what}.sport`, 0, 65535),
      dport: intIn(d.dport, `${what}.dport`, 0, 65535),
      action: 'fwd4',
    };
    const tunnelCarries = (t: TunnelRecord, field: string) => {
      const mode = t.options.mode ?? 'ip4ip6';
      const inner = TUNNEL_MODE_FAMILIES[mode].inner;
      if (src.family !== inner) throw new InvalidArgumentError(`${what}.${field}: ${mode} tunnels carry IPv${inner}, found ${d.src}`);
      return t.id;
    };
    if (d.tunnel !== undefined) spec.tunnel = tunnelCarries(this.tunnel(d.tunnel, `${what}.tunnel`), 'tunnel');
    if ('tunnel' in d.out) {
      if (d.tunnel !== undefined) throw new InvalidArgumentError(`${what}: a flow cannot both arrive in and leave by a tunnel`);
      spec.action = 'encap';
      spec.tunnel = tunnelCarries(this.tunnel(d.out.tunnel, `${what}.out.tunnel`), 'out.tunnel');
    } else {
      spec.action = d.tunnel !== undefined ? 'decap' : src.family === 4 ? 'fwd4' : 'fwd6';
      spec.outPort = this.portId(d.out.port, `${what}.out.port`);
      spec.dstMac = macOf(d.out.mac, `${what}.out.mac`);
      if (d.out.srcMac !== undefined) spec.srcMac = macOf(d.out.srcMac, `${what}.out.srcMac`);
    }
    if (d.nat !== undefined) spec.nat = natOf(d.nat, src.family, `${what}.nat`);
    return spec;
  }

  /** Offload a connection: both directions together (or one, for one-way traffic). Returns its id. */
  addFlow(options: FlowPairOptions): number {
    this.requireRunning();
    const orig = this.nativeFlow(options.original, 'original');
    const reply = options.reply === undefined ? null : this.nativeFlow(options.reply, 'reply');
    return call(() => this.addon.addFlowPair(orig, reply));
  }

  /** Remove a connection (both directions). False when no flow has this id. */
  removeFlow(id: number): boolean {
    this.requireRunning();
    return call(() => this.addon.removeFlow(id));
  }

  flow(id: number): Flow | undefined {
    this.requireRunning();
    const record = call(() => this.addon.getFlow(id));
    const [f] = record === null ? [] : decodeFlowRecords(record);
    return f === undefined ? undefined : this.flowOf(f);
  }

  /** Every offloaded connection. */
  flows(): Flow[] {
    return [...this.flowPages(Number.MAX_SAFE_INTEGER)].flat();
  }

  /**
   * The connections a page at a time, so that a caller listing a large table can let the
   * event loop run between pages. Flows added or removed meanwhile may be missed or listed
   * once, never twice.
   */
  *flowPages(pageSize = FLOW_PAGE_SIZE): Generator<Flow[], void, undefined> {
    let from = 0;
    do {
      this.requireRunning();
      const page = call(() => this.addon.listFlows({ from, max: Math.min(pageSize, 0xffffffff) }));
      yield decodeFlowRecords(page.records).map((f) => this.flowOf(f));
      from = page.next;
    } while (from !== 0);
  }

  /** Remove flows marked for teardown and flows idle longer than their protocol's timeout (seconds). */
  reap(timeouts: { tcp: number; udp: number }): ReapedFlow[] {
    this.requireRunning();
    return decodeReapedRecords(call(() => this.addon.reap({ tcpTimeout: timeouts.tcp, udpTimeout: timeouts.udp }))).map((r) => ({
      flow: this.flowOf(r.flow),
      reason: r.reason,
    }));
  }

  flushFlows(): number {
    this.requireRunning();
    return call(() => this.addon.flushFlows());
  }

  /**
   * The next hop on `port` that had MAC `from` for the (inner) packets of `family` has MAC
   * `to` now (its neighbour entry of that family changed): every such flow sent to it
   * follows at once, in place, none is removed; flows of the other family keep `from`.
   * Returns how many next hops (adjacencies) changed: 0 when no flow goes to `from`.
   */
  rewriteNextHop(port: string, family: 4 | 6, from: string, to: string): number {
    this.requireRunning();
    const id = this.portId(port, 'port');
    if (family !== 4 && family !== 6) throw new InvalidArgumentError(`family: expected 4 or 6, found ${String(family)}`);
    return call(() => this.addon.rewriteNextHop(id, { family, from: macOf(from, 'from'), to: macOf(to, 'to') }));
  }

  private directionOf(f: NativeFlowSpec, counter: FlowCounter): FlowDirection & FlowCounter {
    const family = f.l3;
    const d: FlowDirection & FlowCounter = {
      in: this.portNames.get(f.inPort) ?? String(f.inPort),
      proto: f.l4 === IPPROTO.tcp ? 'tcp' : 'udp',
      src: formatIp({ family, bytes: f.src }),
      dst: formatIp({ family, bytes: f.dst }),
      sport: f.sport,
      dport: f.dport,
      out: { tunnel: '' },
      ...counter,
    };
    if (f.action === 'decap') d.tunnel = this.tunnelName(f.tunnel as number);
    if (f.action === 'encap') {
      d.out = { tunnel: this.tunnelName(f.tunnel as number) ?? String(f.tunnel) };
    } else {
      d.out = {
        port: this.portNames.get(f.outPort as number) ?? String(f.outPort),
        mac: formatMac(f.dstMac as Buffer),
        srcMac: formatMac(f.srcMac as Buffer),
      };
    }
    if (f.nat !== undefined) {
      const n: FlowNat = {};
      if (f.nat.src !== undefined) n.src = formatIp({ family, bytes: f.nat.src });
      if (f.nat.dst !== undefined) n.dst = formatIp({ family, bytes: f.nat.dst });
      if (f.nat.sport !== undefined) n.sport = f.nat.sport;
      if (f.nat.dport !== undefined) n.dport = f.nat.dport;
      d.nat = n;
    }
    return d;
  }

  private flowOf(f: NativeFlowInfo): Flow {
    return {
      id: f.handle,
      original: this.directionOf(f.orig, f.origCounter),
      reply: f.reply === null ? null : this.directionOf(f.reply, f.replyCounter),
      idleSeconds: f.idleSeconds,
      teardown: f.teardown,
      closing: f.closing,
    };
  }

  // ---- observability -------------------------------------------------------------------

  stats(): DataplaneStats {
    this.requireRunning();
    const s = call(() => this.addon.stats());
    const ports: Record<string, NativePortCounters> = {};
    for (const [name, id] of this.portIds) ports[name] = call(() => this.addon.portCounters(id));
    const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
    return {
      ports,
      fastpath: { packets: s.fastPackets, bytes: s.fastBytes },
      slowpath: { packets: sum(s.punts), reasons: s.punts },
      drops: { packets: sum(s.drops), reasons: s.drops },
      flows: {
        active: s.flows.active,
        entries: s.flows.entries,
        capacity: s.flows.capacity,
        added: s.flows.added,
        removed: s.flows.removed,
        insertFailed: s.flows.insertFailed,
      },
      workers: s.workers.map((w) => {
        const total = w.busyCycles + w.idleCycles;
        return {
          index: w.index,
          lcore: w.lcore,
          cpu: this.workerCpus[w.index] ?? -1,
          rxPackets: w.rxPackets,
          fastPackets: w.fastPackets,
          busyRatio: total === 0 ? 0 : w.busyCycles / total,
          sleeps: w.sleeps,
        };
      }),
      adjacencies: s.adjacencies,
      mbufs: { inUse: s.mbufs.inUse, total: s.mbufs.total },
      observations: {
        delivered: s.slowpath.observations,
        lost: s.slowpath.observationsLost + s.observationsLost,
      },
      kernel: { rxPackets: s.slowpath.kernelRxPackets, txDropped: s.slowpath.kernelTxDropped },
    };
  }

  /**
   * The NIC extended statistics of a port (rte_eth_xstats, what ethtool -S shows for a
   * kernel driver), name to value in the driver's order. A VLAN sub-interface has no NIC.
   */
  xstats(port: string): Record<string, number> {
    this.requireRunning();
    const id = this.portId(port, 'xstats');
    if (this.port(port).vlan !== null) throw new InvalidArgumentError(`xstats: '${port}' is a VLAN sub-interface, which has no NIC statistics of its own`);
    return call(() => this.addon.portXstats(id));
  }

  // ---- packet trace --------------------------------------------------------------------

  /**
   * Trace the next `count` packets that the workers and the slow-path thread handle (see
   * TraceOptions). One trace at a time: ERR_FLOWGATE_STATE until traceStop(). A filter
   * that libpcap refuses is ERR_FLOWGATE_INVALID_ARGUMENT with libpcap's message.
   */
  traceStart(options: TraceOptions = {}): void {
    this.requireRunning();
    const count = options.count === undefined ? DEFAULT_TRACE_COUNT : intIn(options.count, 'trace: count', 1, Number.MAX_SAFE_INTEGER);
    const native: { count: number; port?: number; filter?: string } = { count };
    if (options.port !== undefined) native.port = this.portId(options.port, 'port');
    if (options.filter !== undefined) {
      if (typeof options.filter !== 'string') throw new InvalidArgumentError('trace: filter: expected a string');
      native.filter = options.filter;
    }
    call(() => this.addon.traceStart(native));
  }

  /** The records traced since the last read, at most `max`. */
  traceRead(max = 256): TracePage {
    this.requireRunning();
    const page = call(() => this.addon.traceRead(intIn(max, 'traceRead: max', 1, 2 ** 32 - 1)));
    const nowTsc = this.addon.tsc();
    const nowMs = Date.now();
    const name = (id: number | null) => (id === null ? null : (this.portNames.get(id) ?? `port ${id}`));
    return {
      running: page.running,
      remaining: page.remaining,
      lost: page.lost,
      records: page.records.map((r) => ({
        seq: r.seq,
        time: nowMs - ((nowTsc - r.tsc) / this.tscRate) * 1000,
        worker: r.worker ?? 'slowpath',
        inPort: name(r.inPort) ?? '',
        outPort: name(r.outPort),
        decision: r.decision,
        reason: r.reason,
        puntReason: r.puntReason,
        flow: r.flow,
        flowDirection: r.flow === null ? null : r.flowReply ? 'reply' : 'original',
        wireLength: r.wireLength,
        rx: r.rx,
        rxLink: r.rxLink,
        tx: r.tx,
        txLength: r.txLength,
        txLink: r.txLink,
      })),
    };
  }

  /** Stop the trace (if its count has not already) and forget it. Records not read are lost. */
  traceStop(): void {
    if (this.state !== 'running') return;
    call(() => this.addon.traceStop());
  }

  // ---- port capture --------------------------------------------------------------------

  /**
   * Starts copying a port's frames into options.fd as pcapng; returns the capture's id.
   * One capture per port at a time. A filter libpcap refuses fails with its message.
   */
  startCapture(options: CaptureOptions): number {
    this.requireRunning();
    const direction = options.direction ?? 'both';
    if (!Object.hasOwn(CAPTURE_DIRECTIONS, direction))
      throw new InvalidArgumentError(`capture.direction: expected rx, tx or both, found ${String(direction)}`);
    const port = this.portId(options.port, 'capture.port');
    return call(() =>
      this.addon.startCapture({
        port,
        direction: CAPTURE_DIRECTIONS[direction],
        snaplen: intIn(options.snaplen ?? 262144, 'capture.snaplen', 64, 262144),
        count: intIn(options.count ?? 0, 'capture.count', 0, 2 ** 32 - 1),
        filter: options.filter ?? '',
        fd: intIn(options.fd, 'capture.fd', 0, 2 ** 31 - 1),
      }),
    );
  }

  captureStats(id: number): CaptureStats {
    this.requireRunning();
    return call(() => this.addon.captureStats(id));
  }

  /** Stops a capture (ended or not): what is queued is written, its descriptor closed. Returns its final counts. */
  stopCapture(id: number): CaptureStats {
    this.requireRunning();
    return call(() => this.addon.stopCapture(id));
  }

  /** Raw worker cycle counters and the TSC rate, for benchmarks. */
  cycles(): { tscHz: number; workers: { busyCycles: number; idleCycles: number; rxPackets: number; fastPackets: number }[] } {
    this.requireRunning();
    const s = call(() => this.addon.stats());
    return { tscHz: s.tscHz, workers: s.workers };
  }
}

/** The punt and drop reasons the fast path counts, with what each means. */
export function exceptionReasons(): { punt: { name: string; description: string }[]; drop: { name: string; description: string }[] } {
  return native().reasons();
}
