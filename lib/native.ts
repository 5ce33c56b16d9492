/**
 * The one place that loads the native addon and declares its whole surface. The C++ side
 * is native/addon/addon.cc (+ testing.cc); a change there updates this file in the same
 * commit. Everything here is a thin, positional binding: validation and naming happen in
 * lib/dataplane.ts.
 */
import * as path from 'node:path';

import { FlowgateError } from './errors';
import type { AddressEvent, KernelChange, LinkEvent, NeighborEvent, NexthopEvent, ResyncEvent, RouteCounts, RouteEvent, RuleEvent } from './slowpath/monitor';

export type NativeIdleMode = 'busy' | 'adaptive';
export type NativeFlowAction = 'fwd4' | 'fwd6' | 'decap' | 'encap';
/** Linux's tunnel mode names (native/dp/tunnel.h tunnel_mode). */
export type NativeTunnelMode = 'ip4ip6' | 'ip6ip6' | 'ipip' | 'sit';

export interface NativeInitOptions {
  ealArgs: string[];
  flowCapacity?: number;
  mbufs?: number;
  mbufDataRoom?: number;
  rxDesc?: number;
  txDesc?: number;
  idle?: NativeIdleMode;
}

export interface NativePortSpec {
  name: string;
  device: string;
  mtu?: number;
  mac?: Buffer;
  promiscuous?: boolean;
  poll?: boolean;
  l3?: boolean;
}

/** A VLAN sub-interface of `parent` (a port id, or an 802.1ad VLAN's for QinQ). */
export interface NativeVlanSpec {
  name: string;
  parent: number;
  /** 1..4094 */
  id: number;
  /** 802.1ad (TPID 0x88a8) instead of 802.1Q. */
  ad?: boolean;
  /** Default the parent's. */
  mtu?: number;
  mac?: Buffer;
  /** 0..7: of tags pushed onto frames that arrived untagged. */
  pcp?: number;
}

export interface NativePortInfo {
  id: number;
  name: string;
  device: string;
  driver: string;
  mac: Buffer;
  mtu: number;
  rxQueues: number;
  txQueues: number;
  linkUp: boolean;
  linkSpeedMbps: number;
  l3: boolean;
  poll: boolean;
  slowpath: number | null;
  /** A VLAN sub-interface's parent (port id), VLAN id, protocol and PCP; null for an ethdev port. */
  vlan: { parent: number; id: number; ad: boolean; pcp: number } | null;
}

export interface NativePortCounters {
  rxPackets: number;
  rxBytes: number;
  rxMissed: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txBytes: number;
  txErrors: number;
  txDropped: number;
}

export interface NativeTunnelParams {
  /** Default ip4ip6. */
  mode?: NativeTunnelMode;
  /** 16 bytes over IPv6, 4 over IPv4. */
  local: Buffer;
  remote: Buffer;
  /** null: no destination options header (always, over IPv4). */
  encapLimit: number | null;
  /** 0: inherit the inner TTL. */
  hopLimit: number;
  /** null: inherit the inner TOS. */
  tclass: number | null;
  flowLabel: number;
  flowLabelHash: boolean;
  /** IPv4 underlay: DF on every packet (default), else DF from the inner IPv4 packet. */
  pmtudisc?: boolean;
  mtu: number;
  port: number;
  dstMac: Buffer;
  srcMac: Buffer;
  slowpathPort: number | null;
}

export interface NativeFlowSpec {
  inPort: number;
  l3: 4 | 6;
  l4: number;
  src: Buffer;
  dst: Buffer;
  sport: number;
  dport: number;
  /** Keys out of the addon (parse, records) of tunnelled packets: the mode, and the outer addresses as the key holds them (ip6ip6: only their fold). */
  tunnelMode?: NativeTunnelMode;
  outerSrc?: Buffer;
  outerDst?: Buffer;
  outerFold?: Buffer;
  action: NativeFlowAction;
  outPort?: number;
  dstMac?: Buffer;
  srcMac?: Buffer;
  /** encap: the tunnel out; decap: the tunnel in (the dataplane adds its outer part to the key). */
  tunnel?: number;
  nat?: NativeFlowNat;
}

/**
 * What a flow direction's packets leave with (SNAT/DNAT, from the connection's reply
 * tuple): only the fields that change. Addresses of the key's family; ports 1..65535.
 */
export interface NativeFlowNat {
  src?: Buffer;
  dst?: Buffer;
  sport?: number;
  dport?: number;
}

export interface NativeCounter {
  packets: number;
  bytes: number;
}

