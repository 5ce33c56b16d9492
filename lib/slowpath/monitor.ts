/**
 * The kernel's changes as the gateway consumes them: link, address, route, neighbour, rule
 * and nexthop events from rtnetlink (lib/slowpath/rtnl.ts), and a resync after events were
 * lost. Dumps return the same shapes, with `deleted` false.
 */
import type { IpFamily } from '../net/addr';

export interface LinkEvent {
  kind: 'link';
  deleted: boolean;
  index: number;
  dev: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** The lower layer is up (IFF_LOWER_UP): for a TAP or TUN, a process (DPDK) has it open. */
  carrier: boolean;
  /** null for interfaces without a link-layer address (TUN). */
  mac: string | null;
  /** IFLA_INFO_KIND ('veth', 'tun'...); null for interfaces without link info (lo). */
  linkKind: string | null;
}

export interface AddressEvent {
  kind: 'addr';
  deleted: boolean;
  dev: string;
  family: IpFamily;
  /** Canonical "address/length", host bits kept: "192.168.0.2/24". */
  address: string;
}

export interface RouteEvent {
  kind: 'route';
  deleted: boolean;
  family: IpFamily;
  /** As iproute2 names them: 'unicast', 'local', 'broadcast', 'multicast', 'blackhole', 'unreachable'... */
  type: string;
  /** Canonical destination prefix; a default route is "0.0.0.0/0" or "::/0". */
  to: string;
  /** The gateway; null for an on-link route and for a multipath one. */
  via: string | null;
  /** null for a multipath route and for routes without a device (blackhole...). */
  dev: string | null;
  /** 'main', 'local', 'default' or the table's number in decimal. */
  table: string;
  metric: number;
  /** As /etc/iproute2/rt_protos names it ('kernel', 'boot', 'static'...), else the number in decimal. */
  protocol: string;
  /** The nexthop object the route uses; null for a route with its own next hops. */
  nhid: number | null;
  /** Several next hops (RTA_MULTIPATH, or a nexthop group): no single `via` or `dev`. */
  multipath: boolean;
  /** The preferred source address (RTA_PREFSRC), when the kernel gives one. */
  source: string | null;
}

export interface NeighborEvent {
  kind: 'neigh';
  deleted: boolean;
  dev: string;
  family: IpFamily;
  address: string;
  /** null while unresolved (INCOMPLETE, FAILED). */
  mac: string | null;
  /** The NUD state as ip prints it: REACHABLE, STALE, DELAY, PROBE, INCOMPLETE, FAILED, PERMANENT, NOARP, or NONE. */
  state: string;
}

export interface RuleEvent {
  kind: 'rule';
  deleted: boolean;
  family: IpFamily;
  priority: number;
  /** 'lookup' (a table), 'goto', 'nop', 'blackhole', 'unreachable', 'prohibit'. */
  action: string;
  /** The table of a 'lookup' rule, named as for routes. */
  table: string | null;
  /** Selectors: canonical prefixes, interface names, firewall mark. */
  src: string | null;
  dst: string | null;
  iif: string | null;
  oif: string | null;
  fwmark: number | null;
  fwmask: number | null;
}

export interface NexthopEvent {
  kind: 'nexthop';
  deleted: boolean;
  /** null for groups and blackholes, which have no family of their own. */
  family: IpFamily | null;
  id: number;
  dev: string | null;
  via: string | null;
  /** Member ids of a group; empty for a single next hop. */
  group: number[];
  blackhole: boolean;
}

/** Routes in the kernel by family, and by table name. */
export interface RouteCounts {
  ipv4: number;
  ipv6: number;
  tables: Record<string, { ipv4: number; ipv6: number }>;
}

/**
 * Events were lost (the event socket overran, ENOBUFS): a consumer that caches kernel
 * decisions must treat everything it derived before as stale. It comes with the links and
 * neighbours as they are now, and the route counts rebuilt from a dump.
 */
export interface ResyncEvent {
  kind: 'resync';
  /** Overruns so far. */
  enobufs: number;
  links: LinkEvent[];
  neighbors: NeighborEvent[];
  routes: RouteCounts;
}

export type KernelChange = LinkEvent | AddressEvent | RouteEvent | NeighborEvent | RuleEvent | NexthopEvent;
export type KernelEvent = KernelChange | ResyncEvent;

export interface KernelWatch {
  /**
   * Resolves once the watch is subscribed (every change after that is reported). Rejects if
   * it could not start; then nothing is watched.
   */
  readonly ready: Promise<void>;
  /** Stops reporting to this watch's listener. Idempotent. */
  stop(): Promise<void>;
}
