/**
 * A running gateway: the fast path (Dataplane) with a kernel mirror of every port (a TAP
 * with the port's name and MAC) and tunnel (a TUN), the kernel state the config describes
 * (KernelMirror), and the learner that offloads what the kernel forwards. The kernel is the
 * authority; the fast path caches its decisions.
 *
 *   ports:   <name>      the DPDK device       punts -> tap:<name>
 *            tap:<name>  net_tap iface=<name>  what the kernel sends -> <name>
 *   VLANs:   <name>      a tag on its parent   punts -> tap:<name>, a TAP of its own (no 8021q)
 *   tunnels: tun:<name>  net_tun iface=<name>  decapsulated punts in, encapsulated egress out
 */
import { execFile } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { promisify } from 'node:util';

import { offloadDevices, overIPv4, type CompiledConfig, type PortModel, type TunnelModel, type VlanModel } from '../config/compile';
import { Conntrack, conntrackSysctl, type CtConnection } from '../conntrack';
import { Dataplane, type FlowDirection, type TraceOptions, type TunnelOptions, type VlanOptions } from '../dataplane';
import { FlowgateError } from '../errors';
import type { Logger } from '../log';
import { KernelMirror } from '../slowpath/kernel';
import { type ConntrackTimeouts, Learner, LearnerPolicy, routedDestination } from '../slowpath/learner';
import type { KernelEvent, KernelWatch, LinkEvent, NeighborEvent, NexthopEvent, RuleEvent } from '../slowpath/monitor';
import { parsePrefix } from '../net/addr';
import { PrefixSet } from '../net/prefix-set';
import { runCapture, type CaptureRequest, type CaptureResult } from './capture';
import { gatewayFlowPages } from './flow-view';
import type { GatewayFlow, GatewayStats, GatewayTraceRecord, GatewayView, PortXstats, ReloadResult } from './types';
import { gatewayTracePages } from './trace-view';

const TICK_MS = 1000;
/** At start, how long a tunnel's next hop may take to resolve before the gateway reports it started. */
const NEIGHBOR_TIMEOUT_MS = 3000;
/**
 * Later, inside the serial queue, resolution is only started: the neighbour event (or the next
 * tick) finishes it, and nothing else waits for a router that does not answer.
 */
const NEIGHBOR_QUEUE_TIMEOUT_MS = 50;
/**
 * Kernel events wait this long for the rest of their burst: a routing daemon's thousand route
 * changes then cost one pass over the offloaded flows, not a thousand.
 */
const COALESCE_MS = 50;
/** The event-loop delay figures in stats cover windows of this many ticks (10 s). */
const LOOP_DELAY_WINDOW_TICKS = 10;
const NS_PER_MS = 1e6;
const NS_PER_SECOND = 1e9;

const tapOf = (port: string) => `tap:${port}`;
const tunOf = (tunnel: string) => `tun:${tunnel}`;

export interface GatewayOptions {
  log: Logger;
  configFile?: string;
  /** Where the kernel mirror keeps its journal; default FLOWGATE_RUNTIME_DIR or /run/flowgate. */
  runtimeDir?: string;
}

interface TunnelAdjacency {
  dev: string;
  nextHop: string;
  mac: string;
}

/** What a batch of kernel events may have changed the kernel's forwarding decisions for. */
interface KernelChanges {
  /** Destinations under these prefixes may be routed differently now. */
  prefixes: PrefixSet;
  /** Set when every flow must be re-checked, to say why (events were lost). */
  everything: string | null;
  /** Ports and tunnels that are down or gone, and the tunnels over such ports. */
  down: Set<string>;
  /** Next hops (nextHopKey) that are gone or whose flows cannot move in place. */
  deadNextHops: Set<string>;
  /** Tunnels whose underlay next hop changed or resolved. */
  retunnel: Set<string>;
  /** Devices whose next hops (nexthop objects) changed: the flows out of them are re-checked. */
  outDevs: Set<string>;
}

/** What a reload changes in the dataplane, worked out before anything is changed. */
export interface ReloadPlan {
  removeTunnels: TunnelModel[];
  /** Children before their parents. */
  removeVlans: VlanModel[];
  removePorts: PortModel[];
  changePorts: { from: PortModel; to: PortModel }[];
  addPorts: PortModel[];
  /** VLANs kept whose MTU or punt policer changes. */
  changeVlans: { from: VlanModel; to: VlanModel }[];
  /** Parents before their children. */
  addVlans: VlanModel[];
  addTunnels: TunnelModel[];
  rulesetChanged: boolean;
  policyChanged: boolean;
  mtuChanged(port: string): boolean;
  /** For the log and the SIGHUP answer: one line per change. */
  changes: string[];
}

