/**
 * The kernel's links, addresses, neighbours, routes, rules and nexthop objects through
 * rtnetlink (native/rt, native/addon/rtnl.cc): dumps, route lookups and change events,
 * read by a native thread of its own in the namespace asked for. The only module of lib/
 * that talks to the native Rtnl.
 *
 * Routes stay in C++: a filtered dump (the kernel filters by family, table and protocol)
 * returns only what is asked for, and the route counts of stats() and countRoutes() are
 * kept natively from a start-up dump and the events, so that a full Internet table costs
 * no JavaScript object.
 */
import * as path from 'node:path';

import { DataplaneError, FlowgateError, intIn, InvalidArgumentError } from '../errors';
import { parseIp } from '../net/addr';
import { native, type NativeRtnl } from '../native';
import type { AddressEvent, KernelChange, LinkEvent, NeighborEvent, NexthopEvent, ResyncEvent, RouteCounts, RouteEvent, RuleEvent } from './monitor';

export interface RtnlOptions {
  /** Open the sockets in this network namespace: a name (ip netns) or a namespace file path. */
  netns?: string;
  /** The event socket's SO_RCVBUF in bytes; default 8 MiB. */
  rcvbuf?: number;
  /** Changes, in kernel order, in batches of up to a few thousand. */
  onEvents?(events: KernelChange[]): void;
  /** After events were lost: what the consumer derived is stale (see ResyncEvent). */
  onResync?(resync: ResyncEvent): void;
}

export interface RtnlStats {
  events: number;
  /** Overruns of the event socket, each followed by a resync. */
  enobufs: number;
  resyncs: number;
  errors: number;
  /** Routes in the kernel now (cached clones not included). */
  routes: RouteCounts;
  /** False until the start-up route dump is counted (routes then reads 0). */
  routesSynced: boolean;
}

export interface RouteFilter {
  family: 4 | 6;
  /** 'main', 'local', 'default' or a number; every table when absent. */
  table?: string | number;
  /** A name of /etc/iproute2/rt_protos ('static', 'kernel'...) or a number; every protocol when absent. */
  protocol?: string | number;
}

const NAMED_TABLES = ['main', 'local', 'default'];
const NAMED_PROTOCOLS = ['unspec', 'redirect', 'kernel', 'boot', 'static', 'gated', 'ra', 'mrt', 'zebra', 'bird', 'dnrouted', 'xorp', 'ntk', 'dhcp', 'keepalived', 'babel', 'openr', 'bgp', 'isis', 'ospf', 'rip', 'eigrp'];

export class Rtnl {
  private closed = false;

  private constructor(private readonly nr: NativeRtnl) {}

  /**
   * Opens the sockets (a dedicated native thread owns them) and subscribes to every change;
   * the route counts follow from a dump the thread starts with. Throws
   * ERR_FLOWGATE_INVALID_ARGUMENT for a namespace that does not exist.
   */
  static open(options: RtnlOptions = {}): Rtnl {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('rtnl options: expected an object');
    if (options.rcvbuf !== undefined) intIn(options.rcvbuf, 'rtnl options.rcvbuf', 1, 2 ** 30);
    if (options.onEvents !== undefined && typeof options.onEvents !== 'function') throw new InvalidArgumentError('rtnl options.onEvents: expected a function');
    if (options.onResync !== undefined && typeof options.onResync !== 'function') throw new InvalidArgumentError('rtnl options.onResync: expected a function');
    let netns: string | undefined;
    if (options.netns !== undefined) {
      if (typeof options.netns !== 'string' || options.netns === '') throw new InvalidArgumentError(`rtnl options.netns: expected a namespace name or path, found ${String(options.netns)}`);
      netns = options.netns.includes('/') ? options.netns : path.join('/run/netns', options.netns);
    }
    const { onEvents, onResync } = options;
    const deliver = (payload: KernelChange[] | Omit<ResyncEvent, 'kind'>, kind: 'events' | 'resync') => {
      if (kind === 'resync') onResync?.({ kind: 'resync', ...(payload as Omit<ResyncEvent, 'kind'>) });
      else if ((payload as KernelChange[]).length > 0) onEvents?.(payload as KernelChange[]);
    };
    const Native = native().Rtnl;
    try {
      return new Rtnl(new Native({ onEvents: deliver, ...(options.rcvbuf === undefined ? {} : { rcvbuf: options.rcvbuf }), ...(netns === undefined ? {} : { netns }) }));
    } catch (err) {
      throw DataplaneError.fromNative(err);
    }
  }