export interface NativeFlowInfo {
  handle: number;
  orig: NativeFlowSpec;
  reply: NativeFlowSpec | null;
  origCounter: NativeCounter;
  replyCounter: NativeCounter;
  idleSeconds: number;
  /** Marked for teardown (either direction). */
  teardown: boolean;
  /** TCP FIN or RST seen (either direction); still forwarded. */
  closing: boolean;
}

export interface NativeReaped {
  flow: NativeFlowInfo;
  reason: 'teardown' | 'idle';
}

export interface NativeWorkerStats {
  index: number;
  lcore: number;
  rxPackets: number;
  fastPackets: number;
  busyCycles: number;
  idleCycles: number;
  sleeps: number;
}

export interface NativeStats {
  workers: NativeWorkerStats[];
  rxPackets: number;
  fastPackets: number;
  fastBytes: number;
  punts: Record<string, number>;
  drops: Record<string, number>;
  flows: {
    active: number;
    entries: number;
    capacity: number;
    spilled: number;
    added: number;
    removed: number;
    insertFailed: number;
  };
  adjacencies: number;
  mbufs: { inUse: number; total: number };
  /** Punt records the workers could not queue for the slow-path thread. */
  observationsLost: number;
  slowpath: {
    kernelRxPackets: number;
    kernelTxDropped: number;
    tunWrongFamily: number;
    noHeadroom: number;
    observations: number;
    observationsLost: number;
  };
  tscHz: number;
  nowSeconds: number;
}

export interface NativeReason {
  name: string;
  description: string;
}

/** What became of a traced packet (native/dp/trace.h trace_decision). */
export type NativeTraceDecision = 'forward' | 'decap' | 'encap' | 'punt' | 'drop';

/** One traced packet (native/dp/trace.h trace_record). */
export interface NativeTraceRecord {
  seq: number;
  tsc: number;
  /** The worker's index; null for the slow-path thread (packets from a TAP or TUN). */
  worker: number | null;
  inPort: number;
  /** Output port, or the TAP/TUN it was punted to; null when it went nowhere. */
  outPort: number | null;
  decision: NativeTraceDecision;
  /** The punt or drop reason (a reasons() name, or a slow-path drop's); null otherwise. */
  reason: string | null;
  /** Why it was punted, also when the punt ended in a drop. */
  puntReason: string | null;
  /** The connection's flow handle; null on a miss, or when the flow is gone since. */
  flow: number | null;
  flowReply: boolean;
  wireLength: number;
  rxLink: 'ethernet' | 'ip';
  /** Up to 128 bytes as received. */
  rx: Buffer;
  /** As sent, when it was sent somewhere. */
  txLength: number | null;
  txLink: 'ethernet' | 'ip' | null;
  tx: Buffer | null;
}

/** Test-only exports: the fast path's packet code without EAL. */
export interface NativeTesting {
  parse(
    frame: Buffer,
    inPort: number,
    /** mac: the receiving port's address, checked against the frame's destination (none is checked without it). */
    options?: { segments?: number[]; mac?: Buffer },
  ): {
    verdict: 'ok' | 'punt' | 'drop';
    reason: string;
    key: Omit<NativeFlowSpec, 'action'>;
    keyBytes: Buffer;
    meta: { l3Off: number; l3Len: number; outerLen: number; tcpFlags: number };
  };
  process(
    setup: {
      capacity?: number;
      /** The flowtable's hash seed; random when absent, as in the dataplane. */
      hashSeed?: number;
      now?: number;
      nowTsc?: number;
      counters?: boolean;
      observe?: boolean;
      /** mac: the port's own address (frames to others are not forwarded); multiseg: tx takes chains (default true). */
      ports: { id: number; mac?: Buffer; mtu?: number; slowpath?: number | null; l3?: boolean; multiseg?: boolean; puntCost?: number; puntBurst?: number }[];
      /** VLAN sub-interfaces: id from the first id past the ethdev ports (32), parent before child. */
      vlans?: { id: number; parent: number; vid: number; ad?: boolean; pcp?: number; mtu?: number; mac?: Buffer; slowpath?: number | null }[];
      /** pathMtu: the tunnel's learnt underlay path MTU (default none). */
      tunnels?: (NativeTunnelParams & { id: number; pathMtu?: number })[];
      flows?: { orig: NativeFlowSpec; reply?: NativeFlowSpec; teardown?: boolean; closing?: boolean }[];
    },
    packets: { port: number; frame: Buffer; headroom?: number; segments?: number[] }[],
    options?: { burst?: number; now?: number },
  ): {
    /** segments: the data length of each mbuf segment of the output packet. */
    results: { port: number | null; frame: Buffer | null; segments?: number[]; reason?: string }[];
    stats: Pick<NativeStats, 'rxPackets' | 'fastPackets' | 'fastBytes' | 'punts' | 'drops'>;
    flows: {
      orig: { packets: number; bytes: number; teardown: boolean; closing: boolean; lastSeen: number };
      reply: { packets: number; bytes: number; teardown: boolean; closing: boolean; lastSeen: number } | null;
    }[];
    /** Packed observation records, when setup.observe. */
    observations?: Buffer;
    /** Path MTUs the packets reported (ICMPv6 packet too big about a tunnel), per tunnel. */
    pathMtuReports: { tunnel: number; mtu: number }[];
  };
  flowtableExercise(options: { capacity: number; count: number; seed?: number; sequential?: boolean }): {
    inserted: number;
    full: number;
    duplicate: number;
    spilled: number;
    buckets: number;
    foundSingle: number;
    foundBulk: number;
    wrong: number;
    removed: number;
    foundAfterRemove: number;
    activeAfterRemove: number;
  };
  flowtableConcurrency(options: { capacity: number; stable: number; churn: number; rounds: number; readers: number; buckets?: number }): {
    stableMisses: number;
    reused: number;
    lookups: number;
    churnHits: number;
    insertFailures: number;
    maxSpilled: number;
  };
  flowtableCollide(options: { capacity: number; craftSeed: number; hashSeed?: number }): { placed: number; victimPlaced: boolean; seed: number };
  flowChurn(options: { flows: number; rounds: number; seed?: number }): {
    bursts: number;
    forwarded: number;
    wrongMac: number;
    removed: number;
    added: number;
    clashes: number;
    reaped: number;
  };
  keyLayout(): { size: number; entrySize: number };
  observationLayout(): Record<string, number>;
  flowRecordLayout(): Record<string, number>;
}

