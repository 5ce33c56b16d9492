// Tier 1: the flow records the addon lists, looks up and reaps flows in, and their decoder.
import assert from 'node:assert/strict';

import { decodeFlowRecords, decodeReapedRecords, FLOW_DIRECTION, FLOW_RECORD, FLOW_RECORD_SIZE, NAT_FLAG } from '../../lib/flow-records';
import { native } from '../../lib/native';
import { formatIPv4, formatIPv6, formatMac, parseIPv4, parseIPv6, parseMac } from '../../lib/net/addr';
import { KEY, KEY_L3 } from '../../lib/slowpath/observations';

const testing = native().testing;

/** One record as the addon writes it: an IPv4 UDP flow from a tunnel, and its reply into the tunnel. */
function record(options: { reapReason?: number; withReply?: boolean } = {}): Buffer {
  const b = Buffer.alloc(FLOW_RECORD_SIZE);
  b.writeUInt32LE(7, FLOW_RECORD.handle);
  b.writeUInt32LE(1, FLOW_RECORD.handle + 4); // handle 2^32 + 7: above 32 bits
  b.writeUInt32LE(12, FLOW_RECORD.idleSeconds);
  b.writeUInt8(1, FLOW_RECORD.teardown);
  b.writeUInt8(options.withReply === false ? 0 : 1, FLOW_RECORD.hasReply);
  b.writeUInt8(options.reapReason ?? 0, FLOW_RECORD.reapReason);

  const o = FLOW_RECORD.orig;
  const k = o + FLOW_DIRECTION.key;
  parseIPv4('10.0.0.1').copy(b, k + KEY.ip4Src);
  parseIPv4('192.168.0.10').copy(b, k + KEY.ip4Dst);
  parseIPv6('2001:db8:2::2').copy(b, k + KEY.ip4OuterSrc);
  parseIPv6('2001:db8:2::1').copy(b, k + KEY.ip4OuterDst);
  b.writeUInt16BE(53, k + KEY.sport);
  b.writeUInt16BE(5000, k + KEY.dport);
  b.writeUInt16LE(1, k + KEY.inPort);
  b.writeUInt8(KEY_L3.ip4ip6, k + KEY.l3);
  b.writeUInt8(17, k + KEY.l4);
  b.writeUInt32LE(3, o + FLOW_DIRECTION.packets);
  b.writeUInt32LE(2, o + FLOW_DIRECTION.packets + 4);
  b.writeUInt32LE(300, o + FLOW_DIRECTION.bytes);
  b.writeUInt8(3, o + FLOW_DIRECTION.action); // decap
  b.writeUInt16LE(0, o + FLOW_DIRECTION.outPort);
  b.writeUInt16LE(1, o + FLOW_DIRECTION.tunnel);
  parseMac('02:00:00:00:00:10').copy(b, o + FLOW_DIRECTION.dstMac);
  parseMac('00:00:22:33:11:55').copy(b, o + FLOW_DIRECTION.srcMac);

  if (options.withReply !== false) {
    const r = FLOW_RECORD.reply;
    const rk = r + FLOW_DIRECTION.key;
    parseIPv4('192.168.0.10').copy(b, rk + KEY.ip4Src);
    parseIPv4('10.0.0.1').copy(b, rk + KEY.ip4Dst);
    b.writeUInt16BE(5000, rk + KEY.sport);
    b.writeUInt16BE(53, rk + KEY.dport);
    b.writeUInt16LE(0, rk + KEY.inPort);
    b.writeUInt8(4, rk + KEY.l3);
    b.writeUInt8(17, rk + KEY.l4);
    b.writeUInt32LE(5, r + FLOW_DIRECTION.packets);
    b.writeUInt32LE(500, r + FLOW_DIRECTION.bytes);
    b.writeUInt8(4, r + FLOW_DIRECTION.action); // encap
    b.writeUInt16LE(0xffff, r + FLOW_DIRECTION.outPort);
    b.writeUInt16LE(2, r + FLOW_DIRECTION.tunnel);
  }
  return b;
}