  links(): Promise<LinkEvent[]> {
    return this.call((nr) => nr.links());
  }

  /** Every IPv4 and IPv6 address of every interface. */
  addresses(): Promise<AddressEvent[]> {
    return this.call((nr) => nr.addresses());
  }

  /** The IPv4 (ARP) and IPv6 (NDP) neighbour entries; proxy entries are not included. */
  neighbors(): Promise<NeighborEvent[]> {
    return this.call((nr) => nr.neighbors());
  }

  /** The entry of `address` on interface `dev` (one lookup, not the table); null when there is none. */
  neighbor(dev: string, address: string): Promise<NeighborEvent | null> {
    if (typeof dev !== 'string' || dev === '') throw new InvalidArgumentError(`rtnl neighbor: dev: expected an interface name, found ${String(dev)}`);
    const bytes = addressBytes(address, 'rtnl neighbor: address');
    return this.call((nr) => nr.neighbor(dev, bytes));
  }

  /** The routes of one family that the kernel selects by table and protocol (cached clones not included). */
  routes(filter: RouteFilter): Promise<RouteEvent[]> {
    if (typeof filter !== 'object' || filter === null) throw new InvalidArgumentError('rtnl routes: filter: expected an object');
    if (filter.family !== 4 && filter.family !== 6) throw new InvalidArgumentError(`rtnl routes: filter.family: expected 4 or 6, found ${String(filter.family)}`);
    const native: { family: 4 | 6; table?: string | number; protocol?: string | number } = { family: filter.family };
    if (filter.table !== undefined) native.table = nameOrNumber(filter.table, 'rtnl routes: filter.table', NAMED_TABLES, 0xffffffff);
    if (filter.protocol !== undefined) native.protocol = nameOrNumber(filter.protocol, 'rtnl routes: filter.protocol', NAMED_PROTOCOLS, 255);
    return this.call((nr) => nr.routes(native));
  }

  /** The IPv4 and IPv6 policy routing rules, in priority order per family. */
  rules(): Promise<RuleEvent[]> {
    return this.call((nr) => nr.rules());
  }

  nexthops(): Promise<NexthopEvent[]> {
    return this.call((nr) => nr.nexthops());
  }

  /**
   * The kernel's decision for a packet to `address`, as `ip route get`: type, dev, gateway
   * (`via`) and preferred source. null when it would not forward there: no route, or an
   * unreachable, prohibit or blackhole route.
   */
  routeGet(address: string): Promise<RouteEvent | null> {
    const bytes = addressBytes(address, 'rtnl routeGet: address');
    return this.call((nr) => nr.routeGet(bytes));
  }

  /** The route counts, with every change the native thread has read so far. */
  countRoutes(): Promise<RouteCounts> {
    return this.call((nr) => nr.countRoutes());
  }

  stats(): RtnlStats {
    return this.nr.stats();
  }

  /** Stops the native thread; pending requests fail with ERR_FLOWGATE_RTNL_CLOSED. Idempotent. */
  close(): void {
    this.closed = true;
    this.nr.close();
  }

  private async call<T>(fn: (nr: NativeRtnl) => Promise<T>): Promise<T> {
    if (this.closed) throw new FlowgateError('ERR_FLOWGATE_RTNL_CLOSED', 'rtnl: closed');
    try {
      return await fn(this.nr);
    } catch (err) {
      throw DataplaneError.fromNative(err);
    }
  }
}

function addressBytes(address: string, what: string): Buffer {
  try {
    return Buffer.from(parseIp(address).bytes);
  } catch (err) {
    throw new InvalidArgumentError(`${what}: ${(err as Error).message}`);
  }
}

function nameOrNumber(value: unknown, what: string, names: readonly string[], max: number): string | number {
  if (typeof value === 'string' && (names.includes(value) || /^\d+$/.test(value))) return /^\d+$/.test(value) ? intIn(Number(value), what, 0, max) : value;
  if (typeof value === 'number') return intIn(value, what, 0, max);
  throw new InvalidArgumentError(`${what}: expected one of ${names.join(', ')} or an integer 0..${max}, found ${String(value)}`);
}
