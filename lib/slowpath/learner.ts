/**
 * The learner: offloads connections the way nftables' `flow add @ft` does
 * (net/netfilter/nft_flow_offload.c, nft_flow_offload_eval), with the kernel's conntrack as
 * the authority and the fast path's observation records as the map of where packets go.
 *
 * Where: a punt record says where a packet came in (port, tunnel, tuple); the egress record of
 * the same packet says where the kernel sent it (port and Ethernet header, or tunnel) and with
 * which tuple after NAT. Paired, they are one forwarded direction, kept in a bounded table.
 * A packet the kernel drops has no egress, so it creates no state at all.
 *
 * Whether: each forwarded packet that could make its connection offloadable asks conntrack
 * (ctnetlink, batched) for the connection, and offloads it when nft_flow_offload_eval would:
 * confirmed; TCP ESTABLISHED and ASSURED, the packet without FIN/RST; UDP any confirmed
 * connection; never one with a helper, sequence adjustment or a NAT clash. The rewrite of each
 * direction comes from the connection's tuples (the kernel's NF_FLOW_SNAT/DNAT), and both
 * directions are installed together, oriented as conntrack's original tuple, so `flowgate
 * flows` and `conntrack -L` agree. Nothing about TCP is guessed from packets: a connection
 * that was idle past the flowtable timeout, or older than flowgate, is offloaded again on its
 * next packets, and a FIN or RST the kernel dropped changes nothing.
 *
 * Lifecycle, after nf_flow_table_core.c: on offload the connection's timeout is extended to a
 * day and its TCP window tracking made liberal (the kernel does both: flow_offload_add,
 * nft_flow_offload_eval), and extended again before it could expire
 * (nf_flow_table_extend_ct_timeout); the fast path marks a flow closing on FIN/RST and tears it
 * down on a SYN while closing; a reaped closing TCP flow puts its connection in CLOSE with the
 * close timeout, a reaped UDP flow gives its connection the rest of its own timeout
 * (flow_offload_fixup_ct); the connection's DESTROY event (expiry, `conntrack -D`, `-F`)
 * removes the flow at once.
 */
import { IPS, type CtConnection, type CtTuple, type CtUpdate } from '../conntrack';
import type { FlowDirection, FlowOutput, FlowPairOptions, ReapedFlow } from '../dataplane';
import { formatMac } from '../net/addr';
import type { Observation } from './observations';

const TCP = 6;
const UDP = 17;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;


/** What the learner needs of the dataplane; the Dataplane class provides it. */
export interface FlowInstaller {
  addFlow(options: FlowPairOptions): number;
  removeFlow(id: number): boolean;
  reap(timeouts: { tcp: number; udp: number }): ReapedFlow[];
  portName(id: number): string | undefined;
  tunnelName(id: number): string | undefined;
  /** The dataplane's TSC now, and its rate: offload latency is measured against punt records' TSC. */
  tsc(): number;
  readonly tscHz: number;
}

/** What the learner needs of conntrack; lib/conntrack.ts's Conntrack provides it. */
export interface ConnectionTracker {
  get(tuples: readonly CtTuple[]): Promise<(CtConnection | null)[]>;
  update(updates: readonly CtUpdate[]): Promise<{ ok: number; notFound: number; failed: number }>;
}

/** Conntrack's own timeouts in the namespace (the nf_conntrack_* sysctls), seconds. */
export interface ConntrackTimeouts {
  tcpClose: number;
  udp: number;
  udpStream: number;
}

export interface LearnerPolicy {
  /** flowtable.devices: port names. */
  devices: readonly string[];
  l4proto: readonly ('tcp' | 'udp')[];
  /** flowtable.timeout: idle seconds before an offloaded flow is reaped. */
  timeout: { tcp: number; udp: number };
  /** Tunnel name -> its underlay port, for the device rule. */
  tunnelUnderlay: ReadonlyMap<string, string>;
  conntrack: ConntrackTimeouts;
}

export interface LearnerLimits {
  /** Punt and egress records waiting for their other half, each. */
  pending: number;
  /** Forwarded directions remembered for connections not (yet) offloaded. */
  directions: number;
  /** Tuples waiting for a conntrack query. */
  queries: number;
}

