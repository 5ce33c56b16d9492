/**
 * The learner: offloads flows the way nftables' `flow add @ft` does, from what the fast path
 * observes around the slow path. A punt record says where a packet came in; the egress
 * record of the same packet (same fingerprint) says where the kernel sent it and with which
 * Ethernet header. Together they are one direction of a connection; the kernel forwarding
 * the packet is what allows offloading it, so a flow the kernel drops is never offloaded.
 *
 * Rules, after the kernel's nft_flow_offload: only connections whose input and output
 * devices are flowtable devices (a tunnel counts through its underlay port) and whose L4
 * protocol is listed; TCP once established (SYN seen both ways) and on a packet that is not
 * SYN/FIN/RST; UDP as soon as the kernel forwarded it; both directions installed together
 * when both are known, one direction for one-way UDP. No NAT offload: a connection whose
 * tuple the kernel rewrites stays in the slow path.
 */
import type { FlowDirection, FlowOutput, FlowPairOptions, ReapedFlow } from '../dataplane';
import { formatMac } from '../net/addr';
import type { Observation } from './observations';

const TCP = 6;
const UDP = 17;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;

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

export interface LearnerPolicy {
  /** flowtable.devices: port names. */
  devices: readonly string[];
  l4proto: readonly ('tcp' | 'udp')[];
  timeout: { tcp: number; udp: number };
  /** Tunnel name -> its underlay port, for the device rule. */
  tunnelUnderlay: ReadonlyMap<string, string>;
}

interface Direction {
  in: string;
  tunnel: string | undefined;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  out: FlowOutput;
}

interface Connection {
  proto: 'tcp' | 'udp';
  /** The initiator's side: the first packet seen went from (src, sport). */
  src: string;
  sport: number;
  orig: Direction | undefined;
  reply: Direction | undefined;
  synOrig: boolean;
  synReply: boolean;
  closing: boolean;
  nat: boolean;
  flowId: number | undefined;
  /** Whether the installed flow has both directions. */
  installedPair: boolean;
  firstTsc: number;
  measured: boolean;
  lastActivityMs: number;
}

/** A punt waiting for its egress, or an egress waiting for its punt. */
interface Pending {
  obs: Observation;
  atMs: number;
}

export interface LearnerStats {
  observations: number;
  punts: number;
  egresses: number;
  unmatchedEgress: number;
  installs: number;
  installFailures: number;
  natSkipped: number;
  notAllowed: number;
  removedBy: Record<string, number>;
  connections: number;
  /** Offload latency samples, milliseconds: first packet seen -> flow installed. */
  latencyMs: { p50: number | null; p99: number | null; samples: number };
}

// A punt waits this long for the kernel's egress of the same packet, and the other way round.
const PENDING_MS = 2000;
// Connections that never got offloaded are forgotten after this long without packets.
const IDLE_CONNECTION_MS = 30_000;
const LATENCY_SAMPLES = 4096;

function connectionKey(proto: number, a: string, ap: number, b: string, bp: number): string {
  const x = `${a}|${ap}`;
  const y = `${b}|${bp}`;
  return x < y ? `${proto}|${x}|${y}` : `${proto}|${y}|${x}`;
}

export class Learner {
  private readonly pending = new Map<number, Pending>();
  /**
   * Egresses seen before their punt. The slow-path thread hands over the records of the
   * kernel's queues and of the workers' rings in batches of its own making, so a packet the
   * kernel forwarded at once can have its egress delivered first.
   */
  private readonly pendingEgress = new Map<number, Pending>();
  private readonly connections = new Map<string, Connection>();
  private readonly byFlow = new Map<number, string>();
  private readonly latencies: number[] = [];
  private latencyNext = 0;
  private readonly counters = {
    observations: 0,
    punts: 0,
    egresses: 0,
    unmatchedEgress: 0,
    installs: 0,
    installFailures: 0,
    natSkipped: 0,
    notAllowed: 0,
  };
  private readonly removedBy: Record<string, number> = { idle: 0, teardown: 0, invalidated: 0 };

