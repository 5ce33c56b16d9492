/**
 * The kernel mirror: the slow-path state the config describes, written to the kernel around
 * the TAP (per port) and TUN (per tunnel) interfaces that DPDK creates, with an exact record
 * of what flowgate changed so that a reload changes only the difference and teardown gives
 * back exactly that.
 *
 * Ownership: flowgate owns the addresses and static routes it added (one that already existed
 * is left alone, then and at teardown), the nftables tables its ruleset declares, and the
 * original value of every sysctl, MTU and admin state it changed. Reload compares the
 * config with the record to find what to remove, and with the kernel to find what to add, so
 * that it also restores what the kernel dropped meanwhile (a TAP set down by a DPDK port stop
 * loses its routes).
 *
 * The record is journalled (journal.ts) before each change, so that it survives the process:
 * a mirror that finds the journal of a dead instance in its namespace adopts its record, whose
 * originals are the kernel's real ones (the kernel now holds flowgate's values), and its next
 * apply() or teardown() undoes what that instance changed and the config no longer wants.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { TUNNEL_FAMILIES, type CompiledConfig } from '../config/compile';
import { FlowgateError } from '../errors';
import { formatIp, formatPrefix, parseIp, type IpFamily } from '../net/addr';
import { runtimeDirectory, type ProcessIdentity } from '../runtime';
import { CommandRunner, KernelCommandError, isAbsent } from './command';
import { Journal, type Intent } from './journal';
import type { KernelEvent, KernelWatch, NeighborEvent, NexthopEvent } from './monitor';
import { declaredTables, deleteTablesScript } from './nftables';
import { Rtnl, type RtnlStats } from './rtnl';

export interface AddressSpec {
  dev: string;
  /** Canonical "address/length", host bits kept: "192.168.0.2/24". */
  address: string;
}

export interface RouteSpec {
  family: IpFamily;
  /** Canonical destination prefix, "0.0.0.0/0" for a default route. */
  to: string;
  via: string | null;
  dev: string;
  metric: number;
}

export interface LinkSpec {
  dev: string;
  mtu: number;
  /** A port's or VLAN's TAP carries its MAC on Ethernet; a tunnel's TUN is L3 only. */
  kind: 'tap' | 'tun';
}

/** The kernel state a config describes, with each object under the key the kernel knows it by. */
export interface MirrorState {
  links: Map<string, LinkSpec>;
  addresses: Map<string, AddressSpec>;
  /** Static routes only: the kernel derives the connected ones from the addresses. */
  routes: Map<string, RouteSpec>;
  /** sysctl path → value, in the order to write them. */
  sysctls: Map<string, string>;
  nftables: string | null;
}

/** What flowgate changed, as restored by teardown(). */
export interface MirrorRecord {
  /** Original MTU and admin state of interfaces whose MTU or state flowgate changed. */
  links: { dev: string; mtu?: number; up?: boolean }[];
  addresses: AddressSpec[];
  routes: RouteSpec[];
  /** Original values, in the order they were first written (and are restored). */
  sysctls: { key: string; original: string }[];
  /** The ruleset is null when unknown: an nft transaction that a crash interrupted. */
  nftables: { ruleset: string | null; tables: string[] } | null;
}

/** What a dead instance changed, adopted from its journal. */
export interface AdoptedRecord {
  writer: ProcessIdentity;
  record: MirrorRecord;
}

export interface RouteDecision {
  /** 'unicast', 'local' (an address of this host), 'broadcast'... */
  type: string;
  dev: string;
  /** The next hop; null when the destination is on-link. */
  gateway: string | null;
  /** The source address the kernel would use. */
  source: string | null;
}

// ---- the desired state ------------------------------------------------------------------

const addressKey = (spec: AddressSpec): string => `${spec.address} dev ${spec.dev}`;
// The kernel tells routes of the main table apart by destination and metric: a second route
// with both equal is refused ("File exists") and one differing in via or dev replaces it.
const routeKey = (spec: RouteSpec): string => `${spec.to} metric ${spec.metric}`;
const routeValue = (spec: RouteSpec): string => `via ${spec.via ?? 'on-link'} dev ${spec.dev}`;

/** Writing ip_forward also sets conf/all/accept_redirects (to its negation, inet_forward_change()). */
const IP_FORWARD = 'net/ipv4/ip_forward';
const SIDE_EFFECTS: ReadonlyMap<string, readonly string[]> = new Map([[IP_FORWARD, ['net/ipv4/conf/all/accept_redirects']]]);