export const DEFAULT_LIMITS: LearnerLimits = { pending: 8192, directions: 32768, queries: 32768 };

/** One forwarded direction: where a packet with this tuple came in, and how the kernel sent it. */
interface Direction {
  in: string;
  tunnel: string | undefined;
  ingress: CtTuple;
  egress: CtTuple;
  out: FlowOutput;
  atMs: number;
}

interface Offloaded {
  flowId: number;
  conn: CtConnection;
  /** As installed (with next hops rewritten in place since): the original direction first. */
  directions: FlowDirection[];
  pair: boolean;
}

/** A punt waiting for its egress, or an egress waiting for its punt. */
interface Pending {
  obs: Observation;
  atMs: number;
}

interface Query {
  tuple: CtTuple;
  /** TSC of the punt whose forwarding prompted the query: offload latency counts from it. */
  tsc: number;
}

export interface LearnerStats {
  observations: number;
  punts: number;
  egresses: number;
  /** Punt and egress records paired: packets the kernel forwarded. */
  forwarded: number;
  unmatchedEgress: number;
  /** Tunnelled packets for no configured tunnel: never learned as plain flows. */
  untunnelled: number;
  ctQueries: number;
  ctNotFound: number;
  /** Why conntrack's answer did not allow offloading, by reason. */
  ctRefused: Record<string, number>;
  ctUpdates: number;
  ctUpdateFailures: number;
  installs: number;
  installFailures: number;
  natInstalls: number;
  notAllowed: number;
  /** State dropped to stay within its bounds. */
  evicted: { pending: number; directions: number; queries: number };
  removedBy: Record<string, number>;
  connections: number;
  directions: number;
  /** Offload latency samples, milliseconds: the packet that made the connection offloadable -> flow installed. */
  latencyMs: { p50: number | null; p99: number | null; samples: number };
}

// A punt waits this long for the kernel's egress of the same packet, and the other way round.
const PENDING_MS = 2000;
// A forwarded direction is remembered this long for its connection's other direction.
const DIRECTION_MS = 30_000;
const LATENCY_SAMPLES = 4096;
// Stale state forgotten per tick and kind, at most: the rest waits for the next ticks (it is
// bounded anyway), so that a tick after a flood stays short.
const EXPIRE_PER_TICK = 2048;
// Conntrack queries in flight at once; while they are, new tuples gather into the next batch.
const QUERIES_IN_FLIGHT = 2;
// As the kernel: an offloaded connection's conntrack timeout is set to a day (flow_offload_add,
// NF_CT_DAY) and extended when less than five minutes would be left
// (nf_flow_table_extend_ct_timeout).
const OFFLOADED_CT_TIMEOUT_S = 86_400;
const EXTEND_EVERY_MS = (OFFLOADED_CT_TIMEOUT_S - 300) * 1000;

function tupleKey(t: CtTuple): string {
  return `${t.proto}|${t.src}|${t.sport}|${t.dst}|${t.dport}`;
}

/** The tuple a packet of the other direction carries. */
function inverse(t: CtTuple): CtTuple {
  return { family: t.family, proto: t.proto, src: t.dst, dst: t.src, sport: t.dport, dport: t.sport };
}

function sameTuple(a: CtTuple, b: CtTuple): boolean {
  return a.proto === b.proto && a.src === b.src && a.dst === b.dst && a.sport === b.sport && a.dport === b.dport;
}

/**
 * A bounded map whose oldest entries (by last write) go first. Write order is kept in a queue
 * of its own (keys and values side by side, stale slots skipped), not in the Map's: a Map
 * iterator starts at the table's first slot and steps over every entry deleted since the
 * table was last compacted, so taking the oldest entry from a Map made each eviction cost as
 * much as the deletions before it.
 */