/** Exported for its tests. */
export function planReload(old: CompiledConfig, next: CompiledConfig): ReloadPlan {
  // A port whose device or MAC changes is a new port; a tunnel changes as a whole, and goes
  // with its underlay.
  const portKey = (p: PortModel) => JSON.stringify([p.device, p.mac?.text ?? null]);
  const tunnelKey = (t: TunnelModel) => JSON.stringify([t.local.text, t.remote.text, t.underlay, outerHeader(t), t.mtu]);
  const newPorts = new Map(next.ports.map((p) => [p.name, p]));
  const oldPorts = new Map(old.ports.map((p) => [p.name, p]));
  const newTunnels = new Map(next.tunnels.map((t) => [t.name, t]));
  const replaced = (p: PortModel) => {
    const n = newPorts.get(p.name);
    return n === undefined || portKey(n) !== portKey(p);
  };
  const removePorts = old.ports.filter(replaced);
  const removedPortNames = new Set(removePorts.map((p) => p.name));
  // A VLAN whose tag, MAC or PCP changes is a new VLAN (the dataplane keys it by parent and
  // id), and goes with its parent; `vlans` lists parents first, so one pass sees a parent's
  // fate before its children's. Its MTU and punt policer change in place.
  const vlanKey = (v: VlanModel) => JSON.stringify([v.parent, v.id, v.protocol, v.mac?.text ?? null, v.pcp]);
  const newVlans = new Map(next.vlans.map((v) => [v.name, v]));
  const removeVlans: VlanModel[] = [];
  for (const v of old.vlans) {
    const n = newVlans.get(v.name);
    if (n === undefined || vlanKey(n) !== vlanKey(v) || removedPortNames.has(v.parent)) {
      removeVlans.unshift(v);
      removedPortNames.add(v.name);
    }
  }
  const removeTunnels = old.tunnels.filter((t) => {
    const n = newTunnels.get(t.name);
    return n === undefined || tunnelKey(n) !== tunnelKey(t) || removedPortNames.has(t.underlay);
  });
  const keptTunnels = new Set(old.tunnels.filter((t) => !removeTunnels.includes(t)).map((t) => t.name));
  const changePorts = old.ports.filter((p) => !replaced(p)).map((p) => ({ from: p, to: newPorts.get(p.name) as PortModel }));
  const addPorts = next.ports.filter((p) => !oldPorts.has(p.name) || removedPortNames.has(p.name));
  const oldVlans = new Set(old.vlans.map((v) => v.name));
  const addVlans = next.vlans.filter((v) => !oldVlans.has(v.name) || removedPortNames.has(v.name));
  const changeVlans = old.vlans
    .filter((v) => !removeVlans.includes(v))
    .map((v) => ({ from: v, to: newVlans.get(v.name) as VlanModel }))
    .filter(({ from, to }) => from.mtu !== to.mtu || JSON.stringify(from.punt) !== JSON.stringify(to.punt));
  const addTunnels = next.tunnels.filter((t) => !keptTunnels.has(t.name));
  const changes: string[] = [];
  for (const t of removeTunnels) changes.push(newTunnels.has(t.name) ? `tunnel ${t.name} changed` : `tunnel ${t.name} removed`);
  for (const v of removeVlans) changes.push(newVlans.has(v.name) ? `VLAN ${v.name} changed` : `VLAN ${v.name} removed`);
  for (const p of removePorts) changes.push(newPorts.has(p.name) ? `port ${p.name} changed` : `port ${p.name} removed`);
  for (const { from, to } of changePorts) {
    if (to.mtu !== from.mtu) changes.push(`port ${to.name} MTU ${from.mtu} -> ${to.mtu}`);
    if (JSON.stringify(to.punt) !== JSON.stringify(from.punt)) changes.push(`port ${to.name} punt policer`);
  }
  for (const { from, to } of changeVlans) {
    if (to.mtu !== from.mtu) changes.push(`VLAN ${to.name} MTU ${from.mtu} -> ${to.mtu}`);
    if (JSON.stringify(to.punt) !== JSON.stringify(from.punt)) changes.push(`VLAN ${to.name} punt policer`);
  }
  for (const p of addPorts) if (!oldPorts.has(p.name)) changes.push(`port ${p.name} added`);
  for (const v of addVlans) if (!oldVlans.has(v.name)) changes.push(`VLAN ${v.name} added`);
  for (const t of addTunnels) if (!old.tunnels.some((o) => o.name === t.name)) changes.push(`tunnel ${t.name} added`);
  const routesChanged = JSON.stringify(next.routes) !== JSON.stringify(old.routes);
  const rulesetChanged = next.nftables !== old.nftables;
  const policyChanged = JSON.stringify(next.flowtable) !== JSON.stringify(old.flowtable);
  if (routesChanged) changes.push('routes changed');
  if (rulesetChanged) changes.push('nftables ruleset changed');
  if (policyChanged) changes.push('flowtable policy changed');
  const mtuChangedPorts = new Set(
    [...changePorts, ...changeVlans].filter(({ from, to }) => from.mtu !== to.mtu).map(({ to }) => to.name),
  );
  return {
    removeTunnels,
    removeVlans,
    removePorts,
    changePorts,
    addPorts,
    changeVlans,
    addVlans,
    addTunnels,
    rulesetChanged,
    policyChanged,
    mtuChanged: (port) => mtuChangedPorts.has(port),
    changes,
  };
}

