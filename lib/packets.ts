/**
 * Building packets: Ethernet, IPv4, IPv6 (with the RFC 2473 destination options header),
 * TCP and UDP, with lengths and checksums filled in. Used to generate benchmark traffic and
 * test inputs; tests check what flowgate emits with independent decoders (scapy, tshark).
 */
import { parseIPv4, parseIPv6, parseMac } from './net/addr';

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_IPV6 = 0x86dd;
export const IPPROTO_IPIP = 4;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_DSTOPTS = 60;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export type Transport =
  | { udp: { sport: number; dport: number } }
  | { tcp: { sport: number; dport: number; flags?: number; seq?: number; ack?: number } }
  /** Any other protocol: its header and payload as given. */
  | { proto: number; data: Buffer };

export interface Ip4Spec {
  src: string;
  dst: string;
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** In 8-byte units. */
  fragOffset?: number;
  /** Raw option bytes (padded to 4 by the caller). */
  options?: Buffer;
}

export interface Ip6Spec {
  src: string;
  dst: string;
  hopLimit?: number;
  tclass?: number;
  flowLabel?: number;
}

/** RFC 1071 one's complement sum, folded, not inverted. */
function sum16(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2 === 1) sum += (buf[buf.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The Internet checksum of buf (RFC 1071). A header with a correct checksum sums to 0. */
export function internetChecksum(buf: Buffer, initial = 0): number {
  return ~sum16(buf, initial) & 0xffff;
}

function pseudoHeaderSum(src: Buffer, dst: Buffer, proto: number, length: number): number {
  const ph = Buffer.alloc(src.length * 2 + 8);
  src.copy(ph, 0);
  dst.copy(ph, src.length);
  if (src.length === 4) {
    ph.writeUInt8(proto, 9);
    ph.writeUInt16BE(length, 10);
    return sum16(ph.subarray(0, 12));
  }
  ph.writeUInt32BE(length, 32);
  ph.writeUInt8(proto, 39);
  return sum16(ph);
}

function transport(l4: Transport, payload: Buffer, src: Buffer, dst: Buffer): { proto: number; bytes: Buffer } {
  if ('udp' in l4) {
    const b = Buffer.alloc(8 + payload.length);
    b.writeUInt16BE(l4.udp.sport, 0);
    b.writeUInt16BE(l4.udp.dport, 2);
    b.writeUInt16BE(b.length, 4);
    payload.copy(b, 8);
    const c = internetChecksum(b, pseudoHeaderSum(src, dst, IPPROTO_UDP, b.length));
    b.writeUInt16BE(c === 0 ? 0xffff : c, 6);
    return { proto: IPPROTO_UDP, bytes: b };
  }
  if ('tcp' in l4) {
    const b = Buffer.alloc(20 + payload.length);
    b.writeUInt16BE(l4.tcp.sport, 0);
    b.writeUInt16BE(l4.tcp.dport, 2);
    b.writeUInt32BE(l4.tcp.seq ?? 1, 4);
    b.writeUInt32BE(l4.tcp.ack ?? 0, 8);
    b.writeUInt8(5 << 4, 12);
    b.writeUInt8(l4.tcp.flags ?? TCP_ACK, 13);
    b.writeUInt16BE(65535, 14);
    payload.copy(b, 20);
    b.writeUInt16BE(internetChecksum(b, pseudoHeaderSum(src, dst, IPPROTO_TCP, b.length)), 16);
    return { proto: IPPROTO_TCP, bytes: b };
  }
  return { proto: l4.proto, bytes: Buffer.concat([l4.data, payload]) };
}

export function ip4Packet(ip: Ip4Spec, l4: Transport, payload: Buffer = Buffer.alloc(0)): Buffer {
  const src = parseIPv4(ip.src);
  const dst = parseIPv4(ip.dst);
  const { proto, bytes } = transport(l4, payload, src, dst);
  const options = ip.options ?? Buffer.alloc(0);
  const ihl = 20 + options.length;
  const h = Buffer.alloc(ihl);
  h.writeUInt8(0x40 | (ihl / 4), 0);
  h.writeUInt8(ip.tos ?? 0, 1);
  h.writeUInt16BE(ihl + bytes.length, 2);
  h.writeUInt16BE(ip.id ?? 0, 4);
  h.writeUInt16BE((ip.df ? 0x4000 : 0) | (ip.mf ? 0x2000 : 0) | (ip.fragOffset ?? 0), 6);
  h.writeUInt8(ip.ttl ?? 64, 8);
  h.writeUInt8(proto, 9);
  src.copy(h, 12);
  dst.copy(h, 16);
  options.copy(h, 20);
  h.writeUInt16BE(internetChecksum(h), 10);
  return Buffer.concat([h, bytes]);
}

function ip6Header(ip: Ip6Spec, nextHeader: number, payloadLength: number): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | ((ip.tclass ?? 0) << 20) | (ip.flowLabel ?? 0)) >>> 0, 0);
  h.writeUInt16BE(payloadLength, 4);
  h.writeUInt8(nextHeader, 6);
  h.writeUInt8(ip.hopLimit ?? 64, 7);
  parseIPv6(ip.src).copy(h, 8);
  parseIPv6(ip.dst).copy(h, 24);
  return h;
}

export function ip6Packet(ip: Ip6Spec, l4: Transport, payload: Buffer = Buffer.alloc(0)): Buffer {
  const { proto, bytes } = transport(l4, payload, parseIPv6(ip.src), parseIPv6(ip.dst));
  return Buffer.concat([ip6Header(ip, proto, bytes.length), bytes]);
}

/**
 * The destination options header an RFC 2473 entry point adds: the Tunnel Encapsulation
 * Limit option and a PadN to 8 bytes, as Linux ip6tnl writes it.
 */
export function tunnelEncapLimitOption(limit: number, nextHeader = IPPROTO_IPIP): Buffer {
  return Buffer.from([nextHeader, 0, 4, 1, limit, 1, 1, 0]);
}

/**
 * An IPv4 or IPv6 packet inside IPv6 (ip4ip6 or ip6ip6, by the inner packet's version),
 * with the encapsulation limit option unless encapLimit is null.
 */
export function ipInIp6Packet(outer: Ip6Spec & { encapLimit?: number | null }, inner: Buffer): Buffer {
  const limit = outer.encapLimit === undefined ? 4 : outer.encapLimit;
  const innerProto = ((inner[0] ?? 0) >> 4) === 6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
  const ext = limit === null ? Buffer.alloc(0) : tunnelEncapLimitOption(limit, innerProto);
  const next = limit === null ? innerProto : IPPROTO_DSTOPTS;
  return Buffer.concat([ip6Header(outer, next, ext.length + inner.length), ext, inner]);
}

/** An Ethernet frame around an IP packet (the EtherType follows the IP version). */
export function ethernetFrame(dst: string, src: string, l3: Buffer): Buffer {
  const h = Buffer.alloc(14);
  parseMac(dst).copy(h, 0);
  parseMac(src).copy(h, 6);
  h.writeUInt16BE(((l3[0] ?? 0) >> 4) === 6 ? ETHERTYPE_IPV6 : ETHERTYPE_IPV4, 12);
  return Buffer.concat([h, l3]);
}