/** ctnetlink (native/addon/conntrack.cc): packed records, decoded by lib/conntrack.ts. */
export interface NativeConntrack {
  get(tuples: Buffer): Promise<Buffer>;
  update(updates: Buffer): Promise<{ ok: number; notFound: number; failed: number }>;
  dump(): Promise<Buffer>;
  stats(): { events: number; enobufs: number; resyncs: number; gets: number; updates: number; errors: number };
  close(): void;
}

export interface NativeConntrackClass {
  new (options: {
    events: ('new' | 'update' | 'destroy')[];
    rcvbuf?: number;
    /** A namespace file (/run/netns/NAME): the sockets are opened in that namespace. */
    netns?: string;
    onEvents: (records: Buffer, kind: 'events' | 'resync') => void;
  }): NativeConntrack;
  /** Offsets and sizes of the packed records (record, recordTuple, tuple, update). */
  layout(): Record<'record' | 'recordTuple' | 'tuple' | 'update', Record<string, number>>;
}

/**
 * rtnetlink (native/addon/rtnl.cc): plain objects of the shapes lib/slowpath/monitor.ts
 * declares, used by lib/slowpath/rtnl.ts.
 */
export interface NativeRtnl {
  links(): Promise<LinkEvent[]>;
  addresses(): Promise<AddressEvent[]>;
  neighbors(): Promise<NeighborEvent[]>;
  /** address: 4 or 16 bytes. null when `dev` has no entry for it (or there is no `dev`). */
  neighbor(dev: string, address: Buffer): Promise<NeighborEvent | null>;
  /** table and protocol: a name or a number; absent: any. */
  routes(filter: { family: 4 | 6; table?: string | number; protocol?: string | number }): Promise<RouteEvent[]>;
  rules(): Promise<RuleEvent[]>;
  nexthops(): Promise<NexthopEvent[]>;
  /** address: 4 or 16 bytes. null when the kernel would not forward there. */
  routeGet(address: Buffer): Promise<RouteEvent | null>;
  countRoutes(): Promise<RouteCounts>;
  stats(): { events: number; enobufs: number; resyncs: number; errors: number; routes: RouteCounts; routesSynced: boolean };
  close(): void;
}

export interface NativeRtnlClass {
  new (options: {
    rcvbuf?: number;
    /** A namespace file (/run/netns/NAME): the sockets are opened in that namespace. */
    netns?: string;
    onEvents: (payload: KernelChange[] | Omit<ResyncEvent, 'kind'>, kind: 'events' | 'resync') => void;
  }): NativeRtnl;
}

/** A tunnel's MTUs: configured, underlay path (learnt from packet too big; null: none) and effective. */
export interface NativeTunnelMtu {
  id: number;
  mtu: number;
  pathMtu: number | null;
  effectiveMtu: number;
}

/** Direction bits: 1 rx, 2 tx, 3 both. */
export interface NativeCaptureOptions {
  port: number;
  direction: 1 | 2 | 3;
  snaplen?: number;
  /** Packets to write before the capture ends by itself; 0: until stopped. */
  count?: number;
  /** A tcpdump expression (libpcap); empty: every frame. */
  filter?: string;
  fd: number;
}