class BoundedMap<K, V> {
  private readonly map = new Map<K, V>();
  // Writes in order from `head`; a slot is stale once its key was deleted or written again.
  private keys: K[] = [];
  private values: V[] = [];
  private head = 0;
  evicted = 0;
  constructor(private readonly limit: number) {}
  get size(): number {
    return this.map.size;
  }
  get(key: K): V | undefined {
    return this.map.get(key);
  }
  set(key: K, value: V): void {
    this.map.set(key, value);
    this.keys.push(key);
    this.values.push(value);
    if (this.map.size > this.limit) {
      this.removeOldest();
      this.evicted++;
    }
    this.compact();
  }
  delete(key: K): boolean {
    return this.map.delete(key);
  }
  /** Removes at most `budget` entries from the old end while `stale` says so; returns how many. */
  expire(stale: (value: V) => boolean, budget: number): number {
    let n = 0;
    while (n < budget && this.skipStale() && stale(this.values[this.head] as V)) {
      this.removeOldest();
      n++;
    }
    this.compact();
    return n;
  }
  /** Moves `head` to the oldest live write; false when there is none. */
  private skipStale(): boolean {
    while (this.head < this.keys.length && this.map.get(this.keys[this.head] as K) !== this.values[this.head]) this.head++;
    return this.head < this.keys.length;
  }
  private removeOldest(): void {
    if (!this.skipStale()) return;
    this.map.delete(this.keys[this.head] as K);
    this.head++;
  }
  /** Drops the consumed slots, and rebuilds the queue when rewrites left it mostly stale. */
  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.keys.length) {
      this.keys = this.keys.slice(this.head);
      this.values = this.values.slice(this.head);
      this.head = 0;
    }
    if (this.keys.length - this.head > 4 * (this.map.size + 1024)) {
      // Many writes of the same keys and no eviction to consume them: the live slots, in order.
      const keys: K[] = [];
      const values: V[] = [];
      for (let i = this.head; i < this.keys.length; i++) {
        const key = this.keys[i] as K;
        const value = this.values[i] as V;
        if (this.map.get(key) === value) {
          keys.push(key);
          values.push(value);
        }
      }
      this.keys = keys;
      this.values = values;
      this.head = 0;
    }
  }
}

export class Learner {
  private readonly pending: BoundedMap<number, Pending>;
  /**
   * Egresses seen before their punt. The slow-path thread hands over the records of the
   * kernel's queues and of the workers' rings in batches of its own making, so a packet the
   * kernel forwarded at once can have its egress delivered first.
   */
  private readonly pendingEgress: BoundedMap<number, Pending>;
  /** Forwarded directions by their ingress tuple. */
  private readonly directions: BoundedMap<string, Direction>;
  /** Offloaded connections by their original tuple (tupleKey), and that key by flow id and by either direction's tuple. */
  private readonly offloaded = new Map<string, Offloaded>();
  private readonly byFlow = new Map<number, string>();
  private readonly byTuple = new Map<string, string>();
  /**
   * How many offloaded directions the kernel routed to each destination: a route change is
   * matched against these, each once, rather than against every flow.
   */
  private readonly destinationRefs = new Map<string, number>();
  /**
   * When offloaded connections' conntrack timeouts are next due an extension, in order of due
   * time (all intervals are equal); an entry whose flow is gone is skipped.
   */
  private extendQueue: { key: string; flowId: number; dueMs: number }[] = [];
  private extendHead = 0;
  /**
   * Entries of the queue whose connection is gone. They would wait a day to be skipped: at a
   * thousand new connections a second, hundreds of megabytes. Past half the queue they are
   * swept out.
   */
  private extendStale = 0;
  private queries = new Map<string, Query>();
  private queriesInFlight = 0;
  private updates: CtUpdate[] = [];
  private updatesInFlight = false;
  /** Connections with an extension among the updates not yet sent. */
  private readonly extending = new Set<string>();
  private readonly latencies: number[] = [];
  private latencyNext = 0;
  private readonly counters = {
    observations: 0,
    punts: 0,
    egresses: 0,
    forwarded: 0,
    unmatchedEgress: 0,
    untunnelled: 0,
    ctQueries: 0,
    ctNotFound: 0,
    ctUpdates: 0,
    ctUpdateFailures: 0,
    installs: 0,
    installFailures: 0,
    natInstalls: 0,
    notAllowed: 0,
  };
  private queriesEvicted = 0;
  private readonly ctRefused: Record<string, number> = { unconfirmed: 0, not_established: 0, helper: 0, seq_adjust: 0, nat_clash: 0, l4proto: 0 };
  private readonly removedBy: Record<string, number> = { idle: 0, teardown: 0, invalidated: 0, destroyed: 0, resync: 0 };

