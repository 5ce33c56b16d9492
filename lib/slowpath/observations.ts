/**
 * Decoding the fast path's observation records (native/dp/observation.h): packed 88-byte
 * records, little-endian, delivered in batches on the JavaScript thread. The offsets below
 * mirror the C++ struct; test/unit/observations.test.ts checks them against the addon's.
 */
import type { NativeTunnelMode } from '../native';
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
export const KEY = { ip4Src: 0, ip4Dst: 4, ip4OuterSrc: 8, ip4OuterDst: 24, ip6Src: 0, ip6Dst: 16, ip6Outer: 32, sport: 40, dport: 42, inPort: 44, l3: 46, l4: 47 } as const;

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
  /** The packet arrived encapsulated (a punt), whatever the mode and whether a configured tunnel matched. */
  tunnelled: boolean;
  /** Tunnelled punts: the outer source and destination (null for ip6ip6, whose key holds only their fold). */
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
    const family = keyFamily(buf, k);
    const port = buf.readUInt16LE(off + OBS.port);
    const tunnel = buf.readUInt16LE(off + OBS.tunnel);
    const outer = keyTunnel(buf, k);
    const formatOuter = (a: Buffer | null) => (a === null ? null : a.length === 4 ? formatIPv4(a) : formatIPv6(a));
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
      tunnelled: outer !== null,
      outerSrc: outer === null ? null : formatOuter(outer.outerSrc),
      outerDst: outer === null ? null : formatOuter(outer.outerDst),
      dstMac: kind === 'egress-port' ? Buffer.from(buf.subarray(off + OBS.dstMac, off + OBS.dstMac + 6)) : null,
      srcMac: kind === 'egress-port' ? Buffer.from(buf.subarray(off + OBS.srcMac, off + OBS.srcMac + 6)) : null,
      fingerprint: buf.readUInt32LE(off + OBS.fingerprint),
      length: buf.readUInt16LE(off + OBS.l3Len),
    });
  }
  return out;
}

/** The key's L3 values (native/dp/flow_key.h flow_l3): inner family in the tens, outer in the units. */
export const KEY_L3 = { ipv4: 4, ipv6: 6, ipip: 44, ip4ip6: 46, sit: 64, ip6ip6: 66 } as const;
const TUNNEL_MODE_OF_L3: Partial<Record<number, NativeTunnelMode>> = { 44: 'ipip', 46: 'ip4ip6', 64: 'sit', 66: 'ip6ip6' };

/** The family of the (inner, when tunnelled) packet of the flow key at `off`. */
export function keyFamily(buf: Buffer, off: number): 4 | 6 {
  const l3 = buf.readUInt8(off + KEY.l3);
  return l3 === KEY_L3.ipv6 || l3 === KEY_L3.sit || l3 === KEY_L3.ip6ip6 ? 6 : 4;
}

/** Whether the flow key at `off` is of an encapsulated packet, of any mode. */
export function isTunnelledKey(buf: Buffer, off: number): boolean {
  return TUNNEL_MODE_OF_L3[buf.readUInt8(off + KEY.l3)] !== undefined;
}

/**
 * The tunnel part of the flow key at `off`: its mode and outer addresses (4 or 16 bytes;
 * null for ip6ip6, where the key holds only their fold), or null for a plain key.
 */
export function keyTunnel(buf: Buffer, off: number): { mode: NativeTunnelMode; outerSrc: Buffer | null; outerDst: Buffer | null } | null {
  const mode = TUNNEL_MODE_OF_L3[buf.readUInt8(off + KEY.l3)];
  const at = (from: number, len: number) => Buffer.from(buf.subarray(off + from, off + from + len));
  switch (mode) {
    case undefined:
      return null;
    case 'ip4ip6':
      return { mode, outerSrc: at(KEY.ip4OuterSrc, 16), outerDst: at(KEY.ip4OuterDst, 16) };
    case 'ipip':
      return { mode, outerSrc: at(KEY.ip4OuterSrc, 4), outerDst: at(KEY.ip4OuterSrc + 4, 4) };
    case 'sit':
      return { mode, outerSrc: at(KEY.ip6Outer, 4), outerDst: at(KEY.ip6Outer + 4, 4) };
    case 'ip6ip6':
      return { mode, outerSrc: null, outerDst: null };
  }
}
