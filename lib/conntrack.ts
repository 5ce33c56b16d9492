/**
 * The kernel's conntrack through ctnetlink (native/ct, native/addon/conntrack.cc): look
 * connections up, hear their events, refresh them. The fast path is a cache of conntrack's
 * decisions; this is how the learner asks for them. The only module of lib/ that talks to
 * the native Conntrack.
 *
 * Connections cross from C++ as packed 120-byte little-endian records; the offsets below
 * mirror native/ct/conntrack.h and test/conntrack/conntrack.test.ts checks them against the
 * addon's Conntrack.layout(). Only TCP and UDP connections are reported (dumps, events and
 * resyncs skip the others: the fast path offloads nothing else).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { DataplaneError, FlowgateError, intIn, InvalidArgumentError } from './errors';
import { formatIPv4, formatIPv6, parseIp } from './net/addr';
import { native, NativeConntrack } from './native';

export type CtProto = 'tcp' | 'udp';
export interface CtTuple {
  family: 4 | 6;
  proto: CtProto;
  src: string;
  dst: string;
  sport: number;
  dport: number;
}
export type TcpCtState = 'NONE' | 'SYN_SENT' | 'SYN_RECV' | 'ESTABLISHED' | 'FIN_WAIT' | 'CLOSE_WAIT' | 'LAST_ACK' | 'TIME_WAIT' | 'CLOSE' | 'SYN_SENT2';
export interface CtConnection {
  id: number;
  orig: CtTuple;
  reply: CtTuple;
  /** IPS_* bits. */
  status: number;
  tcpState: TcpCtState | null;
  helper: string | null;
  /** Seconds left (0 in DESTROY events). */
  timeout: number;
  mark: number;
  zone: number;
  /** TCP: IP_CT_TCP_FLAG_* of each direction (TCP_FLAG.BE_LIBERAL...); 0 for UDP. */
  tcpFlags: { orig: number; reply: number };
}

/** Connection status bits (include/uapi/linux/netfilter/nf_conntrack_common.h). */
export const IPS = {
  EXPECTED: 1 << 0,
  SEEN_REPLY: 1 << 1,
  ASSURED: 1 << 2,
  CONFIRMED: 1 << 3,
  SRC_NAT: 1 << 4,
  DST_NAT: 1 << 5,
  SEQ_ADJUST: 1 << 6,
  SRC_NAT_DONE: 1 << 7,
  DST_NAT_DONE: 1 << 8,
  DYING: 1 << 9,
  FIXED_TIMEOUT: 1 << 10,
  TEMPLATE: 1 << 11,
  UNTRACKED: 1 << 12,
  HELPER: 1 << 13,
  OFFLOAD: 1 << 14,
  HW_OFFLOAD: 1 << 15,
  NAT_CLASH: 1 << 16,
} as const;

/** Per-direction TCP conntrack flags (include/uapi/linux/netfilter/nf_conntrack_tcp.h). */
export const TCP_FLAG = {
  WINDOW_SCALE: 0x01,
  SACK_PERM: 0x02,
  CLOSE_INIT: 0x04,
  BE_LIBERAL: 0x08,
  DATA_UNACKNOWLEDGED: 0x10,
  MAXACK_SET: 0x20,
  CHALLENGE_ACK: 0x40,
  SIMULTANEOUS_OPEN: 0x80,
} as const;

export interface CtEvent {
  type: 'new' | 'update' | 'destroy';
  conn: CtConnection;
}
export interface CtUpdate {
  orig: CtTuple;
  /** Seconds from now. */
  timeout?: number;
  tcpState?: TcpCtState;
  /** Sets IP_CT_TCP_FLAG_BE_LIBERAL on both directions (no window tracking). */
  liberal?: boolean;
}
export interface ConntrackOptions {
  events: ('new' | 'update' | 'destroy')[];
  onEvents(events: CtEvent[]): void;
  /** After events were lost (the socket overran): every connection, to reconcile with. */
  onResync(all: CtConnection[]): void;
  /** The event socket's SO_RCVBUF in bytes; default 8 MiB. */
  rcvbuf?: number;
  /** Open the sockets in this network namespace: a name (ip netns) or a namespace file path. */
  netns?: string;
}
export interface ConntrackStats {
  events: number;
  enobufs: number;
  resyncs: number;
  gets: number;
  updates: number;
  errors: number;
}