  constructor(
    private readonly dp: FlowInstaller,
    private readonly ct: ConnectionTracker,
    private policy: LearnerPolicy,
    private readonly limits: LearnerLimits = DEFAULT_LIMITS,
    private readonly now: () => number = () => performance.now(),
    private readonly onError: (what: string, err: unknown) => void = () => undefined,
  ) {
    this.pending = new BoundedMap(limits.pending);
    this.pendingEgress = new BoundedMap(limits.pending);
    this.directions = new BoundedMap(limits.directions);
  }

  setPolicy(policy: LearnerPolicy): void {
    this.policy = policy;
  }

  observe(records: readonly Observation[]): void {
    for (const o of records) {
      this.counters.observations++;
      if (o.proto !== TCP && o.proto !== UDP) continue;
      if (o.kind === 'punt') this.onPunt(o);
      else this.onEgress(o);
    }
    this.sendQueries();
    this.sendUpdates();
  }

  // The key pairs records on the fingerprint and the packet's length; family and protocol are
  // compared on a match. Two unrelated packets agreeing on all of these are as good as never.
  private static pairKey(o: Observation): number {
    return o.fingerprint * 65536 + o.length;
  }

  private static samePacket(a: Observation, b: Observation): boolean {
    return a.family === b.family && a.proto === b.proto && a.length === b.length;
  }

  private onPunt(o: Observation): void {
    this.counters.punts++;
    if (o.tunnelled && o.tunnel === null) {
      // An encapsulated packet for no configured tunnel went to the kernel as it came:
      // whatever the kernel does with it, it is not the plain flow its inner tuple looks like.
      this.counters.untunnelled++;
      return;
    }
    const key = Learner.pairKey(o);
    const early = this.pendingEgress.get(key);
    if (early !== undefined && Learner.samePacket(o, early.obs)) {
      this.pendingEgress.delete(key);
      this.onForwarded(o, early.obs);
      return;
    }
    this.pending.set(key, { obs: o, atMs: this.now() });
  }

  private onEgress(o: Observation): void {
    this.counters.egresses++;
    const key = Learner.pairKey(o);
    const p = this.pending.get(key);
    if (p === undefined || !Learner.samePacket(p.obs, o)) {
      // Its punt may still come; the kernel's own packets (local traffic) have none.
      this.pendingEgress.set(key, { obs: o, atMs: this.now() });
      return;
    }
    this.pending.delete(key);
    this.onForwarded(p.obs, o);
  }

  /** The kernel forwarded the packet of `punt` as `egress`. */
  private onForwarded(punt: Observation, egress: Observation): void {
    this.counters.forwarded++;
    const direction = this.directionOf(punt, egress);
    if (direction === undefined) return;
    const key = tupleKey(direction.ingress);
    this.directions.set(key, direction);
    const offloadedKey = this.byTuple.get(key);
    const offloaded = offloadedKey === undefined ? undefined : this.offloaded.get(offloadedKey);
    if (offloaded !== undefined) {
      // A packet of an offloaded connection went through the kernel (too big, or its other
      // direction not yet offloaded): conntrack refreshed the connection's timeout to its
      // state's own, which is short for UDP. Extend it again, as the kernel's flowtable GC
      // would (nf_flow_table_extend_ct_timeout).
      this.extendSoon(offloadedKey as string, offloaded);
      if (offloaded.pair) return;
    }
    // nft_flow_offload_eval offloads TCP on a packet without FIN or RST; a SYN cannot find
    // its connection established.
    if (punt.proto === TCP && (punt.tcpFlags & (TCP_SYN | TCP_FIN | TCP_RST)) !== 0) return;
    if (!this.queries.has(key)) {
      if (this.queries.size >= this.limits.queries) {
        this.queriesEvicted++;
        return;
      }
      this.queries.set(key, { tuple: direction.ingress, tsc: punt.tsc });
    }
  }