function interfaceSysctls(link: LinkSpec): [string, string][] {
  const v4 = `net/ipv4/conf/${link.dev}`;
  const v6 = `net/ipv6/conf/${link.dev}`;
  const settings: [string, string][] = [
    // Loose reverse-path filtering: the effective mode is the maximum of conf/all and the
    // interface, so 2 here is loose whatever conf/all says. Strict mode (1, systemd's and many
    // distributions' default) drops tunnel traffic whose return path leaves by another
    // interface; loose still drops sources with no route at all.
    [`${v4}/rp_filter`, '2'],
    // A router takes its addresses and routes from its config (and FRR/BIRD), never from RAs
    // heard on a port. Forwarding already ignores RAs unless accept_ra is 2; 0 says so outright.
    [`${v6}/accept_ra`, '0'],
    // DPDK sets a TAP down when it stops the port; the kernel would then flush the IPv6
    // addresses and not bring them back with the port (IPv4 addresses survive a down anyway).
    [`${v6}/keep_addr_on_down`, '1'],
  ];
  // The TAP's MAC belongs to the real port: a multicast NS the kernel sends for DAD may come
  // back through the fast path as if another host held the address, and while tentative an
  // address cannot be a source (the tunnel's `local`) for a second after every add and every
  // port restart. The addresses are the operator's static choice; TUNs skip DAD (NOARP).
  if (link.kind === 'tap') settings.push([`${v6}/accept_dad`, '0']);
  return settings;
}

/**
 * A tunnel that carries IPv6 (ip6ip6, sit) needs IPv6 on its TUN, which a new interface
 * takes from conf/default: a namespace that disables IPv6 by default would leave the TUN
 * without its addresses, routes and forwarding.
 */
function innerIPv6Sysctls(dev: string): [string, string][] {
  return [[`net/ipv6/conf/${dev}/disable_ipv6`, '0']];
}


/** The kernel interfaces that net_af_packet ports read (their `iface=` argument). */
export function afPacketInterfaces(model: CompiledConfig): string[] {
  return model.ports
    .filter((port) => port.device.startsWith('net_af_packet'))
    .map((port) => /(?:^|,)iface=([^,]+)/.exec(port.device)?.[1])
    .filter((iface): iface is string => iface !== undefined);
}

/**
 * An af_packet port shares its interface with the kernel of flowgate's namespace: the kernel
 * would answer ARP, forward what arrives there on its own (through the TAPs: every packet
 * twice) and send its own NDP and MLD frames out of it, which af_packet reads back as
 * traffic. An ingress chain with policy drop keeps the kernel off the interface (AF_PACKET
 * sees frames before the ingress hook), and IPv6 off keeps it silent.
 */
export const AF_PACKET_TABLE = 'flowgate_afpacket';

function afPacketRuleset(ifaces: readonly string[]): string | null {
  if (ifaces.length === 0) return null;
  const chains = ifaces.map(
    (iface, i) => `  chain ingress${i} {\n    type filter hook ingress device ${JSON.stringify(iface)} priority -500; policy drop;\n  }`,
  );
  return `table netdev ${AF_PACKET_TABLE} {\n${chains.join('\n')}\n}\n`;
}

/**
 * Conntrack tracks a namespace's packets only while something there uses it (its hooks are
 * registered on demand, nf_ct_netns_get), and flowgate offloads only what conntrack confirmed:
 * as nftables' `ct state ... flow add @ft` rule does for the kernel's flowtable, this table's
 * one ct expression makes conntrack track the forwarded traffic, whatever the config's own
 * ruleset. It counts the packets conntrack calls invalid, and changes no verdict.
 */
export const CONNTRACK_TABLE = 'flowgate_conntrack';
const CONNTRACK_RULESET = `table inet ${CONNTRACK_TABLE} {
  chain forward {
    type filter hook forward priority filter;
    ct state invalid counter
  }
}
`;