/**
 * The dataplane's outer header settings of a tunnel, by its underlay: the config's iproute2
 * names (ttl and tos for IPv4) become the dataplane's, which names both families' alike.
 */
function outerHeader(t: TunnelModel): Pick<TunnelOptions, 'mode' | 'encapLimit' | 'hopLimit' | 'tclass' | 'flowLabel' | 'pmtudisc'> {
  if (overIPv4(t)) return { mode: t.mode, hopLimit: t.ttl, tclass: t.tos, pmtudisc: t.pmtudisc };
  return { mode: t.mode, encapLimit: t.encaplimit, hopLimit: t.hoplimit, tclass: t.tclass, flowLabel: t.flowlabel };
}

const familyOf = (address: string): 4 | 6 => (address.includes(':') ? 6 : 4);
/** A next hop as the dataplane tells them apart: device, family of the packets, MAC. */
const nextHopKey = (dev: string, family: 4 | 6, mac: string): string => `${dev}|${family}|${mac}`;

/** Conntrack's timeouts in this namespace, which flowgate hands connections back with. */
function conntrackTimeouts(): ConntrackTimeouts {
  return { tcpClose: conntrackSysctl('tcp_timeout_close'), udp: conntrackSysctl('udp_timeout'), udpStream: conntrackSysctl('udp_timeout_stream') };
}

export class Gateway implements GatewayView {
  private readonly dp = new Dataplane();
  private readonly kernel: KernelMirror;
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
  /** dev|address -> MAC, so that a neighbour whose MAC changes moves the flows using the old one. */
  private readonly neighbors = new Map<string, string>();
  /**
   * Reloads, ticks and kernel events run one at a time, in arrival order: each sees the
   * model, the dataplane and the kernel mirror as the previous one left them.
   */
  private queue: Promise<unknown> = Promise.resolve();
  /** Bumped by every reload: work that awaited across one re-checks what it was for. */
  private generation = 0;
  /** Kernel events waiting for their burst to end (COALESCE_MS), then handled as one batch. */
  private pendingEvents: KernelEvent[] = [];
  private coalesceTimer: NodeJS.Timeout | undefined;
  private batchQueued = false;
  /** The kernel's nexthop objects by id: the devices they lead through, for applyNexthop. */
  private readonly nexthops = new Map<number, { dev: string | null; group: number[] }>();
  /** Tunnel → the "dev|address" of the next hop it waits for, so that its neighbour event resolves it. */
  private readonly unresolvedNextHops = new Map<string, string>();
  private stopping = false;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private loopDelayWindow = { ticks: 0, p99: 0, max: 0 };
  private readonly kernelCounters = { events: 0, batches: 0, errors: 0, nextHopsRewritten: 0, mtuRefused: 0 };