  private directionOf(punt: Observation, egress: Observation): Direction | undefined {
    const inPort = punt.port === null ? undefined : this.dp.portName(punt.port);
    if (inPort === undefined) return undefined;
    const tunnel = punt.tunnel === null ? undefined : this.dp.tunnelName(punt.tunnel);
    if (punt.tunnel !== null && tunnel === undefined) return undefined;
    let out: FlowOutput;
    if (egress.kind === 'egress-tunnel') {
      const t = egress.tunnel === null ? undefined : this.dp.tunnelName(egress.tunnel);
      if (t === undefined) return undefined;
      out = { tunnel: t };
    } else {
      const port = egress.port === null ? undefined : this.dp.portName(egress.port);
      if (port === undefined || egress.dstMac === null || egress.srcMac === null) return undefined;
      out = { port, mac: formatMac(egress.dstMac), srcMac: formatMac(egress.srcMac) };
    }
    const proto = punt.proto === TCP ? 'tcp' : 'udp';
    return {
      in: inPort,
      tunnel,
      ingress: { family: punt.family, proto, src: punt.src, dst: punt.dst, sport: punt.sport, dport: punt.dport },
      egress: { family: egress.family, proto, src: egress.src, dst: egress.dst, sport: egress.sport, dport: egress.dport },
      out,
      atMs: this.now(),
    };
  }

  private sendQueries(): void {
    if (this.queries.size === 0 || this.queriesInFlight >= QUERIES_IN_FLIGHT) return;
    const batch = [...this.queries.values()];
    this.queries = new Map();
    this.queriesInFlight++;
    this.counters.ctQueries += batch.length;
    this.ct
      .get(batch.map((q) => q.tuple))
      .then((conns) => {
        conns.forEach((conn, i) => this.decide(batch[i] as Query, conn));
      })
      .catch((err: unknown) => this.onError('conntrack query failed', err))
      .finally(() => {
        this.queriesInFlight--;
        this.sendQueries();
        this.sendUpdates();
      });
  }

  /** Why nft_flow_offload_eval would not offload this connection, or null when it would. */
  private refusal(conn: CtConnection): string | null {
    if (!this.policy.l4proto.includes(conn.orig.proto)) return 'l4proto';
    if ((conn.status & IPS.CONFIRMED) === 0) return 'unconfirmed';
    if (conn.helper !== null || (conn.status & IPS.HELPER) !== 0) return 'helper';
    if ((conn.status & IPS.SEQ_ADJUST) !== 0) return 'seq_adjust';
    if ((conn.status & IPS.NAT_CLASH) !== 0) return 'nat_clash';
    // nf_conntrack_tcp_established()
    if (conn.orig.proto === 'tcp' && (conn.tcpState !== 'ESTABLISHED' || (conn.status & IPS.ASSURED) === 0)) return 'not_established';
    return null;
  }