export function mirrorState(model: CompiledConfig): MirrorState {
  const ifaces = afPacketInterfaces(model);
  const rulesets = [afPacketRuleset(ifaces), CONNTRACK_RULESET, model.nftables].filter((r): r is string => r !== null);
  const state: MirrorState = {
    links: new Map(),
    addresses: new Map(),
    routes: new Map(),
    sysctls: new Map(),
    nftables: rulesets.length === 0 ? null : rulesets.join('\n'),
  };
  // Forwarding first: it rewrites per-interface settings, which are written (and restored) after it.
  state.sysctls.set(IP_FORWARD, '1');
  state.sysctls.set('net/ipv6/conf/all/forwarding', '1');
  for (const iface of ifaces) state.sysctls.set(`net/ipv6/conf/${iface}/disable_ipv6`, '1');
  const carryIPv6 = new Set(model.tunnels.filter((t) => TUNNEL_FAMILIES[t.mode].inner === 6).map((t) => t.name));
  const interfaces = [
    ...model.ports.map((port) => ({ link: { dev: port.name, mtu: port.mtu, kind: 'tap' as const }, addresses: port.addresses })),
    // A VLAN's TAP is an interface like a port's, with its own addresses and settings.
    ...model.vlans.map((vlan) => ({ link: { dev: vlan.name, mtu: vlan.mtu, kind: 'tap' as const }, addresses: vlan.addresses })),
    ...model.tunnels.map((tunnel) => ({ link: { dev: tunnel.name, mtu: tunnel.mtu, kind: 'tun' as const }, addresses: tunnel.addresses })),
  ];
  for (const { link, addresses } of interfaces) {
    state.links.set(link.dev, link);
    for (const prefix of addresses) {
      const spec = { dev: link.dev, address: formatPrefix(prefix) };
      state.addresses.set(addressKey(spec), spec);
    }
    // IPv6 on before the interface's other IPv6 settings.
    if (carryIPv6.has(link.dev)) for (const [key, value] of innerIPv6Sysctls(link.dev)) state.sysctls.set(key, value);
    for (const [key, value] of interfaceSysctls(link)) state.sysctls.set(key, value);
  }
  for (const route of model.routes) {
    if (route.origin !== 'static') continue;
    const spec: RouteSpec = {
      family: route.to.family,
      to: formatPrefix(route.to),
      via: route.via === null ? null : formatIp(route.via),
      dev: route.dev,
      metric: route.metric,
    };
    state.routes.set(routeKey(spec), spec);
  }
  return state;
}

// ---- the mirror -------------------------------------------------------------------------

interface KernelLink {
  mtu: number;
  up: boolean;
}

/** What a neighbour entry in these states holds is a usable link-layer address. */
const RESOLVED = new Set(['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP']);
const NEIGHBOR_POLL_MIN_MS = 5;
const IPV6_MIN_MTU = 1280;
const NEIGHBOR_POLL_MAX_MS = 100;

export class MirrorError extends FlowgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_FLOWGATE_KERNEL_MIRROR', message, options);
  }
}

export class KernelMirror {
  private readonly run: CommandRunner;
  private readonly journal: Journal;
  /** Whether the journal is this mirror's (claimed, and a dead instance's record adopted). */
  private claimed = false;
  /** The record of a dead instance and who wrote it, as adopted when the journal was claimed. */
  private adopted: AdoptedRecord | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  // The record: what flowgate changed. An original is recorded before its change and an
  // object created right after its creation succeeded (journalled before as an intent), so
  // that a failed apply() leaves an exact record for the next apply() or teardown().
  private readonly links = new Map<string, { mtu?: number; up?: boolean }>();
  private readonly addresses = new Map<string, AddressSpec>();
  private readonly routes = new Map<string, RouteSpec>();
  private readonly sysctls = new Map<string, string>();
  private nftables: { ruleset: string | null; tables: string[] } | null = null;
  /** MTUs that replace the config's, by interface (a tunnel's TUN follows its effective MTU). */
  private readonly mtuOverrides = new Map<string, number>();
  private readonly netns: string | undefined;
  /** The kernel's state is read, and its changes heard, through this; opened on first use. */
  private rtnlInstance: Rtnl | undefined;
  private readonly listeners = new Set<(event: KernelEvent) => void>();

  /**
   * `netns`: run every command, and read the kernel, in this network namespace instead of
   * the caller's.
   * `runtimeDir`: where the journal is kept (default FLOWGATE_RUNTIME_DIR or /run/flowgate).
   */
  constructor(options: { netns?: string; runtimeDir?: string } = {}) {
    this.netns = options.netns;
    this.run = new CommandRunner(options.netns);
    this.journal = new Journal(options.runtimeDir ?? runtimeDirectory(), options.netns);
  }