  constructor(config: CompiledConfig, options: GatewayOptions) {
    this.model = config;
    this.log = options.log.child({ component: 'gateway' });
    this.kernel = new KernelMirror(options.runtimeDir === undefined ? {} : { runtimeDir: options.runtimeDir });
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
      devices: [...offloadDevices(config)],
      l4proto: config.flowtable.l4proto,
      timeout: config.flowtable.timeout,
      tunnelUnderlay: new Map(config.tunnels.map((t) => [t.name, t.underlay])),
      conntrack: this.ctTimeouts,
    };
  }

  async start(): Promise<void> {
    const m = this.model;
    this.startedAt = Date.now();
    this.loopDelay.enable();
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
      this.dp.setFlowCounters(m.flowtable.counter);
      // How long each part of a start takes, for the log: a restart after a crash is judged by it.
      const kernelStart = performance.now();
      await this.kernel.creatingInterfaces(() => {
        for (const port of m.ports) this.addPort(port);
        for (const vlan of m.vlans) this.addVlan(vlan);
        for (const tunnel of m.tunnels) this.addTunnelDevice(tunnel);
      });
      await this.kernel.apply(m);
      await this.loadNeighbors();
      for (const nh of await this.kernel.nexthops()) this.nexthops.set(nh.id, { dev: nh.blackhole ? null : nh.dev, group: nh.group });
      this.watch = this.kernel.watch((event) => this.onKernelEvent(event));
      await this.watch.ready;
      const tunnelsStart = performance.now();
      for (const tunnel of m.tunnels) await this.resolveTunnel(tunnel, NEIGHBOR_TIMEOUT_MS);
      const timing = { kernel_ms: Math.round(tunnelsStart - kernelStart), tunnels_ms: Math.round(performance.now() - tunnelsStart) };
      this.timer = setInterval(() => void this.serial('periodic maintenance', () => this.tick()).catch(() => undefined), TICK_MS);
      this.log.info('gateway started', { ports: m.ports.length, vlans: m.vlans.length, tunnels: m.tunnels.length, ...timing });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stop everything and give back every kernel interface, address, route and ruleset. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.loopDelay.disable();
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (this.coalesceTimer !== undefined) clearTimeout(this.coalesceTimer);
    this.coalesceTimer = undefined;
    this.pendingEvents = [];
    // The task under way finishes (a reload, a batch of events); those queued behind it see
    // `stopping` and do nothing.
    await this.queue;
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

  /**
   * A VLAN sub-interface of a port (or, QinQ, of an 802.1ad VLAN). Its kernel twin is a TAP of
   * its own named like it, not an 8021q device on the port's TAP: the kernel sees untagged
   * frames on it, needs no 8021q module, and the fast path pushes and pops the tags. Created
   * whole or not at all, so that a reload's undo can rely on it.
   */
  private addVlan(vlan: VlanModel): void {
    const mac = vlan.mac?.text ?? this.dp.port(vlan.port).mac;
    this.dp.addPort({ name: tapOf(vlan.name), device: `net_tap${this.vdevs++},iface=${vlan.name},mac=${mac}`, mtu: vlan.mtu, poll: false });
    const options: VlanOptions = {
      name: vlan.name,
      parent: vlan.parent,
      id: vlan.id,
      protocol: vlan.protocol,
      mtu: vlan.mtu,
      mac,
      pcp: vlan.pcp,
      slowpath: tapOf(vlan.name),
    };
    let added = false;
    try {
      this.dp.addVlan(options);
      added = true;
      this.dp.setPuntPolicer(vlan.name, vlan.punt);
    } catch (err) {
      if (added) this.dp.removeVlan(vlan.name);
      this.dp.removePort(tapOf(vlan.name));
      throw err;
    }
  }

  private removeVlan(name: string): void {
    this.dp.removeVlan(name);
    this.dp.removePort(tapOf(name));
  }

  /** Whether `dev` is a port or VLAN of the running config: a device flows go in and out of. */
  private isPortOrVlan(dev: string): boolean {
    return this.model.ports.some((p) => p.name === dev) || this.model.vlans.some((v) => v.name === dev);
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
   * its TUN traffic waits in the kernel. False when it is not (or no longer) resolved, or
   * when a reload replaced the tunnel while this awaited the kernel.
   */
  private async resolveTunnel(t: TunnelModel, neighborTimeoutMs = NEIGHBOR_QUEUE_TIMEOUT_MS): Promise<boolean> {
    const generation = this.generation;
    const stale = () => this.stopping || generation !== this.generation || !this.model.tunnels.includes(t);
    const route = await this.kernel.routeTo(t.remote.text);
    if (stale()) return false;
    if (route === null || route.dev !== t.underlay) {
      this.log.warn('no route to tunnel remote over its underlay', { tunnel: t.name, remote: t.remote.text, dev: route?.dev ?? null });
      return false;
    }
    const nextHop = route.gateway ?? t.remote.text;
    const mac = await this.kernel.resolveNeighbor(route.dev, nextHop, neighborTimeoutMs);
    if (stale()) return false;
    if (mac === null) {
      this.log.warn('tunnel next hop unresolved', { tunnel: t.name, next_hop: nextHop, dev: route.dev });
      this.unresolvedNextHops.set(t.name, `${route.dev}|${nextHop}`);
      return false;
    }
    this.unresolvedNextHops.delete(t.name);
    const adj = this.adjacencies.get(t.name);
    if (adj !== undefined && adj.dev === route.dev && adj.nextHop === nextHop && adj.mac === mac) return true;
    const options: TunnelOptions = {
      name: t.name,
      local: t.local.text,
      remote: t.remote.text,
      ...outerHeader(t),
      mtu: t.mtu,
      underlay: t.underlay,
      nextHopMac: mac,
      slowpath: tunOf(t.name),
    };
    if (adj !== undefined) this.dp.updateTunnel(options);
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

  /**
   * Runs `fn` after everything queued before it. An error is logged and counted under `what`
   * and rethrown to the caller (a reload reports it; ticks and events only log).
   */
  private serial<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        this.log.error(`${what} failed`, { error: err instanceof Error ? err.message : String(err) });
        throw err;
      }
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Kernel events are gathered for COALESCE_MS, then handled as one batch in the serial queue. */
  private onKernelEvent(event: KernelEvent): void {
    this.kernelCounters.events++;
    this.pendingEvents.push(event);
    if (this.coalesceTimer !== undefined || this.batchQueued) return;
    this.coalesceTimer = setTimeout(() => {
      this.coalesceTimer = undefined;
      this.batchQueued = true;
      // Events that arrive while the batch waits its turn join it.
      void this.serial('kernel event handling', async () => {
        this.batchQueued = false;
        const batch = this.pendingEvents;
        this.pendingEvents = [];
        if (!this.stopping) await this.applyKernelEvents(batch);
      }).catch(() => this.kernelCounters.errors++);
    }, COALESCE_MS);
  }

  /**
   * One burst of kernel changes: neighbours and MTUs at once, then one pass over the
   * offloaded flows for everything the burst may have changed the kernel's mind about, then
   * the tunnels whose underlay next hop may have moved. A change that fails is logged and
   * counted; the others still apply.
   */
  private async applyKernelEvents(batch: readonly KernelEvent[]): Promise<void> {
    this.kernelCounters.batches++;
    const changes: KernelChanges = { prefixes: new PrefixSet(), everything: null, down: new Set(), deadNextHops: new Set(), retunnel: new Set(), outDevs: new Set() };
    for (const event of batch) {
      try {
        await this.applyKernelEvent(event, changes);
      } catch (err) {
        this.kernelCounters.errors++;
        this.log.error('kernel event not applied', { event: event.kind, error: err instanceof Error ? err.message : String(err) });
      }
    }
    this.invalidateFor(changes);
    // Unresolved tunnels are retried by the tick, and at once when their next hop's neighbour
    // entry resolves (retunnel).
    for (const t of this.model.tunnels) {
      const affected =
        changes.everything !== null || changes.retunnel.has(t.name) || changes.prefixes.covers(t.remote.text) || changes.down.has(t.underlay) || changes.outDevs.has(t.underlay);
      if (affected) await this.resolveTunnel(t);
    }
  }

  private async applyKernelEvent(event: KernelEvent, changes: KernelChanges): Promise<void> {
    switch (event.kind) {
      case 'neigh':
        this.applyNeighbor(event, changes);
        break;
      case 'route':
        // Whatever its table or type: the kernel's decision changes only for the
        // destinations the prefix covers (a new local address, a more specific route...).
        changes.prefixes.add(parsePrefix(event.to));
        break;
      case 'link':
        await this.applyLink(event, changes);
        break;
      case 'rule':
        this.applyRule(event, changes);
        break;
      case 'nexthop':
        this.applyNexthop(event, changes);
        break;
      case 'resync':
        // Changes were missed (the event socket overran): everything derived is suspect.
        this.log.warn('kernel events lost (ENOBUFS): resynchronised', { enobufs: event.enobufs, neighbours: event.neighbors.length });
        await this.loadNeighbors(event.neighbors);
        changes.everything = 'kernel events lost';
        break;
      default:
        break;
    }
  }

  /**
   * A neighbour's MAC changed: the flows of its address family sent to the old MAC on that
   * device now go to the new one, rewritten in place in the dataplane, none removed. The
   * dataplane tells flows apart by MAC and family only, so when another neighbour of the
   * family on the device still has the old MAC (a router's global and link-local IPv6
   * addresses), the flows go instead, as they do when the neighbour is gone or unresolved,
   * and the next packets offload them again through whichever the kernel picks.
   */
  private applyNeighbor(event: NeighborEvent, changes: KernelChanges): void {
    const key = `${event.dev}|${event.address}`;
    const old = this.neighbors.get(key);
    const now = event.deleted ? null : event.mac;
    if (now === null) this.neighbors.delete(key);
    else this.neighbors.set(key, now);
    const family = familyOf(event.address);
    if (old !== undefined && old !== now) {
      const shared = [...this.neighbors].some(([k, mac]) => mac === old && k.startsWith(`${event.dev}|`) && familyOf(k.slice(event.dev.length + 1)) === family);
      if (now !== null && !shared && this.isPortOrVlan(event.dev)) {
        const adjacencies = this.dp.rewriteNextHop(event.dev, family, old, now);
        const connections = this.learner.rewriteNextHop(event.dev, family, old, now);
        this.kernelCounters.nextHopsRewritten += adjacencies;
        if (adjacencies > 0) this.log.info('next hop moved in place', { dev: event.dev, address: event.address, from: old, to: now, connections });
      } else {
        changes.deadNextHops.add(nextHopKey(event.dev, family, old));
      }
    }
    for (const t of this.model.tunnels) {
      const adj = this.adjacencies.get(t.name);
      const resolvesAdjacency = adj !== undefined && adj.dev === event.dev && adj.nextHop === event.address && now !== adj.mac;
      if (resolvesAdjacency || (now !== null && this.unresolvedNextHops.get(t.name) === key)) changes.retunnel.add(t.name);
    }
  }

  /**
   * A policy routing rule changed. One that selects by destination alone can only change the
   * decision for the destinations it covers; any other selector (source, interface, mark,
   * none at all) may change any flow's.
   */
  private applyRule(event: RuleEvent, changes: KernelChanges): void {
    if (event.dst !== null && event.src === null && event.iif === null && event.oif === null && event.fwmark === null) changes.prefixes.add(parsePrefix(event.dst));
    else changes.everything = 'policy routing rule changed';
  }

  /**
   * A nexthop object (FRR's `nhid` routes) changed: the routes that use it now lead
   * elsewhere, but which destinations they cover is not known here without holding every
   * route. The flows out of the devices it (and, for a group, its members) led through before
   * and leads through now are re-checked; a blackhole, or a member not known, re-checks all.
   */
  private applyNexthop(event: NexthopEvent, changes: KernelChanges): void {
    const devsOf = (id: number): (string | null)[] => {
      const nh = this.nexthops.get(id);
      if (nh === undefined) return [null];
      if (nh.group.length === 0) return [nh.dev];
      return nh.group.map((member) => this.nexthops.get(member)?.dev ?? null);
    };
    const before = this.nexthops.has(event.id) ? devsOf(event.id) : [];
    if (event.deleted) this.nexthops.delete(event.id);
    else this.nexthops.set(event.id, { dev: event.blackhole ? null : event.dev, group: event.group });
    const after = event.deleted ? [] : devsOf(event.id);
    for (const dev of [...before, ...after]) {
      if (dev === null) changes.everything = 'nexthop changed';
      else changes.outDevs.add(dev);
    }
  }

  private async applyLink(event: LinkEvent, changes: KernelChanges): Promise<void> {
    const isOurs = this.isPortOrVlan(event.dev) || this.model.tunnels.some((t) => t.name === event.dev);
    if (!isOurs) return;
    // The kernel forwards nothing through an interface that is down: neither may the fast path.
    // A VLAN goes down with its parent, as the kernel's follows its real device's state;
    // `vlans` lists parents first.
    if (event.deleted || !event.up) {
      changes.down.add(event.dev);
      for (const v of this.model.vlans) if (changes.down.has(v.parent)) changes.down.add(v.name);
      for (const t of this.model.tunnels) if (changes.down.has(t.underlay)) changes.down.add(t.name);
      return;
    }
    if (!this.isPortOrVlan(event.dev)) return;
    const name = event.dev;
    const isVlan = this.model.vlans.some((v) => v.name === name);
    const info = this.dp.port(name);
    if (event.mtu === info.mtu) return;
    try {
      // Someone changed the TAP's MTU: the port (or VLAN) follows, and flows out of it are re-checked.
      this.dp.setMtu(name, event.mtu);
    } catch (err) {
      // The NIC cannot take it, or (a VLAN) it is above the parent's, as the kernel's 8021q
      // refuses: the TAP goes back to the MTU the fast path has, so that the kernel does not
      // send what the port would drop.
      this.kernelCounters.mtuRefused++;
      this.log.warn(isVlan ? "VLAN MTU above its parent's: the kernel interface is set back" : 'port MTU refused by the NIC: the kernel interface is set back', {
        port: name,
        mtu: event.mtu,
        kept: info.mtu,
        error: err instanceof Error ? err.message : String(err),
      });
      await this.kernel.putBackMtu(name, info.mtu);
      return;
    }
    const n = this.learner.invalidate((f) => f.directions.some((d) => 'port' in d.out && d.out.port === name));
    this.log.info(isVlan ? 'VLAN MTU changed' : 'port MTU changed', { port: name, mtu: event.mtu, flows_invalidated: n });
    await this.followUnderlayMtu(name);
  }

  /** One pass over the offloaded flows: those a batch of kernel changes may have made wrong go. */
  private invalidateFor(changes: KernelChanges): void {
    if (changes.everything !== null) {
      this.invalidateAll(changes.everything);
      return;
    }
    // The destinations a changed prefix covers, each checked once: most bursts cover none,
    // and then no flow is looked at.
    const rerouted = new Set<string>();
    if (changes.prefixes.size > 0) for (const dst of this.learner.destinations()) if (changes.prefixes.covers(dst)) rerouted.add(dst);
    if (rerouted.size === 0 && changes.down.size === 0 && changes.deadNextHops.size === 0 && changes.outDevs.size === 0) return;
    const through = (d: FlowDirection): boolean => {
      const out = 'tunnel' in d.out ? d.out.tunnel : d.out.port;
      if (changes.down.has(d.in) || changes.down.has(out) || (d.tunnel !== undefined && changes.down.has(d.tunnel))) return true;
      if ('port' in d.out && changes.deadNextHops.has(nextHopKey(d.out.port, familyOf(d.dst), d.out.mac))) return true;
      if ('port' in d.out && changes.outDevs.has(d.out.port)) return true;
      return rerouted.has(routedDestination(d));
    };
    const n = this.learner.invalidate((f) => f.directions.some(through));
    if (n > 0)
      this.log.info('flows invalidated', {
        reason: 'kernel changes',
        prefixes: changes.prefixes.size,
        links_down: [...changes.down].join(',') || undefined,
        next_hops_gone: changes.deadNextHops.size,
        flows: n,
      });
  }

  /** The tunnels over `port` follow its MTU (their effective MTU, and their TUNs'). */
  private async followUnderlayMtu(port: string): Promise<void> {
    for (const t of this.model.tunnels) if (t.underlay === port) await this.followTunnelMtu(t.name);
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
    if (this.stopping) return;
    if (++this.loopDelayWindow.ticks >= LOOP_DELAY_WINDOW_TICKS) {
      this.loopDelayWindow = { ticks: 0, p99: this.loopDelay.percentile(99) / NS_PER_MS, max: this.loopDelay.max / NS_PER_MS };
      this.loopDelay.reset();
    }
    const started = performance.now();
    this.learner.tick();
    this.tickMs.last = performance.now() - started;
    this.tickMs.max = Math.max(this.tickMs.max, this.tickMs.last);
    for (const m of this.dp.applyPathMtuReports()) {
      if (m.pathMtu === null) this.log.info('tunnel path MTU expired', { tunnel: m.name, mtu: m.effectiveMtu });
      else {
        // What lowered it: the underlay's own ICMP error (an IPv4 underlay's fragmentation needed).
        const tunnel = this.model.tunnels.find((t) => t.name === m.name);
        const by = tunnel !== undefined && overIPv4(tunnel) ? 'ICMP fragmentation needed' : 'ICMPv6 packet too big';
        this.log.info(`tunnel path MTU lowered by ${by}`, { tunnel: m.name, path_mtu: m.pathMtu, mtu: m.effectiveMtu });
      }
      await this.followTunnelMtu(m.name);
    }
    for (const t of this.model.tunnels) if (!this.adjacencies.has(t.name)) await this.resolveTunnel(t);
  }

  // ---- reload --------------------------------------------------------------------------

  /**
   * Applies `next` as one transaction, in the serial queue: everything that can be checked
   * is checked before anything changes; then each step is applied with its undo recorded,
   * and a failing step undoes the ones before it, so that a refused reload leaves the
   * dataplane, the kernel and the learner as they were.
   */
  reload(next: CompiledConfig): Promise<ReloadResult> {
    return this.serial('reload', () => this.reloadNow(next));
  }

  private async reloadNow(next: CompiledConfig): Promise<ReloadResult> {
    const old = this.model;
    if (JSON.stringify(next.workers) !== JSON.stringify(old.workers) || JSON.stringify(next.eal) !== JSON.stringify(old.eal))
      throw new FlowgateError('ERR_FLOWGATE_RELOAD', 'workers and eal settings take effect on restart only; the running config is unchanged');
    await this.kernel.validate(next);
    const plan = planReload(old, next);
    const before = this.dp.stats().flows.removed;
    const undo: (() => Promise<void> | void)[] = [];
    const step = async (apply: () => Promise<void> | void, revert: () => Promise<void> | void) => {
      await apply();
      undo.push(revert);
    };
    this.generation++;
    try {
      // Tunnels first: they sit on ports, and go with their underlay. The learner forgets the
      // flows through what goes, so that their next packets offload them again.
      for (const t of plan.removeTunnels) {
        this.forgetFlowsThrough(t.name);
        await step(
          () => this.removeTunnel(t.name),
          () => this.addTunnelDevice(t),
        );
      }
      for (const v of plan.removeVlans) {
        this.forgetFlowsThrough(v.name);
        await step(
          () => this.removeVlan(v.name),
          () => this.addVlan(v),
        );
      }
      for (const p of plan.removePorts) {
        this.forgetFlowsThrough(p.name);
        await step(
          () => this.removePort(p.name),
          () => this.addPort(p),
        );
      }
      // A port's or a VLAN's MTU and punt policer change in place.
      const changeInPlace = async (from: PortModel | VlanModel, to: PortModel | VlanModel) => {
        if (to.mtu !== from.mtu)
          await step(
            () => this.setPortMtu(to.name, to.mtu),
            () => this.setPortMtu(from.name, from.mtu),
          );
        if (JSON.stringify(to.punt) !== JSON.stringify(from.punt))
          await step(
            () => this.dp.setPuntPolicer(to.name, to.punt),
            () => this.dp.setPuntPolicer(from.name, from.punt),
          );
      };
      for (const { from, to } of plan.changePorts) await changeInPlace(from, to);
      for (const p of plan.addPorts)
        await step(
          () => this.addPort(p),
          () => this.removePort(p.name),
        );
      for (const { from, to } of plan.changeVlans) await changeInPlace(from, to);
      for (const v of plan.addVlans)
        await step(
          () => this.addVlan(v),
          () => this.removeVlan(v.name),
        );
      for (const t of plan.addTunnels)
        await step(
          () => this.addTunnelDevice(t),
          () => this.removeTunnel(t.name),
        );
      await step(
        () => this.kernel.apply(next),
        () => this.kernel.apply(old),
      );
    } catch (err) {
      for (const revert of undo.reverse()) {
        try {
          await revert();
        } catch (undoErr) {
          this.log.error('reload rollback step failed', { error: undoErr instanceof Error ? undoErr.message : String(undoErr) });
        }
      }
      const message = err instanceof Error ? err.message : String(err);
      throw new FlowgateError('ERR_FLOWGATE_RELOAD', `reload failed and was rolled back, the running config is unchanged: ${message}`, { cause: err });
    }
    this.model = next;
    for (const t of next.tunnels) if (!this.adjacencies.has(t.name)) await this.resolveTunnel(t);
    for (const { to } of [...plan.changePorts, ...plan.changeVlans]) if (plan.mtuChanged(to.name)) await this.followUnderlayMtu(to.name);

    this.learner.setPolicy(this.policyOf(next));
    this.dp.setFlowCounters(next.flowtable.counter);
    // Flows the new policy would not offload, and any flow when the ruleset changed (its
    // verdict may differ now), go; the next packets of those still allowed offload them
    // again. Changed routes need nothing here: the kernel reports them like anyone's, and
    // the flows their prefixes cover go with that batch of events.
    if (plan.rulesetChanged) this.invalidateAll('config reloaded');
    else if (plan.policyChanged) {
      const devices = offloadDevices(next);
      this.learner.invalidate((f) =>
        f.directions.some(
          (d) =>
            !next.flowtable.l4proto.includes(d.proto) ||
            !devices.has(d.tunnel === undefined ? d.in : (next.tunnels.find((t) => t.name === d.tunnel)?.underlay ?? '')) ||
            !devices.has('tunnel' in d.out ? (next.tunnels.find((t) => t.name === (d.out as { tunnel: string }).tunnel)?.underlay ?? '') : d.out.port),
        ),
      );
    }
    const flowsRemoved = this.dp.stats().flows.removed - before;
    this.log.debug('gateway reconfigured', { changes: plan.changes.length, flows_removed: flowsRemoved });
    return { changes: plan.changes, flowsRemoved };
  }

  /** The learner forgets the connections through a port or tunnel that the dataplane is about to remove. */
  private forgetFlowsThrough(dev: string): void {
    this.learner.invalidate((f) =>
      f.directions.some((d) => d.in === dev || d.tunnel === dev || ('tunnel' in d.out ? d.out.tunnel : d.out.port) === dev),
    );
  }

  private setPortMtu(name: string, mtu: number): void {
    this.dp.setMtu(name, mtu);
    this.dp.setMtu(tapOf(name), mtu);
  }

  // ---- views ---------------------------------------------------------------------------

  stats(): GatewayStats {
    // Just before the reads that rates are computed from (the port and fast-path counters).
    const monotonic = Number(process.hrtime.bigint()) / NS_PER_SECOND;
    const s = this.dp.stats();
    const l = this.learner.stats();
    const ct = this.conntrack?.stats();
    const rtnl = this.kernel.rtnlStats();
    const ports: GatewayStats['ports'] = {};
    for (const name of [...this.model.ports, ...this.model.vlans].map((p) => p.name)) {
      const c = s.ports[name];
      if (c === undefined) continue;
      ports[name] = {
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
      monotonic,
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
      mbufs: { in_use: s.mbufs.inUse, total: s.mbufs.total },
      kernel: {
        events: this.kernelCounters.events,
        batches: this.kernelCounters.batches,
        errors: this.kernelCounters.errors,
        next_hops_rewritten: this.kernelCounters.nextHopsRewritten,
        mtu_refused: this.kernelCounters.mtuRefused,
        enobufs: rtnl?.enobufs ?? 0,
        resyncs: rtnl?.resyncs ?? 0,
        routes: { ipv4: rtnl?.routes.ipv4 ?? 0, ipv6: rtnl?.routes.ipv6 ?? 0 },
      },
      process: { rss_bytes: process.memoryUsage.rss(), event_loop_delay_ms: { p99: this.loopDelayWindow.p99, max: this.loopDelayWindow.max } },
    };
  }

  flows(): AsyncIterable<GatewayFlow[]> {
    return gatewayFlowPages(this.dp, new Map(this.model.tunnels.map((t) => [t.name, t.mode])));
  }

  xstats(): PortXstats {
    const result: PortXstats = {};
    // Ports only: a VLAN sub-interface's frames are counted in its parent's NIC.
    for (const { name } of this.model.ports) result[name] = this.dp.xstats(name);
    return result;
  }

  trace(options: TraceOptions, summary?: { lost: number }): AsyncIterable<GatewayTraceRecord[]> {
    return gatewayTracePages(this.dp, options, summary);
  }

  capture(request: CaptureRequest, alive: (written: number) => Promise<void>): Promise<CaptureResult> {
    return runCapture(this.dp, [...this.model.ports, ...this.model.vlans].map((p) => p.name), request, alive);
  }

  /** For tests and the demo: the learner's own figures. */
  learnerStats() {
    return this.learner.stats();
  }
}