// Mirrors of native/ct/conntrack.h, checked against Conntrack.layout() by the tests.
export const CT_RECORD_SIZE = 120;
export const CT_RECORD = {
  id: 0,
  status: 4,
  timeout: 8,
  mark: 12,
  zone: 16,
  family: 18,
  l4proto: 19,
  tcpState: 20,
  event: 21,
  tcpFlagsOrig: 22,
  tcpFlagsReply: 23,
  orig: 24,
  reply: 60,
  helper: 96,
  found: 112,
  hasHelper: 113,
  error: 114,
} as const;
export const CT_RECORD_TUPLE = { size: 36, src: 0, dst: 16, sport: 32, dport: 34 } as const;
export const CT_TUPLE = { size: 40, family: 0, l4proto: 1, zone: 2, sport: 4, dport: 6, src: 8, dst: 24 } as const;
export const CT_UPDATE = { size: 48, orig: 0, timeout: 40, flags: 44, tcpState: 45 } as const;
const UPDATE_FLAG = { timeout: 1, tcpState: 2, liberal: 4 } as const;

const HELPER_NAME_BYTES = 16;
const TCP_STATE_NONE = 0xff;
const IPPROTO: Record<CtProto, number> = { tcp: 6, udp: 17 };
const PROTO_OF: Record<number, CtProto> = { 6: 'tcp', 17: 'udp' };
const EVENT_TYPES: Record<number, CtEvent['type']> = { 1: 'new', 2: 'update', 3: 'destroy' };
/** TCP_CONNTRACK_* in kernel order. */
export const TCP_CT_STATES: readonly TcpCtState[] = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'];

const EVENTS_SYSCTL = '/proc/sys/net/netfilter/nf_conntrack_events';

export class Conntrack {
  private closed = false;

  private constructor(private readonly nc: NativeConntrack) {}

  /**
   * Opens the sockets (a dedicated native thread owns them). Throws ERR_FLOWGATE_CONNTRACK_EVENTS
   * when events are asked for and the kernel has no CONFIG_NF_CONNTRACK_EVENTS, and
   * ERR_FLOWGATE_CONNTRACK_UNAVAILABLE when ctnetlink does not answer.
   */
  static open(options: ConntrackOptions): Conntrack {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('conntrack options: expected an object');
    if (!Array.isArray(options.events)) throw new InvalidArgumentError(`conntrack options.events: expected an array of 'new', 'update', 'destroy', found ${String(options.events)}`);
    options.events.forEach((e, i) => {
      if (e !== 'new' && e !== 'update' && e !== 'destroy') throw new InvalidArgumentError(`conntrack options.events[${i}]: expected 'new', 'update' or 'destroy', found ${String(e)}`);
    });
    if (typeof options.onEvents !== 'function') throw new InvalidArgumentError('conntrack options.onEvents: expected a function');
    if (typeof options.onResync !== 'function') throw new InvalidArgumentError('conntrack options.onResync: expected a function');
    if (options.rcvbuf !== undefined) intIn(options.rcvbuf, 'conntrack options.rcvbuf', 1, 2 ** 30);
    let netns: string | undefined;
    if (options.netns !== undefined) {
      if (typeof options.netns !== 'string' || options.netns === '') throw new InvalidArgumentError('conntrack options.netns: expected a namespace name or path');
      netns = options.netns.includes('/') ? options.netns : path.join('/run/netns', options.netns);
    }
    // Our own namespace is checked here, another one by the native thread once inside it.
    if (netns === undefined && options.events.length > 0 && !fs.existsSync(EVENTS_SYSCTL))
      throw new FlowgateError(
        'ERR_FLOWGATE_CONNTRACK_EVENTS',
        `conntrack events: ${EVENTS_SYSCTL} is missing: this kernel was built without CONFIG_NF_CONNTRACK_EVENTS (or nf_conntrack is not loaded)`,
      );
    const { onEvents, onResync } = options;
    const deliver = (buf: Buffer, kind: 'events' | 'resync') => {
      if (kind === 'resync') onResync(decodeConnections(buf));
      else {
        const events = decodeEvents(buf);
        if (events.length > 0) onEvents(events);
      }
    };
    const Native = native().Conntrack;
    try {
      return new Conntrack(new Native({ events: [...new Set(options.events)], onEvents: deliver, ...(options.rcvbuf === undefined ? {} : { rcvbuf: options.rcvbuf }), ...(netns === undefined ? {} : { netns }) }));
    } catch (err) {
      throw DataplaneError.fromNative(err);
    }
  }