  /**
   * Takes over the journal of this mirror's namespace, as apply(), overrideMtu() and
   * teardown() do first: refuses (InstanceLockedError) while the instance that wrote it
   * runs; adopts the record of one that died. Returns the record adopted, with what its
   * last intent may have created; null when there was none.
   */
  recover(): Promise<AdoptedRecord | null> {
    return this.serialized(async () => this.adopted);
  }

  /**
   * Closes the rtnetlink sockets; watches hear nothing more until the mirror reads the
   * kernel again. teardown() closes them too. A mirror never closed does not keep the
   * process alive.
   */
  close(): void {
    this.rtnlInstance?.close();
    this.rtnlInstance = undefined;
  }

  /** Brings the kernel to what `model` describes, changing only what differs from before. */
  apply(model: CompiledConfig): Promise<void> {
    return this.serialized(() => {
      const want = mirrorState(model);
      // Before any change: a ruleset whose tables cannot be owned is refused as a whole.
      const tables = want.nftables === null ? [] : declaredTables(want.nftables);
      return this.reconcile(want, tables);
    });
  }

  /**
   * Checks, changing nothing, what apply(model) could refuse late: the ruleset's tables can be
   * owned, and nft accepts the very transaction apply would run (`nft -c`, in this
   * namespace, so that devices and sets are checked against what is there). A reload runs
   * this before it changes anything.
   */
  async validate(model: CompiledConfig): Promise<void> {
    const want = mirrorState(model);
    if (want.nftables === null) return;
    const tables = declaredTables(want.nftables);
    const replaced = new Set([...(this.nftables?.tables ?? []), ...tables]);
    try {
      await this.run.exec(['nft', '-c', '-f', '-'], `${deleteTablesScript(replaced)}${want.nftables}\n`);
    } catch (err) {
      if (!(err instanceof KernelCommandError)) throw err;
      throw new MirrorError(`nftables refuses the ruleset: ${err.stderr.trim()}`, { cause: err });
    }
  }

  /**
   * Sets the MTU of `dev`, an interface flowgate made (a port's TAP), back to `mtu` after
   * someone else changed it to one the port's NIC refuses. Nothing is recorded: the TAP
   * goes with flowgate.
   */
  putBackMtu(dev: string, mtu: number): Promise<void> {
    return this.serialized(async () => {
      await this.run.ip(['link', 'set', 'dev', dev, 'mtu', String(mtu)]);
    });
  }

  /**
   * Removes every address, route and nftables table flowgate created and restores every
   * sysctl, MTU and admin state it changed; nothing else. What is already gone (a TAP that
   * DPDK removed) counts as removed. Idempotent; after a failure it can be called again.
   */
  teardown(): Promise<void> {
    return this.serialized(async () => {
      const failures: unknown[] = [];
      const attempt = async (undo: () => Promise<void>) => {
        try {
          await undo();
        } catch (err) {
          failures.push(err);
        }
      };
      // Routes before the addresses they lean on; sysctls (in the order first written, see
      // SIDE_EFFECTS) before links, so that keep_addr_on_down is the interface's own again
      // when it is set back down and its IPv6 addresses go as they did before.
      for (const spec of [...this.routes.values()]) await attempt(() => this.removeRoute(spec));
      await attempt(() => this.applyRuleset(null, []));
      for (const spec of [...this.addresses.values()]) await attempt(() => this.removeAddress(spec));
      for (const key of [...this.sysctls.keys()]) await attempt(() => this.restoreSysctl(key));
      for (const dev of [...this.links.keys()]) await attempt(() => this.restoreLink(dev));
      this.close();
      if (failures.length > 0) {
        const reasons = failures.map((err) => (err instanceof Error ? err.message : String(err)));
        throw new MirrorError(`teardown left ${failures.length} change(s) in place:\n${reasons.join('\n')}`, { cause: failures[0] });
      }
    });
  }

