/**
 * A running gateway: the fast path (Dataplane) with a kernel mirror of every port (a TAP
 * with the port's name and MAC) and tunnel (a TUN), the kernel state the config describes
 * (KernelMirror), and the learner that offloads what the kernel forwards. The kernel is the
 * authority; the fast path caches its decisions.
 *
 *   ports:   <name>      the DPDK device       punts -> tap:<name>
 *            tap:<name>  net_tap iface=<name>  what the kernel sends -> <name>
 *   tunnels: tun:<name>  net_tun iface=<name>  decapsulated punts in, encapsulated egress out
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import type { CompiledConfig, PortModel, TunnelModel } from '../config/compile';
import { Conntrack, conntrackSysctl, type CtConnection } from '../conntrack';
import { Dataplane, Flow, FlowDirection } from '../dataplane';
import { FlowgateError } from '../errors';
import type { Logger } from '../log';
import { KernelMirror } from '../slowpath/kernel';
import { type ConntrackTimeouts, Learner, LearnerPolicy } from '../slowpath/learner';
import type { KernelEvent, KernelWatch, NeighborEvent } from '../slowpath/monitor';
import type { FlowEndpointView, GatewayFlow, GatewayStats, GatewayView, ReloadResult } from './types';

const TICK_MS = 1000;
const NEIGHBOR_TIMEOUT_MS = 3000;

const tapOf = (port: string) => `tap:${port}`;
const tunOf = (tunnel: string) => `tun:${tunnel}`;

export interface GatewayOptions {
  log: Logger;
  configFile?: string;
}

interface TunnelAdjacency {
  dev: string;
  nextHop: string;
  mac: string;
}

/** Conntrack's timeouts in this namespace, which flowgate hands connections back with. */
function conntrackTimeouts(): ConntrackTimeouts {
  return { tcpClose: conntrackSysctl('tcp_timeout_close'), udp: conntrackSysctl('udp_timeout'), udpStream: conntrackSysctl('udp_timeout_stream') };
}

export class Gateway implements GatewayView {
  private readonly dp = new Dataplane();
  private readonly kernel = new KernelMirror();
  private readonly learner: Learner;
  private conntrack: Conntrack | undefined;
  private ctTimeouts: ConntrackTimeouts = { tcpClose: 10, udp: 30, udpStream: 120 };
  private readonly tickMs = { last: 0, max: 0 };
  private readonly log: Logger;
  private model: CompiledConfig;
  private watch: KernelWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private vdevs = 0;
  /** Tunnels in the dataplane, with the underlay next hop they were built with. */
  private readonly adjacencies = new Map<string, TunnelAdjacency>();
  /** dev|address -> MAC, so that a neighbour whose MAC changes invalidates the flows using the old one. */
  private readonly neighbors = new Map<string, string>();

  constructor(config: CompiledConfig, options: GatewayOptions) {
    this.model = config;
    this.log = options.log.child({ component: 'gateway' });
    const tracker = {
      get: (tuples: Parameters<Conntrack['get']>[0]) => this.requireConntrack().get(tuples),
      update: (updates: Parameters<Conntrack['update']>[0]) => this.requireConntrack().update(updates),
    };
    this.learner = new Learner(this.dp, tracker, this.policyOf(config), undefined, undefined, (what, err) =>
      this.log.warn(what, { error: err instanceof Error ? err.message : String(err) }),
    );
  }

  private requireConntrack(): Conntrack {
    if (this.conntrack === undefined) throw new FlowgateError('ERR_FLOWGATE_CONNTRACK', 'conntrack is not open: the gateway is not running');
    return this.conntrack;
  }

  private policyOf(config: CompiledConfig): LearnerPolicy {
    return {
      devices: config.flowtable.devices,
      l4proto: config.flowtable.l4proto,
      timeout: config.flowtable.timeout,
      tunnelUnderlay: new Map(config.tunnels.map((t) => [t.name, t.underlay])),
      conntrack: this.ctTimeouts,
    };
  }