  /** Conntrack answered the query prompted by a forwarded packet. */
  private decide(q: Query, conn: CtConnection | null): void {
    if (conn === null) {
      this.counters.ctNotFound++;
      return;
    }
    const why = this.refusal(conn);
    if (why !== null) {
      this.ctRefused[why] = (this.ctRefused[why] ?? 0) + 1;
      return;
    }
    const key = tupleKey(conn.orig);
    const existing = this.offloaded.get(key);
    if (existing?.pair === true) return;
    // Each direction as the kernel forwarded it, if it did so as this connection says: the
    // original direction leaves as the inverse of the reply tuple and the other way round.
    const origDir = this.usable(this.directions.get(key), conn.reply);
    const replyDir = this.usable(this.directions.get(tupleKey(conn.reply)), conn.orig);
    const dirs = [origDir, replyDir].filter((d): d is Direction => d !== undefined);
    // Both directions together, as the kernel's one flow object; UDP also one way while its
    // reply has yet to come (then both, in its place).
    if (dirs.length === 0 || (conn.orig.proto === 'tcp' && dirs.length < 2)) return;
    if (existing !== undefined && dirs.length < 2) return;
    if (!dirs.every((d) => this.deviceAllowed(d))) {
      this.counters.notAllowed++;
      return;
    }
    if (existing !== undefined) this.forget(key, existing);
    const directions = dirs.map(flowDirection);
    const [first, second] = directions as [FlowDirection, FlowDirection | undefined];
    let flowId: number;
    try {
      flowId = this.dp.addFlow({ original: first, ...(second === undefined ? {} : { reply: second }) });
    } catch {
      // Full table, or the flow raced with another install: it stays in the slow path.
      this.counters.installFailures++;
      return;
    }
    this.offloaded.set(key, { flowId, conn, directions, pair: second !== undefined });
    for (const d of directions) {
      const dst = routedDestination(d);
      this.destinationRefs.set(dst, (this.destinationRefs.get(dst) ?? 0) + 1);
    }
    this.byFlow.set(flowId, key);
    for (const d of dirs) this.byTuple.set(tupleKey(d.ingress), key);
    this.extendQueue.push({ key, flowId, dueMs: this.now() + EXTEND_EVERY_MS });
    this.counters.installs++;
    if (directions.some((d) => d.nat !== undefined)) this.counters.natInstalls++;
    // Offloaded connections bypass conntrack's window tracking: liberal, as the kernel's
    // nft_flow_offload_eval sets it, and alive for a day (flow_offload_add); again when the
    // other direction joins, whose packet conntrack has just seen.
    this.updates.push({ orig: conn.orig, timeout: OFFLOADED_CT_TIMEOUT_S, ...(conn.orig.proto === 'tcp' ? { liberal: true } : {}) });
    if (existing === undefined) this.recordLatency(((this.dp.tsc() - q.tsc) / this.dp.tscHz) * 1000);
  }

  /** Queue an extension of an offloaded connection's conntrack timeout, once per batch of updates. */
  private extendSoon(key: string, o: Offloaded): void {
    if (this.extending.has(key)) return;
    this.extending.add(key);
    this.updates.push({ orig: o.conn.orig, timeout: OFFLOADED_CT_TIMEOUT_S });
  }

  /** A direction, if the kernel sent it on with the tuple the connection says it leaves with. */
  private usable(d: Direction | undefined, leavingAsInverseOf: CtTuple): Direction | undefined {
    if (d === undefined || !sameTuple(d.egress, inverse(leavingAsInverseOf))) return undefined;
    return d;
  }

  private deviceAllowed(d: Direction): boolean {
    const inDevice = d.tunnel === undefined ? d.in : this.policy.tunnelUnderlay.get(d.tunnel);
    const outDevice = 'tunnel' in d.out ? this.policy.tunnelUnderlay.get(d.out.tunnel) : d.out.port;
    return (
      inDevice !== undefined &&
      outDevice !== undefined &&
      this.policy.devices.includes(inDevice) &&
      this.policy.devices.includes(outDevice) &&
      // A packet in and out of the same tunnel, or decapsulated into another tunnel, is not
      // something the fast path rewrites.
      !(d.tunnel !== undefined && 'tunnel' in d.out)
    );
  }

  /** Drops an offloaded connection from the learner's maps (its flow is gone or going). */
  private unlink(key: string, o: Offloaded): void {
    this.offloaded.delete(key);
    this.byFlow.delete(o.flowId);
    this.byTuple.delete(tupleKey(o.conn.orig));
    this.byTuple.delete(tupleKey(o.conn.reply));
    this.extendStale++;
    for (const d of o.directions) {
      const dst = routedDestination(d);
      const refs = (this.destinationRefs.get(dst) ?? 1) - 1;
      if (refs === 0) this.destinationRefs.delete(dst);
      else this.destinationRefs.set(dst, refs);
    }
  }

  /** Forget an offloaded connection whose flow is gone (or about to be replaced). */
  private forget(key: string, o: Offloaded): void {
    this.unlink(key, o);
    this.dp.removeFlow(o.flowId);
  }