  /**
   * Runs `create`, which makes kernel interfaces (DPDK's TAPs, which DPDK brings up itself),
   * with the namespace's default `accept_dad` at 0 for them to inherit, and the default set
   * back right after. A TAP that comes up with DAD would hold its link-local address
   * tentative for a second, and with it every neighbour solicitation (sent from the
   * link-local): the tunnel's next hop, after a restart, resolved a second late. apply()
   * then writes the TAP's own setting (interfaceSysctls). The change is journalled like any
   * other, so a crash inside the window is undone too.
   */
  creatingInterfaces<T>(create: () => T): Promise<T> {
    return this.serialized(async () => {
      const key = 'net/ipv6/conf/default/accept_dad';
      let current: string | undefined;
      try {
        [current] = await this.run.readSysctls([key]);
      } catch (err) {
        // No IPv6 in this namespace: nothing to inherit.
        if (!isAbsent(err)) throw err;
      }
      if (current === undefined) return create();
      await this.writeSysctl(key, '0', current);
      try {
        return create();
      } finally {
        await this.restoreSysctl(key);
      }
    });
  }

  /**
   * Holds `dev`'s MTU at `mtu` rather than the config's, now and through later apply()s,
   * until called with null (which leaves the MTU for the next apply()). A tunnel's TUN
   * follows the tunnel's effective MTU this way, so that the kernel answers the packets too
   * big for the tunnel's underlay with ICMP fragmentation needed of the right MTU. The
   * original MTU is recorded as for any change, and teardown restores it.
   */
  overrideMtu(dev: string, mtu: number | null): Promise<void> {
    return this.serialized(async () => {
      if (mtu === null) {
        this.mtuOverrides.delete(dev);
        return;
      }
      this.mtuOverrides.set(dev, mtu);
      const now = (await this.readLinks()).get(dev);
      if (now === undefined || now.mtu === mtu) return;
      this.links.set(dev, { mtu: now.mtu, ...this.links.get(dev) });
      await this.journalled(null);
      await this.run.ip(['link', 'set', 'dev', dev, 'mtu', String(mtu)]);
    });
  }

  /** A copy of the record of what flowgate changed. */
  get record(): MirrorRecord {
    return {
      links: [...this.links].map(([dev, original]) => ({ dev, ...original })),
      addresses: [...this.addresses.values()],
      routes: [...this.routes.values()],
      sysctls: [...this.sysctls].map(([key, original]) => ({ key, original })),
      nftables: this.nftables === null ? null : { ruleset: this.nftables.ruleset, tables: [...this.nftables.tables] },
    };
  }

  private get recordIsEmpty(): boolean {
    return this.links.size + this.addresses.size + this.routes.size + this.sysctls.size === 0 && this.nftables === null;
  }

  /**
   * The MAC address of `address` on `dev` from the neighbour table, asking the kernel to
   * resolve it (ARP or NDP) when it is missing or unusable; null if it is not resolved within
   * `timeoutMs`. The entry is the kernel's own (it ages as usual): nothing is recorded.
   */
  async resolveNeighbor(dev: string, address: string, timeoutMs: number): Promise<string | null> {
    const target = formatIp(parseIp(address));
    const deadline = Date.now() + timeoutMs;
    let mac = await this.neighborMac(dev, target);
    if (mac !== null) return mac;
    // NTF_USE ("use"): the kernel starts resolution as if a packet were waiting for it,
    // without one being sent, and without making the entry permanent.
    await this.run.ip(['neigh', 'replace', target, 'dev', dev, 'use']);
    for (let pause = NEIGHBOR_POLL_MIN_MS; ; pause = Math.min(pause * 2, NEIGHBOR_POLL_MAX_MS)) {
      mac = await this.neighborMac(dev, target);
      const left = deadline - Date.now();
      if (mac !== null || left <= 0) return mac;
      await sleep(Math.min(pause, left));
    }
  }

  /**
   * The kernel's route decision for `address`, as `ip route get`; null when it would not
   * forward there (no route, or an unreachable, prohibit or blackhole route).
   */
  async routeTo(address: string): Promise<RouteDecision | null> {
    const route = await this.rtnl().routeGet(formatIp(parseIp(address)));
    if (route === null || route.dev === null) return null;
    return { type: route.type, dev: route.dev, gateway: route.via, source: route.source };
  }

  /** The neighbour table (ARP and NDP), as the kernel holds it now. */
  neighbors(): Promise<NeighborEvent[]> {
    return this.rtnl().neighbors();
  }

