/**
 * Decoding the flows the addon lists, looks up and reaps: packed 256-byte records in one
 * Buffer (native/addon/flow_record.h), little-endian, decoded here into NativeFlowInfo.
 * The offsets mirror the C++ structs; test/unit/flow-records.test.ts checks them against
 * the addon's.
 */
import { KEY, keyFamily, keyTunnel } from './slowpath/observations';
import type { NativeCounter, NativeFlowAction, NativeFlowInfo, NativeFlowSpec, NativeReaped } from './native';

export const FLOW_RECORD_SIZE = 256;
export const FLOW_RECORD = { handle: 0, idleSeconds: 8, teardown: 12, hasReply: 13, reapReason: 14, closing: 15, orig: 16, reply: 136 } as const;
/** Inside each direction of a record. */
export const FLOW_DIRECTION = {
  key: 0,
  packets: 48,
  bytes: 56,
  action: 64,
  outPort: 66,
  tunnel: 68,
  dstMac: 70,
  srcMac: 76,
  natFlags: 82,
  natSport: 84,
  natDport: 86,
  natSrc: 88,
  natDst: 104,
} as const;
/** Bits of natFlags (native/dp/nat.h NAT_F_*). */
export const NAT_FLAG = { src: 1, dst: 2, sport: 4, dport: 8 } as const;

const ACTIONS: Record<number, NativeFlowAction> = { 1: 'fwd4', 2: 'fwd6', 3: 'decap', 4: 'encap' };
const REAP_REASONS: Record<number, NativeReaped['reason']> = { 1: 'teardown', 2: 'idle' };

/** Every flow in a Buffer of records. */
export function decodeFlowRecords(buf: Buffer): NativeFlowInfo[] {
  const out: NativeFlowInfo[] = [];
  for (let off = 0; off + FLOW_RECORD_SIZE <= buf.length; off += FLOW_RECORD_SIZE) out.push(decodeRecord(buf, off));
  return out;
}

/** Reaped flows: each record with why it went. */
export function decodeReapedRecords(buf: Buffer): NativeReaped[] {
  const out: NativeReaped[] = [];
  for (let off = 0; off + FLOW_RECORD_SIZE <= buf.length; off += FLOW_RECORD_SIZE) {
    const reason = REAP_REASONS[buf.readUInt8(off + FLOW_RECORD.reapReason)];
    if (reason === undefined) throw new Error(`flow record at ${off}: not a reaped flow`);
    out.push({ flow: decodeRecord(buf, off), reason });
  }
  return out;
}

function decodeRecord(buf: Buffer, off: number): NativeFlowInfo {
  const hasReply = buf.readUInt8(off + FLOW_RECORD.hasReply) !== 0;
  const orig = decodeDirection(buf, off + FLOW_RECORD.orig);
  const reply = hasReply ? decodeDirection(buf, off + FLOW_RECORD.reply) : null;
  return {
    handle: readU64(buf, off + FLOW_RECORD.handle),
    orig: orig.spec,
    reply: reply === null ? null : reply.spec,
    origCounter: orig.counter,
    replyCounter: reply === null ? { packets: 0, bytes: 0 } : reply.counter,
    idleSeconds: buf.readUInt32LE(off + FLOW_RECORD.idleSeconds),
    teardown: buf.readUInt8(off + FLOW_RECORD.teardown) !== 0,
    closing: buf.readUInt8(off + FLOW_RECORD.closing) !== 0,
  };
}

function decodeDirection(buf: Buffer, off: number): { spec: NativeFlowSpec; counter: NativeCounter } {
  const k = off + FLOW_DIRECTION.key;
  const l3 = keyFamily(buf, k);
  const action = ACTIONS[buf.readUInt8(off + FLOW_DIRECTION.action)];
  if (action === undefined) throw new Error(`flow record direction at ${off}: no action`);
  const bytes = (at: number, len: number) => buf.subarray(at, at + len);
  const spec: NativeFlowSpec = {
    inPort: buf.readUInt16LE(k + KEY.inPort),
    l3,
    l4: buf.readUInt8(k + KEY.l4),
    src: l3 === 4 ? bytes(k + KEY.ip4Src, 4) : bytes(k + KEY.ip6Src, 16),
    dst: l3 === 4 ? bytes(k + KEY.ip4Dst, 4) : bytes(k + KEY.ip6Dst, 16),
    sport: buf.readUInt16BE(k + KEY.sport),
    dport: buf.readUInt16BE(k + KEY.dport),
    action,
  };
  const outer = keyTunnel(buf, k);
  if (outer !== null) {
    spec.tunnelMode = outer.mode;
    if (outer.outerSrc !== null && outer.outerDst !== null) {
      spec.outerSrc = outer.outerSrc;
      spec.outerDst = outer.outerDst;
    } else {
      spec.outerFold = bytes(k + KEY.ip6Outer, 8);
    }
  }
  if (action === 'encap' || action === 'decap') spec.tunnel = buf.readUInt16LE(off + FLOW_DIRECTION.tunnel);
  if (action !== 'encap') {
    spec.outPort = buf.readUInt16LE(off + FLOW_DIRECTION.outPort);
    spec.dstMac = bytes(off + FLOW_DIRECTION.dstMac, 6);
    spec.srcMac = bytes(off + FLOW_DIRECTION.srcMac, 6);
  }
  const nat = buf.readUInt8(off + FLOW_DIRECTION.natFlags);
  if (nat !== 0) {
    const alen = l3 === 4 ? 4 : 16;
    spec.nat = {};
    if (nat & NAT_FLAG.src) spec.nat.src = bytes(off + FLOW_DIRECTION.natSrc, alen);
    if (nat & NAT_FLAG.dst) spec.nat.dst = bytes(off + FLOW_DIRECTION.natDst, alen);
    if (nat & NAT_FLAG.sport) spec.nat.sport = buf.readUInt16BE(off + FLOW_DIRECTION.natSport);
    if (nat & NAT_FLAG.dport) spec.nat.dport = buf.readUInt16BE(off + FLOW_DIRECTION.natDport);
  }
  return {
    spec,
    counter: { packets: readU64(buf, off + FLOW_DIRECTION.packets), bytes: readU64(buf, off + FLOW_DIRECTION.bytes) },
  };
}

/** A 64-bit count as a Number (exact below 2^53), without going through BigInt. */
function readU64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 0x1_0000_0000;
}