  private sendUpdates(): void {
    if (this.updates.length === 0 || this.updatesInFlight) return;
    const batch = this.updates;
    this.updates = [];
    this.extending.clear();
    this.updatesInFlight = true;
    this.ct
      .update(batch)
      .then((r) => {
        this.counters.ctUpdates += r.ok;
        this.counters.ctUpdateFailures += r.failed + r.notFound;
      })
      .catch((err: unknown) => {
        this.counters.ctUpdateFailures += batch.length;
        this.onError('conntrack update failed', err);
      })
      .finally(() => {
        this.updatesInFlight = false;
        this.sendUpdates();
      });
  }

  private recordLatency(ms: number): void {
    if (this.latencies.length < LATENCY_SAMPLES) this.latencies.push(ms);
    else this.latencies[this.latencyNext] = ms;
    this.latencyNext = (this.latencyNext + 1) % LATENCY_SAMPLES;
  }

  /** Every second or so: expire idle and torn-down flows, extend timeouts, forget stale state. */
  tick(): ReapedFlow[] {
    const reaped = this.dp.reap(this.policy.timeout);
    for (const r of reaped) {
      this.removedBy[r.reason] = (this.removedBy[r.reason] ?? 0) + 1;
      const key = this.byFlow.get(r.flow.id);
      if (key === undefined) continue;
      const o = this.offloaded.get(key) as Offloaded;
      this.unlink(key, o);
      const handBack = this.handBack(o.conn, r);
      if (handBack !== null) this.updates.push(handBack);
    }
    const now = this.now();
    this.extendTimeouts(now);
    this.pending.expire((p) => now - p.atMs > PENDING_MS, EXPIRE_PER_TICK);
    this.counters.unmatchedEgress += this.pendingEgress.expire((p) => now - p.atMs > PENDING_MS, EXPIRE_PER_TICK);
    this.directions.expire((d) => now - d.atMs > DIRECTION_MS, EXPIRE_PER_TICK);
    this.sendQueries();
    this.sendUpdates();
    return reaped;
  }

  /**
   * What the connection's conntrack entry becomes when its flow leaves the fast path, as
   * flow_offload_fixup_ct: a closing TCP connection enters CLOSE with the close timeout (a
   * SYN then reopens it in conntrack); a UDP connection gets its state's timeout, less the
   * flowtable timeout it already sat idle. A TCP connection that did not close keeps its
   * state and the day it has, which is less than the state's own timeout.
   */
  private handBack(conn: CtConnection, r: ReapedFlow): CtUpdate | null {
    const ct = this.policy.conntrack;
    if (conn.orig.proto === 'tcp') {
      if (!r.flow.closing) return null;
      return { orig: conn.orig, tcpState: 'CLOSE', timeout: ct.tcpClose };
    }
    const own = (conn.status & IPS.SEEN_REPLY) !== 0 ? ct.udpStream : ct.udp;
    const expired = r.reason === 'idle' ? this.policy.timeout.udp : 0;
    return { orig: conn.orig, timeout: Math.max(0, own - expired) };
  }

  private extendTimeouts(now: number): void {
    while (this.extendHead < this.extendQueue.length) {
      const due = this.extendQueue[this.extendHead] as { key: string; flowId: number; dueMs: number };
      if (due.dueMs > now) break;
      this.extendHead++;
      const o = this.offloaded.get(due.key);
      if (o === undefined || o.flowId !== due.flowId) {
        this.extendStale--;
        continue;
      }
      this.extendQueue.push({ ...due, dueMs: now + EXTEND_EVERY_MS });
      this.extendSoon(due.key, o);
    }
    // Keep the queue's array from growing without bound: neither with entries done nor
    // with those of connections gone since (the order, by due time, stays).
    const waiting = this.extendQueue.length - this.extendHead;
    if (this.extendStale > 4096 && this.extendStale * 2 > waiting) {
      this.extendQueue = this.extendQueue.slice(this.extendHead).filter((e) => this.offloaded.get(e.key)?.flowId === e.flowId);
      this.extendHead = 0;
      this.extendStale = 0;
    } else if (this.extendHead > 4096 && this.extendHead * 2 > this.extendQueue.length) {
      this.extendQueue.splice(0, this.extendHead);
      this.extendHead = 0;
    }
  }