  /**
   * Streams link, address, route, neighbour, rule and nexthop changes to `listener` until
   * stopped, and a resync after changes were lost. Await `ready` before relying on changes
   * being reported.
   */
  watch(listener: (event: KernelEvent) => void): KernelWatch {
    let ready: Promise<void>;
    try {
      // The sockets are subscribed once open: every change from now on is reported.
      this.rtnl();
      this.listeners.add(listener);
      ready = Promise.resolve();
    } catch (err) {
      ready = Promise.reject(err);
    }
    return {
      ready,
      stop: async () => {
        this.listeners.delete(listener);
      },
    };
  }

  /** The kernel's nexthop objects (`ip nexthop`). */
  nexthops(): Promise<NexthopEvent[]> {
    return this.rtnl().nexthops();
  }

  /** rtnetlink's figures (events, overruns, resyncs, the kernel's routes by family); null before it is open. */
  rtnlStats(): RtnlStats | null {
    return this.rtnlInstance?.stats() ?? null;
  }

  private rtnl(): Rtnl {
    this.rtnlInstance ??= Rtnl.open({
      ...(this.netns === undefined ? {} : { netns: this.netns }),
      onEvents: (events) => {
        for (const listener of this.listeners) for (const event of events) listener(event);
      },
      onResync: (resync) => {
        for (const listener of this.listeners) listener(resync);
      },
    });
    return this.rtnlInstance;
  }

  // ---- reconciliation -------------------------------------------------------------------

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const changeSet = async (): Promise<T> => {
      await this.claimJournal();
      try {
        return await fn();
      } finally {
        // Whatever failed, the journal ends as the record: without the intent of a change
        // that failed, and gone once nothing is left to undo.
        if (this.recordIsEmpty) await this.journal.remove();
        else await this.journal.write(this.record, null);
      }
    };
    // SIGHUP reloads may overlap; each change set must see the record the previous left.
    const result = this.queue.then(changeSet, changeSet);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Journals the record, and `intent` as possibly carried out, before a change is made. */
  private journalled(intent: Intent | null): Promise<void> {
    return this.journal.write(this.record, intent);
  }

  private async claimJournal(): Promise<void> {
    if (this.claimed) return;
    const entry = await this.journal.claim();
    this.claimed = true;
    if (entry === null) return;
    const { record, intent } = entry;
    for (const { dev, ...original } of record.links) this.links.set(dev, original);
    for (const spec of record.addresses) this.addresses.set(addressKey(spec), spec);
    for (const spec of record.routes) this.routes.set(routeKey(spec), spec);
    for (const { key, original } of record.sysctls) this.sysctls.set(key, original);
    this.nftables = record.nftables;
    // What the intent may have created is owned as if it had been: undone when unwanted.
    if (intent?.kind === 'address') this.addresses.set(addressKey(intent.spec), intent.spec);
    if (intent?.kind === 'nftables') this.nftables = { ruleset: null, tables: [...new Set([...(this.nftables?.tables ?? []), ...intent.tables])] };
    if (intent?.kind === 'route') {
      const owned = this.routes.get(routeKey(intent.spec));
      if (owned === undefined) this.routes.set(routeKey(intent.spec), intent.spec);
      // A replace of a route it owned: either one may be in the kernel, and the record holds
      // one route per key. The new one goes; the old one stays recorded for apply or teardown.
      else if (routeValue(owned) !== routeValue(intent.spec)) await this.deleteRoute(intent.spec);
    }
    this.adopted = { writer: entry.writer, record: this.record };
  }