  async start(): Promise<void> {
    const m = this.model;
    this.startedAt = Date.now();
    // Conntrack first: without it (or its events) flowgate cannot know what it may offload,
    // and refuses to start. Where ctnetlink is a module, it is loaded (and with it conntrack).
    await promisify(execFile)('modprobe', ['-q', 'nf_conntrack_netlink']).catch(() => undefined);
    this.conntrack = Conntrack.open({
      events: ['destroy'],
      onEvents: (events) => this.onConntrackDestroyed(events.filter((e) => e.type === 'destroy').map((e) => e.conn)),
      onResync: (all) => this.onConntrackResync(all),
    });
    try {
      this.ctTimeouts = conntrackTimeouts();
      this.learner.setPolicy(this.policyOf(m));
      this.dp.start({
        workers: m.workers,
        hugepages: m.eal.hugepages,
        eal: m.eal.args,
        flowCapacity: m.flowtable.size,
        onObservations: (records) => this.learner.observe(records),
        onWarning: (message) => this.log.warn('dataplane warning', { message }),
      });
    } catch (err) {
      this.conntrack.close();
      this.conntrack = undefined;
      throw err;
    }
    try {
      this.log.info('dataplane started', { eal: this.dp.ealArgs.join(' '), hugepages: this.dp.hugepages });
      for (const port of m.ports) this.addPort(port);
      for (const tunnel of m.tunnels) this.addTunnelDevice(tunnel);
      this.dp.setFlowCounters(m.flowtable.counter);
      await this.kernel.apply(m);
      await this.loadNeighbors();
      this.watch = this.kernel.watch((event) => this.onKernelEvent(event));
      await this.watch.ready;
      for (const tunnel of m.tunnels) await this.resolveTunnel(tunnel);
      this.timer = setInterval(() => void this.tick(), TICK_MS);
      this.log.info('gateway started', { ports: m.ports.length, tunnels: m.tunnels.length });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stop everything and give back every kernel interface, address, route and ruleset. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    const failures: unknown[] = [];
    this.conntrack?.close();
    this.conntrack = undefined;
    if (this.watch !== undefined) await this.watch.stop().catch((err: unknown) => failures.push(err));
    this.watch = undefined;
    await this.kernel.teardown().catch((err: unknown) => failures.push(err));
    // Closing the TAP and TUN ports removes their kernel interfaces.
    try {
      this.dp.stop();
    } catch (err) {
      failures.push(err);
    }
    if (failures.length > 0) throw failures[0];
  }

  // ---- devices -------------------------------------------------------------------------

  private addPort(port: PortModel): void {
    const info = this.dp.addPort({ name: port.name, device: port.device, mtu: port.mtu, ...(port.mac === null ? {} : { mac: port.mac.text }) });
    // The kernel's twin of the port: same name, same MAC, same MTU.
    this.dp.addPort({ name: tapOf(port.name), device: `net_tap${this.vdevs++},iface=${port.name},mac=${info.mac}`, mtu: port.mtu, poll: false });
    this.dp.setSlowpath(port.name, tapOf(port.name));
    this.dp.setPuntPolicer(port.name, port.punt);
  }

  private removePort(name: string): void {
    this.dp.removePort(name);
    this.dp.removePort(tapOf(name));
  }

  private addTunnelDevice(tunnel: TunnelModel): void {
    this.dp.addPort({ name: tunOf(tunnel.name), device: `net_tun${this.vdevs++},iface=${tunnel.name}`, mtu: tunnel.mtu, poll: false });
  }

  private removeTunnel(name: string): void {
    if (this.adjacencies.delete(name)) this.dp.removeTunnel(name);
    this.dp.removePort(tunOf(name));
    void this.kernel.overrideMtu(name, null);
  }

  /**
   * The tunnel's TUN takes the tunnel's effective MTU (the configured one, lowered by the
   * underlay port's MTU and the path MTU learnt from ICMPv6 packet too big), as Linux's
   * ip6tnl device MTU follows its underlay: the kernel then answers the packets the fast
   * path finds too big for the tunnel with ICMP fragmentation needed of that MTU.
   */
  private async followTunnelMtu(name: string): Promise<void> {
    if (!this.adjacencies.has(name)) return;
    const m = this.dp.tunnelMtu(name);
    await this.kernel.overrideMtu(name, m.effectiveMtu);
  }

  /**
   * A tunnel enters the fast path once the kernel knows the underlay next hop towards its
   * remote: its outer Ethernet header is the kernel's route and neighbour entry. Until then
   * its TUN traffic waits in the kernel.
   */
  private async resolveTunnel(t: TunnelModel): Promise<boolean> {
    const route = await this.kernel.routeTo(t.remote.text);
    if (route === null || route.dev !== t.underlay) {
      this.log.warn('no route to tunnel remote over its underlay', { tunnel: t.name, remote: t.remote.text, dev: route?.dev ?? null });
      return false;
    }
    const nextHop = route.gateway ?? t.remote.text;
    const mac = await this.kernel.resolveNeighbor(route.dev, nextHop, NEIGHBOR_TIMEOUT_MS);
    if (mac === null) {
      this.log.warn('tunnel next hop unresolved', { tunnel: t.name, next_hop: nextHop, dev: route.dev });
      return false;
    }
    const options = {
      name: t.name,
      local: t.local.text,
      remote: t.remote.text,
      encapLimit: t.encaplimit,
      hopLimit: t.hoplimit,
      tclass: t.tclass,
      flowLabel: t.flowlabel,
      mtu: t.mtu,
      underlay: t.underlay,
      nextHopMac: mac,
      slowpath: tunOf(t.name),
    };
    if (this.adjacencies.has(t.name)) this.dp.updateTunnel(options);
    else this.dp.addTunnel(options);
    this.adjacencies.set(t.name, { dev: route.dev, nextHop, mac });
    this.log.info('tunnel adjacency', { tunnel: t.name, next_hop: nextHop, mac });
    await this.followTunnelMtu(t.name);
    return true;
  }

  // ---- the kernel's changes -------------------------------------------------------------

  private async loadNeighbors(resynced?: NeighborEvent[]): Promise<void> {
    // Seeded from the table (the kernel's now, or a resync's) so that the first change of a
    // neighbour already has its old MAC.
    const entries = resynced ?? (await this.kernel.neighbors());
    this.neighbors.clear();
    for (const n of entries) if (n.mac !== null) this.neighbors.set(`${n.dev}|${n.address}`, n.mac);
  }

  private onKernelEvent(event: KernelEvent): void {
    switch (event.kind) {
      case 'neigh': {
        const key = `${event.dev}|${event.address}`;
        const old = this.neighbors.get(key);
        const now = event.deleted ? null : event.mac;
        if (now === null) this.neighbors.delete(key);
        else this.neighbors.set(key, now);
        if (old !== undefined && old !== now) {
          const n = this.learner.invalidate((f) => f.directions.some((d) => 'port' in d.out && d.out.port === event.dev && d.out.mac === old));
          if (n > 0) this.log.info('flows invalidated', { reason: 'neighbour changed', dev: event.dev, address: event.address, flows: n });
        }
        for (const t of this.model.tunnels) {
          const adj = this.adjacencies.get(t.name);
          if (adj !== undefined && adj.dev === event.dev && adj.nextHop === event.address && now !== null && now !== adj.mac)
            void this.resolveTunnel(t).catch((err: unknown) => this.log.error('tunnel update failed', { tunnel: t.name, error: String(err) }));
        }
        break;
      }
      case 'route':
        if (event.table !== 'main' || event.type !== 'unicast') break;
        // Any flow may now take another way: drop them all (the next packets relearn them)
        // and rebuild the tunnels' underlay adjacencies.
        this.invalidateAll('route changed');
        for (const t of this.model.tunnels) void this.resolveTunnel(t).catch(() => undefined);
        break;
      case 'link': {
        const port = this.model.ports.find((p) => p.name === event.dev);
        if (port === undefined || event.deleted) break;
        const info = this.dp.port(port.name);
        if (event.mtu !== info.mtu) {
          // Someone changed the TAP's MTU: the port follows, and flows out of it are re-checked.
          this.dp.setMtu(port.name, event.mtu);
          const n = this.learner.invalidate((f) => f.directions.some((d) => 'port' in d.out && d.out.port === port.name));
          this.log.info('port MTU changed', { port: port.name, mtu: event.mtu, flows_invalidated: n });
          this.followUnderlayMtu(port.name);
        }
        break;
      }
      case 'resync':
        // Changes were missed (the event socket overran).
        this.log.warn('kernel events lost (ENOBUFS): resynchronised', { enobufs: event.enobufs, neighbours: event.neighbors.length });
        void this.loadNeighbors(event.neighbors);
        this.invalidateAll('kernel events lost');
        for (const t of this.model.tunnels) void this.resolveTunnel(t).catch(() => undefined);
        break;
      default:
        break;
    }
  }

  /** The tunnels over `port` follow its MTU (their effective MTU, and their TUNs'). */
  private followUnderlayMtu(port: string): void {
    for (const t of this.model.tunnels)
      if (t.underlay === port)
        void this.followTunnelMtu(t.name).catch((err: unknown) => this.log.error('tunnel MTU update failed', { tunnel: t.name, error: String(err) }));
  }

  private onConntrackDestroyed(conns: CtConnection[]): void {
    const n = this.learner.onDestroyed(conns);
    if (n > 0) this.log.debug('flows removed', { reason: 'conntrack destroyed the connection', flows: n });
  }

  private onConntrackResync(all: CtConnection[]): void {
    const n = this.learner.onResync(all);
    this.log.warn('conntrack events lost (ENOBUFS): resynchronised from a dump', { connections: all.length, flows_removed: n });
  }

  private invalidateAll(reason: string): number {
    const n = this.learner.invalidate(() => true);
    if (n > 0) this.log.info('flows invalidated', { reason, flows: n });
    return n;
  }

  private async tick(): Promise<void> {
    try {
      const started = performance.now();
      this.learner.tick();
      this.tickMs.last = performance.now() - started;
      for (const m of this.dp.applyPathMtuReports()) {
        if (m.pathMtu === null) this.log.info('tunnel path MTU expired', { tunnel: m.name, mtu: m.effectiveMtu });
        else this.log.info('tunnel path MTU lowered by ICMPv6 packet too big', { tunnel: m.name, path_mtu: m.pathMtu, mtu: m.effectiveMtu });
        await this.followTunnelMtu(m.name);
      }
      this.tickMs.max = Math.max(this.tickMs.max, this.tickMs.last);
      for (const t of this.model.tunnels) if (!this.adjacencies.has(t.name)) await this.resolveTunnel(t);
    } catch (err) {
      this.log.error('periodic maintenance failed', { error: err instanceof Error ? err.message : String(err) });
    }
  }

  // ---- reload --------------------------------------------------------------------------

  async reload(next: CompiledConfig): Promise<ReloadResult> {
    const old = this.model;
    if (JSON.stringify(next.workers) !== JSON.stringify(old.workers) || JSON.stringify(next.eal) !== JSON.stringify(old.eal))
      throw new FlowgateError('ERR_FLOWGATE_RELOAD', 'workers and eal settings take effect on restart only; the running config is unchanged');
    const changes: string[] = [];
    let flowsRemoved = 0;
    const before = this.dp.stats().flows.removed;
    const portKey = (p: PortModel) => JSON.stringify([p.device, p.mac?.text ?? null]);
    const tunnelKey = (t: TunnelModel) => JSON.stringify([t.local.text, t.remote.text, t.underlay, t.encaplimit, t.hoplimit, t.tclass, t.flowlabel, t.mtu]);
    const oldPorts = new Map(old.ports.map((p) => [p.name, p]));
    const newPorts = new Map(next.ports.map((p) => [p.name, p]));
    const oldTunnels = new Map(old.tunnels.map((t) => [t.name, t]));
    const newTunnels = new Map(next.tunnels.map((t) => [t.name, t]));

    const changedPorts = new Set([...oldPorts].filter(([name, p]) => newPorts.get(name) === undefined || portKey(newPorts.get(name) as PortModel) !== portKey(p)).map(([name]) => name));
    // Tunnels first: they sit on ports, and go with their underlay.
    for (const [name, t] of oldTunnels) {
      const n = newTunnels.get(name);
      if (n === undefined || tunnelKey(n) !== tunnelKey(t) || changedPorts.has(t.underlay)) {
        this.removeTunnel(name);
        changes.push(n === undefined ? `tunnel ${name} removed` : `tunnel ${name} changed`);
      }
    }
    for (const [name, p] of oldPorts) {
      const n = newPorts.get(name);
      if (changedPorts.has(name)) {
        this.removePort(name);
        changes.push(n === undefined ? `port ${name} removed` : `port ${name} changed`);
        continue;
      }
      if (n === undefined) continue;
      if (n.mtu !== p.mtu) {
        this.dp.setMtu(name, n.mtu);
        this.dp.setMtu(tapOf(name), n.mtu);
        changes.push(`port ${name} MTU ${p.mtu} -> ${n.mtu}`);
        this.followUnderlayMtu(name);
      }
      if (JSON.stringify(n.punt) !== JSON.stringify(p.punt)) {
        this.dp.setPuntPolicer(name, n.punt);
        changes.push(`port ${name} punt policer`);
      }
    }
    for (const [name, p] of newPorts) {
      if (oldPorts.has(name) && !changedPorts.has(name)) continue;
      this.addPort(p);
      if (!oldPorts.has(name)) changes.push(`port ${name} added`);
    }
    for (const [name, t] of newTunnels) {
      if (!this.dp.ports().some((p) => p.name === tunOf(name))) {
        this.addTunnelDevice(t);
        if (!oldTunnels.has(name)) changes.push(`tunnel ${name} added`);
      }
    }
    const routesChanged = JSON.stringify(next.routes) !== JSON.stringify(old.routes);
    if (routesChanged) changes.push('routes changed');
    if (next.nftables !== old.nftables) changes.push('nftables ruleset changed');
    this.model = next;
    await this.kernel.apply(next);
    for (const t of next.tunnels) if (!this.adjacencies.has(t.name)) await this.resolveTunnel(t);

    const policyChanged = JSON.stringify(next.flowtable) !== JSON.stringify(old.flowtable);
    if (policyChanged) changes.push('flowtable policy changed');
    this.learner.setPolicy(this.policyOf(next));
    this.dp.setFlowCounters(next.flowtable.counter);
    // Flows the new policy would not offload, and any flow when routes changed (its next hop
    // may differ now), go; the next packets of those still allowed relearn them.
    if (routesChanged || next.nftables !== old.nftables) this.invalidateAll('config reloaded');
    else if (policyChanged)
      this.learner.invalidate((f) =>
        f.directions.some(
          (d) =>
            !next.flowtable.l4proto.includes(d.proto) ||
            !next.flowtable.devices.includes(d.tunnel === undefined ? d.in : (next.tunnels.find((t) => t.name === d.tunnel)?.underlay ?? '')) ||
            !next.flowtable.devices.includes('tunnel' in d.out ? (next.tunnels.find((t) => t.name === (d.out as { tunnel: string }).tunnel)?.underlay ?? '') : d.out.port),
        ),
      );
    flowsRemoved = this.dp.stats().flows.removed - before;
    this.log.debug('gateway reconfigured', { changes: changes.length, flows_removed: flowsRemoved });
    return { changes, flowsRemoved };
  }

  // ---- views ---------------------------------------------------------------------------

  stats(): GatewayStats {
    const s = this.dp.stats();
    const l = this.learner.stats();
    const ct = this.conntrack?.stats();
    const ports: GatewayStats['ports'] = {};
    for (const p of this.model.ports) {
      const c = s.ports[p.name];
      if (c === undefined) continue;
      ports[p.name] = {
        rx_packets: c.rxPackets,
        rx_bytes: c.rxBytes,
        rx_dropped: c.rxMissed + c.rxNombuf,
        rx_errors: c.rxErrors,
        tx_packets: c.txPackets,
        tx_bytes: c.txBytes,
        tx_dropped: c.txDropped,
        tx_errors: c.txErrors,
      };
    }
    return {
      uptime: Math.round((Date.now() - this.startedAt) / 1000),
      ports,
      fastpath: s.fastpath,
      slowpath: { packets: s.slowpath.packets, reasons: s.slowpath.reasons, policed: s.drops.reasons.punt_policed ?? 0 },
      drops: s.drops,
      flows: {
        active: s.flows.active,
        entries: s.flows.entries,
        capacity: s.flows.capacity,
        added: s.flows.added,
        removed: s.flows.removed,
        insert_failed: s.flows.insertFailed,
        removed_by: l.removedBy,
      },
      learner: {
        observations: l.observations,
        observations_lost: s.observations.lost,
        offload_latency_ms: { p50: l.latencyMs.p50, p99: l.latencyMs.p99 },
        forwarded: l.forwarded,
        connections: l.connections,
        directions: l.directions,
        evicted: l.evicted,
        tick_ms: { ...this.tickMs },
        heap_bytes: process.memoryUsage().heapUsed,
        conntrack: {
          queries: l.ctQueries,
          not_found: l.ctNotFound,
          refused: l.ctRefused,
          updates: l.ctUpdates,
          update_failures: l.ctUpdateFailures,
          events: ct?.events ?? 0,
          enobufs: ct?.enobufs ?? 0,
          resyncs: ct?.resyncs ?? 0,
        },
      },
      workers: s.workers.map((w) => ({ index: w.index, cpu: w.cpu, busy_ratio: w.busyRatio, rx_packets: w.rxPackets, fast_packets: w.fastPackets })),
    };
  }

  /** Every offloaded connection, a page at a time with the event loop running in between (the learner keeps learning). */
  async flows(): Promise<GatewayFlow[]> {
    const out: GatewayFlow[] = [];
    for (const page of this.dp.flowPages()) {
      for (const f of page) out.push(this.flowView(f));
      await new Promise((resolve) => setImmediate(resolve));
    }
    return out;
  }

  private endpoint(d: FlowDirection & { packets: number; bytes: number }): FlowEndpointView {
    return {
      proto: d.proto,
      src: d.src,
      dst: d.dst,
      sport: d.sport,
      dport: d.dport,
      nat: d.nat === undefined ? null : { src: d.nat.src ?? d.src, dst: d.nat.dst ?? d.dst, sport: d.nat.sport ?? d.sport, dport: d.nat.dport ?? d.dport },
      in: d.tunnel ?? d.in,
      out: 'tunnel' in d.out ? d.out.tunnel : d.out.port,
      packets: d.packets,
      bytes: d.bytes,
    };
  }

  private flowView(f: Flow): GatewayFlow {
    const o = f.original;
    const tunnel = o.tunnel ?? ('tunnel' in o.out ? o.out.tunnel : (f.reply?.tunnel ?? null));
    return {
      id: f.id,
      ...this.endpoint(o),
      tunnel,
      idle: f.idleSeconds,
      state: f.teardown ? 'teardown' : f.closing ? 'closing' : 'offloaded',
      reply: f.reply === null ? null : this.endpoint(f.reply),
    };
  }

  /** For tests and the demo: the learner's own figures. */
  learnerStats() {
    return this.learner.stats();
  }
}