describe('flow records', () => {
  it('have the layout that the TypeScript decoder reads', () => {
    const l = testing.flowRecordLayout();
    assert.equal(l.size, FLOW_RECORD_SIZE);
    assert.equal(l.directionSize, FLOW_RECORD.reply - FLOW_RECORD.orig);
    const expected: Record<string, number> = {
      'flow_record.handle': FLOW_RECORD.handle,
      'flow_record.idle_s': FLOW_RECORD.idleSeconds,
      'flow_record.teardown': FLOW_RECORD.teardown,
      'flow_record.has_reply': FLOW_RECORD.hasReply,
      'flow_record.reap_reason': FLOW_RECORD.reapReason,
      'flow_record.closing': FLOW_RECORD.closing,
      'flow_record.orig': FLOW_RECORD.orig,
      'flow_record.reply': FLOW_RECORD.reply,
      'flow_record_direction.key': FLOW_DIRECTION.key,
      'flow_record_direction.packets': FLOW_DIRECTION.packets,
      'flow_record_direction.bytes': FLOW_DIRECTION.bytes,
      'flow_record_direction.action': FLOW_DIRECTION.action,
      'flow_record_direction.out_port': FLOW_DIRECTION.outPort,
      'flow_record_direction.tunnel': FLOW_DIRECTION.tunnel,
      'flow_record_direction.dst_mac': FLOW_DIRECTION.dstMac,
      'flow_record_direction.src_mac': FLOW_DIRECTION.srcMac,
      'flow_record_direction.nat_flags': FLOW_DIRECTION.natFlags,
      'flow_record_direction.nat_sport': FLOW_DIRECTION.natSport,
      'flow_record_direction.nat_dport': FLOW_DIRECTION.natDport,
      'flow_record_direction.nat_src': FLOW_DIRECTION.natSrc,
      'flow_record_direction.nat_dst': FLOW_DIRECTION.natDst,
    };
    for (const [name, off] of Object.entries(expected)) assert.equal(l[name], off, `offset of ${name}`);
    assert.equal(Object.keys(l).length, Object.keys(expected).length + 2, 'every field the addon has is decoded');
  });

  it('decode the closing mark and each direction\'s NAT, only the fields it changes', () => {
    const b = record();
    b.writeUInt8(1, FLOW_RECORD.closing);
    const o = FLOW_RECORD.orig;
    b.writeUInt8(NAT_FLAG.dst | NAT_FLAG.dport, o + FLOW_DIRECTION.natFlags);
    parseIPv4('192.168.100.1').copy(b, o + FLOW_DIRECTION.natDst);
    b.writeUInt16BE(40000, o + FLOW_DIRECTION.natDport);
    b.writeUInt16BE(999, o + FLOW_DIRECTION.natSport); // not flagged: not decoded
    const r = FLOW_RECORD.reply;
    b.writeUInt8(NAT_FLAG.src | NAT_FLAG.sport, r + FLOW_DIRECTION.natFlags);
    parseIPv4('203.0.113.1').copy(b, r + FLOW_DIRECTION.natSrc);
    b.writeUInt16BE(61000, r + FLOW_DIRECTION.natSport);
    const [f] = decodeFlowRecords(b);
    assert.ok(f);
    assert.equal(f.closing, true);
    assert.deepEqual(Object.keys(f.orig.nat ?? {}).sort(), ['dport', 'dst']);
    assert.deepEqual([formatIPv4(f.orig.nat?.dst as Buffer), f.orig.nat?.dport], ['192.168.100.1', 40000]);
    assert.deepEqual([formatIPv4(f.reply?.nat?.src as Buffer), f.reply?.nat?.sport], ['203.0.113.1', 61000]);
    assert.equal(decodeFlowRecords(record())[0]?.orig.nat, undefined);
    assert.equal(decodeFlowRecords(record())[0]?.closing, false);
  });

  it('decode both directions: tunnel outer addresses, output port and MACs, tunnel, 64-bit counters', () => {
    const [f] = decodeFlowRecords(record());
    assert.ok(f);
    assert.equal(f.handle, 2 ** 32 + 7);
    assert.equal(f.idleSeconds, 12);
    assert.equal(f.teardown, true);
    const o = f.orig;
    assert.deepEqual(
      [o.l3, o.l4, formatIPv4(o.src), formatIPv4(o.dst), o.sport, o.dport, o.inPort, o.action, o.outPort, o.tunnel],
      [4, 17, '10.0.0.1', '192.168.0.10', 53, 5000, 1, 'decap', 0, 1],
    );
    assert.deepEqual([o.tunnelMode, formatIPv6(o.outerSrc as Buffer), formatIPv6(o.outerDst as Buffer)], ['ip4ip6', '2001:db8:2::2', '2001:db8:2::1']);
    assert.deepEqual([formatMac(o.dstMac as Buffer), formatMac(o.srcMac as Buffer)], ['02:00:00:00:00:10', '00:00:22:33:11:55']);
    assert.deepEqual(f.origCounter, { packets: 2 * 2 ** 32 + 3, bytes: 300 });
    const r = f.reply;
    assert.ok(r);
    assert.deepEqual([r.action, r.tunnel, r.outPort, r.dstMac, r.outerSrc], ['encap', 2, undefined, undefined, undefined]);
    assert.deepEqual(f.replyCounter, { packets: 5, bytes: 500 });
  });

  it('decode a one-way flow with no reply and zero reply counters', () => {
    const [f] = decodeFlowRecords(record({ withReply: false }));
    assert.equal(f?.reply, null);
    assert.deepEqual(f?.replyCounter, { packets: 0, bytes: 0 });
  });

  it('decode every record of a buffer, and reaped records with their reason', () => {
    assert.equal(decodeFlowRecords(Buffer.concat([record(), record(), record()])).length, 3);
    assert.deepEqual(decodeFlowRecords(Buffer.alloc(0)), []);
    const reaped = decodeReapedRecords(Buffer.concat([record({ reapReason: 1 }), record({ reapReason: 2 })]));
    assert.deepEqual(reaped.map((r) => r.reason), ['teardown', 'idle']);
    assert.throws(() => decodeReapedRecords(record()), /not a reaped flow/);
  });
});