  private async reconcile(want: MirrorState, tables: string[]): Promise<void> {
    const links = await this.readLinks();
    for (const link of want.links.values()) {
      if (!links.has(link.dev)) {
        const what = link.kind === 'tap' ? 'TAP of port or VLAN' : 'TUN of tunnel';
        throw new MirrorError(`interface ${link.dev} does not exist: the ${what} ${link.dev} is created by DPDK before the kernel mirror configures it`);
      }
    }
    for (const [dev, mtu] of this.mtuOverrides) {
      const link = want.links.get(dev);
      if (link !== undefined) want.links.set(dev, { ...link, mtu });
    }
    // Below 1280 the kernel disables IPv6 on an interface and removes its IPv6 settings
    // (addrconf_notify): a tunnel's TUN gets there when its underlay path is at 1280. Its
    // IPv6 settings are written only once its MTU allows them, after the links.
    const later = new Map<string, string>();
    for (const link of want.links.values()) {
      const now = links.get(link.dev)?.mtu ?? IPV6_MIN_MTU;
      if (link.mtu >= IPV6_MIN_MTU && now >= IPV6_MIN_MTU) continue;
      for (const [key, value] of [...want.sysctls]) {
        if (!key.startsWith(`net/ipv6/conf/${link.dev}/`)) continue;
        want.sysctls.delete(key);
        if (link.mtu >= IPV6_MIN_MTU) later.set(key, value);
      }
    }
    // Before the links come up: link-local addresses and DAD start then.
    await this.reconcileSysctls(want.sysctls);
    await this.reconcileLinks(want.links, links);
    await this.writeSysctls(later);
    // Routes go first: an address removed before its routes could take them with it.
    for (const [key, spec] of this.routes) if (want.routes.get(key) === undefined) await this.removeRoute(spec);
    await this.reconcileAddresses(want.addresses);
    await this.reconcileRoutes(want.routes);
    // An unknown ruleset (null) is replaced whatever the config wants.
    const ruleset = this.nftables?.ruleset ?? null;
    if (ruleset === null || ruleset !== want.nftables) await this.applyRuleset(want.nftables, tables);
  }

  private async reconcileSysctls(want: Map<string, string>): Promise<void> {
    for (const key of [...this.sysctls.keys()]) {
      if (!want.has(key) && ![...SIDE_EFFECTS.values()].some((keys) => keys.includes(key))) await this.restoreSysctl(key);
    }
    await this.writeSysctls(want);
  }

  private async writeSysctls(want: Map<string, string>): Promise<void> {
    const keys = [...want.keys()];
    if (keys.length === 0) return;
    const values = await this.run.readSysctls(keys);
    for (const [index, key] of keys.entries()) await this.writeSysctl(key, want.get(key) as string, values[index] ?? '');
  }


  /** Writes `value` unless it is `current`, recording the original (and its side effects') first. */
  private async writeSysctl(key: string, value: string, current: string): Promise<void> {
    if (current === value) return;
    if (!this.sysctls.has(key)) {
      const sideEffects = SIDE_EFFECTS.get(key) ?? [];
      const originals = sideEffects.length === 0 ? [] : await this.run.readSysctls(sideEffects);
      this.sysctls.set(key, current);
      sideEffects.forEach((effect, at) => this.sysctls.has(effect) || this.sysctls.set(effect, originals[at] ?? ''));
    }
    await this.journalled(null);
    await this.run.writeSysctl(key, value);
  }

  private async restoreSysctl(key: string): Promise<void> {
    const original = this.sysctls.get(key);
    if (original === undefined) return;
    try {
      await this.run.writeSysctl(key, original);
    } catch (err) {
      // An interface's settings go with the interface.
      if (!isAbsent(err)) throw err;
    }
    this.sysctls.delete(key);
  }

  private async reconcileLinks(want: Map<string, LinkSpec>, current: Map<string, KernelLink>): Promise<void> {
    for (const dev of [...this.links.keys()]) if (!want.has(dev)) await this.restoreLink(dev);
    for (const link of want.values()) {
      const now = current.get(link.dev) as KernelLink;
      const original = this.links.get(link.dev) ?? {};
      // MTU before up: IPv6 is only enabled on an interface whose MTU is at least 1280.
      if (now.mtu !== link.mtu) {
        this.links.set(link.dev, { mtu: now.mtu, ...original });
        await this.journalled(null);
        await this.run.ip(['link', 'set', 'dev', link.dev, 'mtu', String(link.mtu)]);
      }
      if (!now.up) {
        this.links.set(link.dev, { up: false, ...this.links.get(link.dev) });
        await this.journalled(null);
        await this.run.ip(['link', 'set', 'dev', link.dev, 'up']);
      }
    }
  }

  private async restoreLink(dev: string): Promise<void> {
    const original = this.links.get(dev);
    if (original === undefined) return;
    const args = [...(original.mtu === undefined ? [] : ['mtu', String(original.mtu)]), ...(original.up === false ? ['down'] : [])];
    try {
      if (args.length > 0) await this.run.ip(['link', 'set', 'dev', dev, ...args]);
    } catch (err) {
      if (!isAbsent(err)) throw err;
    }
    this.links.delete(dev);
  }