  /** One answer per tuple, in order: the connection (found by either direction's tuple), or null. */
  async get(tuples: readonly CtTuple[]): Promise<(CtConnection | null)[]> {
    if (!Array.isArray(tuples)) throw new InvalidArgumentError('conntrack get: tuples: expected an array');
    const buf = Buffer.alloc(tuples.length * CT_TUPLE.size);
    tuples.forEach((t, i) => encodeTuple(buf, i * CT_TUPLE.size, t, `conntrack get: tuples[${i}]`));
    const out = await this.call((nc) => nc.get(buf));
    const result: (CtConnection | null)[] = [];
    for (let off = 0; off + CT_RECORD_SIZE <= out.length; off += CT_RECORD_SIZE) {
      const err = out.readUInt16LE(off + CT_RECORD.error);
      if (err !== 0) throw new DataplaneError('ERR_FLOWGATE_CONNTRACK', `conntrack get: tuples[${result.length}]: the kernel answered errno ${err}`, { errno: err });
      result.push(out.readUInt8(off + CT_RECORD.found) === 0 ? null : decodeConnection(out, off));
    }
    return result;
  }

  /** Changes existing connections (never creates one); counts what the kernel answered. */
  async update(updates: readonly CtUpdate[]): Promise<{ ok: number; notFound: number; failed: number }> {
    if (!Array.isArray(updates)) throw new InvalidArgumentError('conntrack update: updates: expected an array');
    const buf = Buffer.alloc(updates.length * CT_UPDATE.size);
    updates.forEach((u, i) => {
      const what = `conntrack update: updates[${i}]`;
      if (typeof u !== 'object' || u === null) throw new InvalidArgumentError(`${what}: expected an object`);
      const off = i * CT_UPDATE.size;
      encodeTuple(buf, off + CT_UPDATE.orig, u.orig, `${what}.orig`);
      let flags = 0;
      if (u.timeout !== undefined) {
        buf.writeUInt32LE(intIn(u.timeout, `${what}.timeout`, 0, 0xffffffff), off + CT_UPDATE.timeout);
        flags |= UPDATE_FLAG.timeout;
      }
      if (u.tcpState !== undefined) {
        const s = TCP_CT_STATES.indexOf(u.tcpState);
        if (s < 0) throw new InvalidArgumentError(`${what}.tcpState: expected one of ${TCP_CT_STATES.join(', ')}, found ${String(u.tcpState)}`);
        if (u.orig.proto !== 'tcp') throw new InvalidArgumentError(`${what}.tcpState: only TCP connections have a TCP state, found proto ${u.orig.proto}`);
        buf.writeUInt8(s, off + CT_UPDATE.tcpState);
        flags |= UPDATE_FLAG.tcpState;
      }
      if (u.liberal !== undefined) {
        if (typeof u.liberal !== 'boolean') throw new InvalidArgumentError(`${what}.liberal: expected a boolean, found ${String(u.liberal)}`);
        if (u.liberal && u.orig.proto !== 'tcp') throw new InvalidArgumentError(`${what}.liberal: only TCP connections have window tracking, found proto ${u.orig.proto}`);
        if (u.liberal) flags |= UPDATE_FLAG.liberal;
      }
      buf.writeUInt8(flags, off + CT_UPDATE.flags);
    });
    return this.call((nc) => nc.update(buf));
  }

  /** Every TCP and UDP connection, IPv4 and IPv6. */
  async dump(): Promise<CtConnection[]> {
    return decodeConnections(await this.call((nc) => nc.dump()));
  }

  stats(): ConntrackStats {
    return this.nc.stats();
  }

  /** Stops the native thread; pending requests fail with ERR_FLOWGATE_CONNTRACK_CLOSED. */
  close(): void {
    this.closed = true;
    this.nc.close();
  }

  private async call<T>(fn: (nc: NativeConntrack) => Promise<T>): Promise<T> {
    if (this.closed) throw new FlowgateError('ERR_FLOWGATE_CONNTRACK_CLOSED', 'conntrack: closed');
    try {
      return await fn(this.nc);
    } catch (err) {
      throw DataplaneError.fromNative(err);
    }
  }
}

/** Reads a conntrack timeout sysctl of the current namespace, e.g. 'tcp_timeout_close' → /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close. */
export function conntrackSysctl(name: string): number {
  if (typeof name !== 'string' || !/^[a-z0-9_]+$/.test(name)) throw new InvalidArgumentError(`conntrackSysctl: name: expected a sysctl name such as 'tcp_timeout_close', found ${String(name)}`);
  const file = `/proc/sys/net/netfilter/nf_conntrack_${name}`;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new FlowgateError('ERR_FLOWGATE_CONNTRACK', `conntrackSysctl: cannot read ${file}: ${e.message}`, { cause: err });
  }
  const value = Number(text.trim());
  if (!Number.isInteger(value)) throw new FlowgateError('ERR_FLOWGATE_CONNTRACK', `conntrackSysctl: ${file} holds ${JSON.stringify(text.trim())}, not an integer`);
  return value;
}