export interface NativeCaptureStats {
  /** Packets written, the filter's matches, copies lost (pool or ring full), bytes written. */
  written: number;
  matched: number;
  lost: number;
  bytes: number;
  end: 'running' | 'count' | 'reader_gone' | 'write_error' | 'stopped';
  /** Whether the filter runs JIT-compiled (else rte_bpf's interpreter; false without a filter). */
  jit: boolean;
}

export interface NativeAddon {
  init(options: NativeInitOptions): void;
  shutdown(): void;
  addPort(spec: NativePortSpec): number;
  removePort(port: number): void;
  /** A VLAN sub-interface: a port id above the ethdev ports'. */
  addVlan(spec: NativeVlanSpec): number;
  /** Removes the VLANs on it too (QinQ), as removePort removes a port's. */
  removeVlan(port: number): void;
  setPortSlowpath(port: number, slowpath: number | null): void;
  setPortMtu(port: number, mtu: number): void;
  setPuntPolicer(port: number, policer: { rate: number; burst: number }): void;
  setFlowCounters(on: boolean): void;
  /** Packed observation records (lib/slowpath/observations.ts), on the JavaScript thread. */
  onObservations(callback: (records: Buffer) => void): void;
  portInfo(port: number): NativePortInfo;
  portCounters(port: number): NativePortCounters;
  /** The NIC's extended statistics (rte_eth_xstats), name to value in the driver's order; throws for a VLAN sub-interface. */
  portXstats(port: number): Record<string, number>;
  ports(): number[];
  start(): void;
  stop(): void;
  running(): boolean;
  addTunnel(params: NativeTunnelParams): number;
  updateTunnel(id: number, params: NativeTunnelParams): void;
  removeTunnel(id: number): void;
  tunnelMtu(id: number): NativeTunnelMtu;
  /** Lowers the path MTU of tunnels that received ICMPv6 packet too big; returns those changed. */
  applyPathMtuReports(options?: { expiresSeconds?: number }): NativeTunnelMtu[];
  addFlowPair(orig: NativeFlowSpec, reply: NativeFlowSpec | null): number;
  removeFlow(handle: number): boolean;
  /** One flow record (lib/flow-records.ts), or null when no flow has this handle. */
  getFlow(handle: number): Buffer | null;
  /**
   * Flow records (lib/flow-records.ts) of at most `max` flows from cursor `from` (0: the
   * start); `next` continues the listing, 0 when it is complete.
   */
  listFlows(options: { from: number; max: number }): { records: Buffer; next: number };
  /** Flow records of the flows removed, each with its reap reason. */
  reap(options: { tcpTimeout: number; udpTimeout: number }): Buffer;
  flushFlows(): number;
  /** How many adjacencies of `port` and `family` now carry MAC `to` instead of `from`. */
  rewriteNextHop(port: number, nextHop: { family: 4 | 6; from: Buffer; to: Buffer }): number;
  stats(): NativeStats;
  reasons(): { punt: NativeReason[]; drop: NativeReason[] };
  /** The CPU's time stamp counter now (the clock of observation records). */
  tsc(): number;
  /** One trace at a time; a filter libpcap refuses throws ERR_FLOWGATE_INVALID_ARGUMENT with its message. */
  traceStart(options: { count: number; port?: number; filter?: string }): void;
  traceRead(max: number): { records: NativeTraceRecord[]; running: boolean; remaining: number; lost: number };
  traceStop(): void;
  /** A port capture (native/dp/capture.h): its id. The descriptor is duplicated. */
  startCapture(options: NativeCaptureOptions): number;
  captureStats(id: number): NativeCaptureStats;
  /** Waits until no worker copies for it, writes what is queued, closes its descriptor. */
  stopCapture(id: number): NativeCaptureStats;
  Conntrack: NativeConntrackClass;
  Rtnl: NativeRtnlClass;
  testing: NativeTesting;
}

/** The compiled addon, built by node-gyp into build/Release at the package root. */
export const ADDON_PATH = path.join(__dirname, '..', '..', 'build', 'Release', 'flowgate.node');

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached ??= require(ADDON_PATH) as NativeAddon;
  } catch (err) {
    // Installed with --ignore-scripts, or the build failed: say what to do rather than
    // Node's "Cannot find module" with a stack. A present but broken addon keeps its own error.
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new FlowgateError(
      'ERR_FLOWGATE_ADDON_NOT_BUILT',
      `the native addon ${ADDON_PATH} is not built: build it with 'npm rebuild flowgate' (node-gyp, DPDK's development files and pkg-config), or 'npm run build' in a checkout`,
      { cause: err },
    );
  }
  return cached;
}