  private async reconcileAddresses(want: Map<string, AddressSpec>): Promise<void> {
    for (const [key, spec] of this.addresses) if (!want.has(key)) await this.removeAddress(spec);
    const present = await this.readAddresses();
    for (const [key, spec] of want) {
      if (present.has(key)) continue;
      await this.journalled({ kind: 'address', spec });
      await this.run.ip(['addr', 'add', spec.address, 'dev', spec.dev]);
      this.addresses.set(key, spec);
    }
  }

  private async removeAddress(spec: AddressSpec): Promise<void> {
    try {
      await this.run.ip(['addr', 'del', spec.address, 'dev', spec.dev]);
    } catch (err) {
      if (!isAbsent(err)) throw err;
    }
    this.addresses.delete(addressKey(spec));
  }

  private async reconcileRoutes(want: Map<string, RouteSpec>): Promise<void> {
    // Read after the address changes: removing an interface's last address flushes its routes.
    const present = await this.readRoutes();
    for (const [key, spec] of want) {
      if (present.get(key)?.has(routeValue(spec))) continue;
      // At a key flowgate owns, replace: atomic when only the next hop changed, and it also
      // restores a route the kernel dropped. At any other key, add: if a route someone else
      // made is there, the kernel refuses, and flowgate does not take it over.
      const verb = this.routes.has(key) ? 'replace' : 'add';
      await this.journalled({ kind: 'route', spec });
      await this.run.ip(routeCommand(verb, spec));
      this.routes.set(key, spec);
    }
  }

  private async removeRoute(spec: RouteSpec): Promise<void> {
    await this.deleteRoute(spec);
    this.routes.delete(routeKey(spec));
  }

  private async deleteRoute(spec: RouteSpec): Promise<void> {
    try {
      await this.run.ip(routeCommand('del', spec));
    } catch (err) {
      if (!isAbsent(err)) throw err;
    }
  }

  /** Replaces the tables of the previous ruleset and those `ruleset` declares by `ruleset`, atomically. */
  private async applyRuleset(ruleset: string | null, tables: string[]): Promise<void> {
    const previous = this.nftables?.tables ?? [];
    if (ruleset === null && previous.length === 0) return;
    const replaced = new Set([...previous, ...tables]);
    await this.journalled({ kind: 'nftables', tables });
    await this.run.exec(['nft', '-f', '-'], `${deleteTablesScript(replaced)}${ruleset ?? ''}\n`);
    this.nftables = ruleset === null ? null : { ruleset, tables };
  }

  // ---- reading the kernel ---------------------------------------------------------------

  private async readLinks(): Promise<Map<string, KernelLink>> {
    return new Map((await this.rtnl().links()).map((link) => [link.dev, { mtu: link.mtu, up: link.up }]));
  }

  /** Keys of the interface addresses present. */
  private async readAddresses(): Promise<Set<string>> {
    return new Set((await this.rtnl().addresses()).map((a) => addressKey({ dev: a.dev, address: a.address })));
  }

  /**
   * The static routes of the main table: key → the values present at that key (IPv6 can
   * hold several). The kernel selects them: a main table of a million routes learnt by a
   * routing daemon costs nothing here.
   */
  private async readRoutes(): Promise<Map<string, Set<string>>> {
    const present = new Map<string, Set<string>>();
    for (const family of [4, 6] as const) {
      for (const route of await this.rtnl().routes({ family, table: 'main', protocol: 'static' })) {
        // Multipath routes have no single dev and never equal a route of the config.
        if (route.type !== 'unicast' || route.dev === null) continue;
        const spec: RouteSpec = { family, to: route.to, via: route.via, dev: route.dev, metric: route.metric };
        const values = present.get(routeKey(spec)) ?? new Set<string>();
        present.set(routeKey(spec), values.add(routeValue(spec)));
      }
    }
    return present;
  }

  private async neighborMac(dev: string, address: string): Promise<string | null> {
    const entry = await this.rtnl().neighbor(dev, address);
    return entry !== null && entry.mac !== null && RESOLVED.has(entry.state) ? entry.mac : null;
  }
}

function routeCommand(verb: 'add' | 'replace' | 'del', spec: RouteSpec): string[] {
  return [
    `-${spec.family}`,
    'route',
    verb,
    spec.to,
    ...(spec.via === null ? [] : ['via', spec.via]),
    'dev',
    spec.dev,
    'metric',
    String(spec.metric),
    // Installed from configuration: routing daemons (FRR) leave "static" routes alone.
    'proto',
    'static',
  ];
}