function encodeTuple(buf: Buffer, off: number, t: CtTuple, what: string): void {
  if (typeof t !== 'object' || t === null) throw new InvalidArgumentError(`${what}: expected a tuple object`);
  if (t.family !== 4 && t.family !== 6) throw new InvalidArgumentError(`${what}.family: expected 4 or 6, found ${String(t.family)}`);
  const proto = IPPROTO[t.proto];
  if (proto === undefined) throw new InvalidArgumentError(`${what}.proto: expected 'tcp' or 'udp', found ${String(t.proto)}`);
  const addr = (s: unknown, field: string) => {
    let a;
    try {
      a = parseIp(s as string);
    } catch (err) {
      throw new InvalidArgumentError(`${what}.${field}: ${(err as Error).message}`);
    }
    if (a.family !== t.family) throw new InvalidArgumentError(`${what}.${field}: ${String(s)} is not an IPv${t.family} address (family ${t.family})`);
    return a.bytes;
  };
  const src = addr(t.src, 'src');
  const dst = addr(t.dst, 'dst');
  buf.writeUInt8(t.family, off + CT_TUPLE.family);
  buf.writeUInt8(proto, off + CT_TUPLE.l4proto);
  buf.writeUInt16LE(intIn(t.sport, `${what}.sport`, 0, 65535), off + CT_TUPLE.sport);
  buf.writeUInt16LE(intIn(t.dport, `${what}.dport`, 0, 65535), off + CT_TUPLE.dport);
  Buffer.from(src).copy(buf, off + CT_TUPLE.src);
  Buffer.from(dst).copy(buf, off + CT_TUPLE.dst);
}

function decodeTuple(buf: Buffer, off: number, family: 4 | 6, proto: CtProto): CtTuple {
  const addr = (at: number) => (family === 4 ? formatIPv4(buf.subarray(at, at + 4)) : formatIPv6(buf.subarray(at, at + 16)));
  return {
    family,
    proto,
    src: addr(off + CT_RECORD_TUPLE.src),
    dst: addr(off + CT_RECORD_TUPLE.dst),
    sport: buf.readUInt16LE(off + CT_RECORD_TUPLE.sport),
    dport: buf.readUInt16LE(off + CT_RECORD_TUPLE.dport),
  };
}

/** The connection in the record at `off`, or null for protocols other than TCP and UDP. */
function decodeConnection(buf: Buffer, off: number): CtConnection | null {
  const proto = PROTO_OF[buf.readUInt8(off + CT_RECORD.l4proto)];
  if (proto === undefined) return null;
  const family = buf.readUInt8(off + CT_RECORD.family) === 6 ? 6 : 4;
  const state = buf.readUInt8(off + CT_RECORD.tcpState);
  let helper: string | null = null;
  if (buf.readUInt8(off + CT_RECORD.hasHelper) !== 0) {
    const raw = buf.subarray(off + CT_RECORD.helper, off + CT_RECORD.helper + HELPER_NAME_BYTES);
    const nul = raw.indexOf(0);
    helper = raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1');
  }
  return {
    id: buf.readUInt32LE(off + CT_RECORD.id),
    orig: decodeTuple(buf, off + CT_RECORD.orig, family, proto),
    reply: decodeTuple(buf, off + CT_RECORD.reply, family, proto),
    status: buf.readUInt32LE(off + CT_RECORD.status),
    tcpState: state === TCP_STATE_NONE ? null : (TCP_CT_STATES[state] ?? null),
    helper,
    timeout: buf.readUInt32LE(off + CT_RECORD.timeout),
    mark: buf.readUInt32LE(off + CT_RECORD.mark),
    zone: buf.readUInt16LE(off + CT_RECORD.zone),
    tcpFlags: { orig: buf.readUInt8(off + CT_RECORD.tcpFlagsOrig), reply: buf.readUInt8(off + CT_RECORD.tcpFlagsReply) },
  };
}

/** Every TCP and UDP connection in a Buffer of records. */
export function decodeConnections(buf: Buffer): CtConnection[] {
  const out: CtConnection[] = [];
  for (let off = 0; off + CT_RECORD_SIZE <= buf.length; off += CT_RECORD_SIZE) {
    const c = decodeConnection(buf, off);
    if (c !== null) out.push(c);
  }
  return out;
}

/** The TCP and UDP connections' events in a Buffer of event records. */
export function decodeEvents(buf: Buffer): CtEvent[] {
  const out: CtEvent[] = [];
  for (let off = 0; off + CT_RECORD_SIZE <= buf.length; off += CT_RECORD_SIZE) {
    const type = EVENT_TYPES[buf.readUInt8(off + CT_RECORD.event)];
    const conn = decodeConnection(buf, off);
    if (type !== undefined && conn !== null) out.push({ type, conn });
  }
  return out;
}