  constructor(
    private readonly dp: FlowInstaller,
    private policy: LearnerPolicy,
    private readonly now: () => number = () => performance.now(),
  ) {}

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
  }

  private connectionOf(o: Observation, create: boolean): Connection | undefined {
    const key = connectionKey(o.proto, o.src, o.sport, o.dst, o.dport);
    let c = this.connections.get(key);
    if (c === undefined && create) {
      c = {
        proto: o.proto === TCP ? 'tcp' : 'udp',
        src: o.src,
        sport: o.sport,
        orig: undefined,
        reply: undefined,
        synOrig: false,
        synReply: false,
        closing: false,
        nat: false,
        flowId: undefined,
        installedPair: false,
        firstTsc: o.tsc,
        measured: false,
        lastActivityMs: this.now(),
      };
      // A SYN-ACK seen first means we missed the SYN: the initiator is the other side.
      if (o.proto === TCP && (o.tcpFlags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK)) {
        c.src = o.dst;
        c.sport = o.dport;
      }
      this.connections.set(key, c);
    }
    return c;
  }

  private isOrig(c: Connection, src: string, sport: number): boolean {
    return src === c.src && sport === c.sport;
  }

  private onPunt(o: Observation): void {
    this.counters.punts++;
    const c = this.connectionOf(o, true) as Connection;
    c.lastActivityMs = this.now();
    if (c.proto === 'tcp') {
      const orig = this.isOrig(c, o.src, o.sport);
      if (o.tcpFlags & TCP_SYN) {
        if (orig) c.synOrig = true;
        else c.synReply = true;
      }
      if (o.tcpFlags & (TCP_FIN | TCP_RST)) c.closing = true;
    }
    const early = this.pendingEgress.get(o.fingerprint);
    if (early !== undefined) {
      this.pendingEgress.delete(o.fingerprint);
      this.onForwarded(o, early.obs);
      return;
    }
    this.pending.set(o.fingerprint, { obs: o, atMs: this.now() });
  }

  private onEgress(o: Observation): void {
    this.counters.egresses++;
    const p = this.pending.get(o.fingerprint);
    if (p === undefined) {
      // Its punt may still come; the kernel's own packets (local traffic) have none.
      this.pendingEgress.set(o.fingerprint, { obs: o, atMs: this.now() });
      return;
    }
    this.pending.delete(o.fingerprint);
    this.onForwarded(p.obs, o);
  }

  /** The kernel forwarded the packet of `punt` as `o`. */
  private onForwarded(punt: Observation, o: Observation): void {
    const c = this.connectionOf(punt, false);
    if (c === undefined) return;
    if (punt.src !== o.src || punt.dst !== o.dst || punt.sport !== o.sport || punt.dport !== o.dport) {
      if (!c.nat) this.counters.natSkipped++;
      c.nat = true;
      return;
    }
    const direction = this.directionOf(punt, o);
    if (direction === undefined) return;
    if (this.isOrig(c, punt.src, punt.sport)) c.orig = direction;
    else c.reply = direction;
    this.maybeInstall(c, o.tcpFlags);
  }

  private directionOf(punt: Observation, egress: Observation): Direction | undefined {
    const inPort = punt.port === null ? undefined : this.dp.portName(punt.port);
    if (inPort === undefined) return undefined;
    const tunnel = punt.tunnel === null ? undefined : this.dp.tunnelName(punt.tunnel);
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
    return { in: inPort, tunnel, src: punt.src, dst: punt.dst, sport: punt.sport, dport: punt.dport, out };
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

  private maybeInstall(c: Connection, flags: number): void {
    if (c.nat || c.closing || !this.policy.l4proto.includes(c.proto)) return;
    if (c.proto === 'tcp') {
      if (!(c.synOrig && c.synReply)) return;
      if (flags & (TCP_SYN | TCP_FIN | TCP_RST)) return;
      if (c.orig === undefined || c.reply === undefined) return;
    }
    const dirs = [c.orig, c.reply].filter((d): d is Direction => d !== undefined);
    if (dirs.length === 0) return;
    if (!dirs.every((d) => this.deviceAllowed(d))) {
      this.counters.notAllowed++;
      return;
    }
    const pair = c.orig !== undefined && c.reply !== undefined;
    if (c.flowId !== undefined) {
      if (c.installedPair || !pair) return;
      // A one-way UDP flow now has its reply: install both directions in its place.
      this.dp.removeFlow(c.flowId);
      this.byFlow.delete(c.flowId);
      c.flowId = undefined;
    }
    const first = (c.orig ?? c.reply) as Direction;
    const second = c.orig !== undefined ? c.reply : undefined;
    try {
      const id = this.dp.addFlow({ original: this.flowDirection(c, first), ...(second === undefined ? {} : { reply: this.flowDirection(c, second) }) });
      c.flowId = id;
      c.installedPair = pair;
      this.byFlow.set(id, connectionKey(c.proto === 'tcp' ? TCP : UDP, first.src, first.sport, first.dst, first.dport));
      this.counters.installs++;
      if (!c.measured) {
        c.measured = true;
        this.recordLatency(((this.dp.tsc() - c.firstTsc) / this.dp.tscHz) * 1000);
      }
    } catch {
      // Full table, or the flow raced with another install: it stays in the slow path.
      this.counters.installFailures++;
    }
  }

  private flowDirection(c: Connection, d: Direction): FlowDirection {
    return {
      in: d.in,
      proto: c.proto,
      src: d.src,
      dst: d.dst,
      sport: d.sport,
      dport: d.dport,
      ...(d.tunnel === undefined ? {} : { tunnel: d.tunnel }),
      out: d.out,
    };
  }

  private recordLatency(ms: number): void {
    if (this.latencies.length < LATENCY_SAMPLES) this.latencies.push(ms);
    else this.latencies[this.latencyNext] = ms;
    this.latencyNext = (this.latencyNext + 1) % LATENCY_SAMPLES;
  }

  /** Every second or so: expire idle and torn-down flows, forget stale state. */
  tick(): ReapedFlow[] {
    const reaped = this.dp.reap(this.policy.timeout);
    for (const r of reaped) {
      this.removedBy[r.reason] = (this.removedBy[r.reason] ?? 0) + 1;
      const key = this.byFlow.get(r.flow.id);
      this.byFlow.delete(r.flow.id);
      if (key !== undefined) this.connections.delete(key);
    }
    const now = this.now();
    for (const [fp, p] of this.pending) if (now - p.atMs > PENDING_MS) this.pending.delete(fp);
    for (const [fp, p] of this.pendingEgress) {
      if (now - p.atMs <= PENDING_MS) continue;
      this.pendingEgress.delete(fp);
      this.counters.unmatchedEgress++;
    }
    for (const [key, c] of this.connections)
      if (c.flowId === undefined && now - c.lastActivityMs > IDLE_CONNECTION_MS) this.connections.delete(key);
    return reaped;
  }

  /**
   * Remove flows that may no longer be right (a route, neighbour, MTU or config changed).
   * Connections keep their TCP state, so the next packets relearn them at once.
   */
  invalidate(match: (flow: { id: number; directions: FlowDirection[] }) => boolean): number {
    let removed = 0;
    for (const [, c] of this.connections) {
      if (c.flowId === undefined) continue;
      const directions = [c.orig, c.reply].filter((d): d is Direction => d !== undefined).map((d) => this.flowDirection(c, d));
      if (!match({ id: c.flowId, directions })) continue;
      this.dp.removeFlow(c.flowId);
      this.byFlow.delete(c.flowId);
      c.flowId = undefined;
      c.installedPair = false;
      c.orig = c.reply = undefined;
      removed++;
    }
    this.removedBy.invalidated = (this.removedBy.invalidated ?? 0) + removed;
    return removed;
  }

  stats(): LearnerStats {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const pct = (p: number) => (sorted.length === 0 ? null : (sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number));
    return {
      ...this.counters,
      removedBy: { ...this.removedBy },
      connections: this.connections.size,
      latencyMs: { p50: pct(0.5), p99: pct(0.99), samples: sorted.length },
    };
  }
}
