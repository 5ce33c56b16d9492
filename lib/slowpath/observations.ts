/**
 * Decoding the fast path's observation records (native/dp/observation.h): packed 88-byte
 * records, little-endian, delivered in batches on the JavaScript thread. The offsets below
 * mirror the C++ struct; test/unit/observations.test.ts checks them against the addon's.
 */
import { formatIPv4, formatIPv6 } from '../net/addr';

export const OBSERVATION_SIZE = 88;
export const OBS = {
  tsc: 0,
  key: 8,
  kind: 56,
  reason: 57,
  tcpFlags: 58,
  port: 60,
  tunnel: 62,
  dstMac: 64,
  srcMac: 70,
  fingerprint: 76,
  l3Len: 80,
} as const;
// Inside the 48-byte flow key.
export const KEY = { ip4Src: 0, ip4Dst: 4, ip4OuterSrc: 8, ip4OuterDst: 24, ip6Src: 0, ip6Dst: 16, sport: 40, dport: 42, inPort: 44, l3: 46, l4: 47 } as const;

const PORT_NONE = 0xffff;
const TUNNEL_NONE = 0xffff;

export type ObservationKind = 'punt' | 'egress-port' | 'egress-tunnel';
const KINDS: Record<number, ObservationKind> = { 1: 'punt', 2: 'egress-port', 3: 'egress-tunnel' };

export interface Observation {
  kind: ObservationKind;
  /** TSC when the fast path or the slow-path thread saw the packet. */
  tsc: number;
  /** Punts: why (a punt reason name). */
  reason: string | null;
  /** TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10), 0 for UDP. */
  tcpFlags: number;
  /** Punt: the input port's id; egress-port: the output port's id. */
  port: number | null;
  /** Punt decapsulated from this tunnel, or egress into it: the tunnel's id. */
  tunnel: number | null;
  family: 4 | 6;
  proto: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Tunnelled punts: the outer IPv6 source and destination. */
  outerSrc: string | null;
  outerDst: string | null;
  /** Egress-port: the Ethernet addresses the kernel wrote. */
  dstMac: Buffer | null;
  srcMac: Buffer | null;
  /** The same for a packet before and after the kernel forwarded (or NATed) it. */
  fingerprint: number;
  /** L3 length of the (inner) packet. */
  length: number;
}

export function decodeObservations(buf: Buffer, puntReasons: readonly string[]): Observation[] {
  const out: Observation[] = [];
  for (let off = 0; off + OBSERVATION_SIZE <= buf.length; off += OBSERVATION_SIZE) {
    const k = off + OBS.key;
    const kind = KINDS[buf.readUInt8(off + OBS.kind)];
    if (kind === undefined) continue;
    const family = buf.readUInt8(k + KEY.l3) === 6 ? 6 : 4;
    const port = buf.readUInt16LE(off + OBS.port);
    const tunnel = buf.readUInt16LE(off + OBS.tunnel);
    const tunnelled = isTunnelledKey(buf, k);
    out.push({
      kind,
      tsc: Number(buf.readBigUInt64LE(off + OBS.tsc)),
      reason: kind === 'punt' ? (puntReasons[buf.readUInt8(off + OBS.reason)] ?? null) : null,
      tcpFlags: buf.readUInt8(off + OBS.tcpFlags),
      port: port === PORT_NONE ? null : port,
      tunnel: tunnel === TUNNEL_NONE ? null : tunnel,
      family,
      proto: buf.readUInt8(k + KEY.l4),
      src: family === 4 ? formatIPv4(buf.subarray(k + KEY.ip4Src, k + KEY.ip4Src + 4)) : formatIPv6(buf.subarray(k + KEY.ip6Src, k + KEY.ip6Src + 16)),
      dst: family === 4 ? formatIPv4(buf.subarray(k + KEY.ip4Dst, k + KEY.ip4Dst + 4)) : formatIPv6(buf.subarray(k + KEY.ip6Dst, k + KEY.ip6Dst + 16)),
      sport: buf.readUInt16BE(k + KEY.sport),
      dport: buf.readUInt16BE(k + KEY.dport),
      outerSrc: tunnelled ? formatIPv6(buf.subarray(k + KEY.ip4OuterSrc, k + KEY.ip4OuterSrc + 16)) : null,
      outerDst: tunnelled ? formatIPv6(buf.subarray(k + KEY.ip4OuterDst, k + KEY.ip4OuterDst + 16)) : null,
      dstMac: kind === 'egress-port' ? Buffer.from(buf.subarray(off + OBS.dstMac, off + OBS.dstMac + 6)) : null,
      srcMac: kind === 'egress-port' ? Buffer.from(buf.subarray(off + OBS.srcMac, off + OBS.srcMac + 6)) : null,
      fingerprint: buf.readUInt32LE(off + OBS.fingerprint),
      length: buf.readUInt16LE(off + OBS.l3Len),
    });
  }
  return out;
}

/** The key's L3 value for IPv4 inside IPv6 (FLOW_L3_IPV4_IN_IPV6 in native/dp/flow_key.h): such a key carries the outer addresses. */
export const KEY_L3_IPV4_IN_IPV6 = 46;

/** Whether the flow key at `off` is IPv4 inside IPv6. */
export function isTunnelledKey(buf: Buffer, off: number): boolean {
  return buf.readUInt8(off + KEY.l3) === KEY_L3_IPV4_IN_IPV6;
}