  /** Conntrack destroyed connections (expiry, `conntrack -D`, `-F`): their flows go at once. */
  onDestroyed(conns: readonly CtConnection[]): number {
    let removed = 0;
    for (const conn of conns) {
      const key = tupleKey(conn.orig);
      const o = this.offloaded.get(key);
      if (o === undefined) continue;
      this.forget(key, o);
      removed++;
    }
    this.removedBy.destroyed = (this.removedBy.destroyed ?? 0) + removed;
    return removed;
  }

  /** After lost events: conntrack's whole table. Offloaded connections not in it are gone. */
  onResync(all: readonly CtConnection[]): number {
    const live = new Set(all.map((c) => tupleKey(c.orig)));
    let removed = 0;
    for (const [key, o] of [...this.offloaded]) {
      if (live.has(key)) continue;
      this.forget(key, o);
      removed++;
    }
    this.removedBy.resync = (this.removedBy.resync ?? 0) + removed;
    return removed;
  }

  /**
   * Remove flows that may no longer be right (a route, neighbour, MTU or config changed).
   * Conntrack keeps the connections, so their next packets offload them again.
   */
  invalidate(match: (flow: { id: number; directions: FlowDirection[] }) => boolean): number {
    let removed = 0;
    for (const [key, o] of [...this.offloaded]) {
      if (!match({ id: o.flowId, directions: o.directions })) continue;
      this.forget(key, o);
      removed++;
    }
    this.removedBy.invalidated = (this.removedBy.invalidated ?? 0) + removed;
    return removed;
  }

  /**
   * The dataplane moved the next hop on `port` from MAC `from` to `to` in place for the
   * (inner) packets of `family` (the kernel's neighbour entry of an address of that family
   * changed): the installed directions read so from now on, so that
   * a later invalidation by MAC finds them. Returns the connections that changed.
   */
  rewriteNextHop(port: string, family: 4 | 6, from: string, to: string): number {
    let changed = 0;
    for (const o of this.offloaded.values()) {
      let hit = false;
      o.directions.forEach((d, at) => {
        if (!('port' in d.out) || d.out.port !== port || d.out.mac !== from) return;
        if ((d.dst.includes(':') ? 6 : 4) !== family) return;
        o.directions[at] = { ...d, out: { ...d.out, mac: to } };
        hit = true;
      });
      if (hit) changed++;
    }
    return changed;
  }

  /** The destinations (routedDestination) of the offloaded directions, each once. */
  destinations(): IterableIterator<string> {
    return this.destinationRefs.keys();
  }

  stats(): LearnerStats {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const pct = (p: number) => (sorted.length === 0 ? null : (sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number));
    return {
      ...this.counters,
      ctRefused: { ...this.ctRefused },
      evicted: { pending: this.pending.evicted + this.pendingEgress.evicted, directions: this.directions.evicted, queries: this.queriesEvicted },
      removedBy: { ...this.removedBy },
      connections: this.offloaded.size,
      directions: this.directions.size,
      latencyMs: { p50: pct(0.5), p99: pct(0.99), samples: sorted.length },
    };
  }
}

/** The address the kernel routed a direction by: its destination after DNAT (prerouting). */
export function routedDestination(d: FlowDirection): string {
  return d.nat?.dst ?? d.dst;
}

/** A forwarded direction as the dataplane installs it: matched as it arrives, rewritten to how the kernel sent it. */
function flowDirection(d: Direction): FlowDirection {
  const nat: NonNullable<FlowDirection['nat']> = {};
  if (d.egress.src !== d.ingress.src) nat.src = d.egress.src;
  if (d.egress.dst !== d.ingress.dst) nat.dst = d.egress.dst;
  if (d.egress.sport !== d.ingress.sport) nat.sport = d.egress.sport;
  if (d.egress.dport !== d.ingress.dport) nat.dport = d.egress.dport;
  return {
    in: d.in,
    proto: d.ingress.proto,
    src: d.ingress.src,
    dst: d.ingress.dst,
    sport: d.ingress.sport,
    dport: d.ingress.dport,
    ...(d.tunnel === undefined ? {} : { tunnel: d.tunnel }),
    ...(Object.keys(nat).length === 0 ? {} : { nat }),
    out: d.out,
  };
}
