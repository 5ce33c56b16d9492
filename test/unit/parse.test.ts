// Tier 1: the fast path's parser, run without EAL through the test-only exports. Every
// packet sits at the very end of its memory, before an inaccessible page: reading one byte
// past a packet kills the test process.
import assert from 'node:assert/strict';

import { native } from '../../lib/native';
import { parseMac } from '../../lib/net/addr';
import {
  ethernetFrame,
  internetChecksum,
  ipInIp6Packet,
  ip4Packet,
  ip6Packet,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  tunnelEncapLimitOption,
} from '../../lib/packets';

const testing = native().testing;
const MAC_A = '02:00:00:00:00:0a';
const MAC_B = '02:00:00:00:00:0b';
const IN_PORT = 3;

const udp4 = () => ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '192.168.0.10', dst: '10.0.0.1' }, { udp: { sport: 1234, dport: 53 } }, Buffer.alloc(18)));
const tcp4 = (flags = TCP_ACK) =>
  ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '192.168.0.10', dst: '10.0.0.1' }, { tcp: { sport: 40000, dport: 80, flags } }));
const udp6 = () => ethernetFrame(MAC_A, MAC_B, ip6Packet({ src: '2001:db8:1::10', dst: '2001:db8:3::1' }, { udp: { sport: 5000, dport: 6000 } }, Buffer.alloc(10)));
const tcp6 = () => ethernetFrame(MAC_A, MAC_B, ip6Packet({ src: '2001:db8:1::10', dst: '2001:db8:3::1' }, { tcp: { sport: 5000, dport: 443 } }));
const inner = () => ip4Packet({ src: '10.0.0.1', dst: '192.168.0.10', ttl: 63 }, { udp: { sport: 53, dport: 1234 } }, Buffer.alloc(8));
const tunnelled = (encapLimit: number | null) =>
  ethernetFrame(MAC_A, MAC_B, ipInIp6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1', encapLimit }, inner()));

/** An IPv6 packet whose next header is `nh`, followed by an 8-byte extension header and UDP. */
function ip6WithExtension(nh: number, ext: Buffer): Buffer {
  const udp = ip6Packet({ src: '2001:db8:1::10', dst: '2001:db8:3::1' }, { udp: { sport: 1, dport: 2 } }).subarray(40);
  const h = ip6Packet({ src: '2001:db8:1::10', dst: '2001:db8:3::1' }, { proto: nh, data: Buffer.concat([ext, udp]) });
  return ethernetFrame(MAC_A, MAC_B, h);
}

function parse(frame: Buffer, segments?: number[]) {
  return testing.parse(frame, IN_PORT, segments === undefined ? {} : { segments });
}

/** The frame with the IPv4 header at `off` given a correct checksum again (after a test changed a field). */
function rechecksum(frame: Buffer, off = 14): Buffer {
  const ihl = ((frame[off] ?? 0) & 0x0f) * 4;
  frame.writeUInt16BE(0, off + 10);
  frame.writeUInt16BE(internetChecksum(frame.subarray(off, off + ihl)), off + 10);
  return frame;
}

describe('fast path parser', () => {
  describe('builds the flowtable key', () => {
    it('of an IPv4 UDP packet, with every unused key byte zero', () => {
      const r = parse(udp4());
      assert.equal(r.verdict, 'ok');
      assert.deepEqual(
        { l3: r.key.l3, l4: r.key.l4, src: [...r.key.src], dst: [...r.key.dst], sport: r.key.sport, dport: r.key.dport, inPort: r.key.inPort },
        { l3: 4, l4: 17, src: [192, 168, 0, 10], dst: [10, 0, 0, 1], sport: 1234, dport: 53, inPort: IN_PORT },
      );
      assert.equal(r.key.outerSrc, undefined);
      assert.equal(testing.keyLayout().size, 48);
      // Outer addresses (bytes 8..39) are zero for a packet that did not come through a tunnel.
      assert.ok(r.keyBytes.subarray(8, 40).equals(Buffer.alloc(32)));
      assert.deepEqual(r.meta, { l3Off: 14, l3Len: 46, outerLen: 0, tcpFlags: 0 });
    });

    it('of an IPv6 TCP packet', () => {
      const r = parse(tcp6());
      assert.equal(r.verdict, 'ok');
      assert.equal(r.key.l3, 6);
      assert.equal(r.key.l4, 6);
      assert.equal(r.key.src.toString('hex'), '20010db8000100000000000000000010');
      assert.equal(r.key.dport, 443);
      assert.equal(r.meta.l3Len, 60);
    });

    it('of IPv4 in IPv6 with the encapsulation limit option: inner tuple plus outer addresses', () => {
      const r = parse(tunnelled(4));
      assert.equal(r.verdict, 'ok');
      assert.deepEqual([...r.key.src], [10, 0, 0, 1]);
      assert.equal(r.key.sport, 53);
      assert.equal(r.key.outerSrc?.toString('hex'), '20010db8000200000000000000000002');
      assert.equal(r.key.outerDst?.toString('hex'), '20010db8000200000000000000000001');
      assert.deepEqual(r.meta, { l3Off: 14 + 48, l3Len: 36, outerLen: 48, tcpFlags: 0 });
    });

    it('of a tunnelled packet with an L3 value of its own, so that it never equals a plain IPv4 key, even from :: to ::', () => {
      const keyL3 = testing.keyLayout().size - 2;
      const plain = parse(ethernetFrame(MAC_A, MAC_B, inner()));
      const wrapped = parse(ethernetFrame(MAC_A, MAC_B, ipInIp6Packet({ src: '::', dst: '::', encapLimit: null }, inner())));
      const optioned = parse(ethernetFrame(MAC_A, MAC_B, ipInIp6Packet({ src: '::', dst: '::', encapLimit: 4 }, inner())));
      assert.deepEqual([plain.verdict, wrapped.verdict, optioned.verdict], ['ok', 'ok', 'ok']);
      assert.deepEqual([plain.keyBytes[keyL3], wrapped.keyBytes[keyL3], optioned.keyBytes[keyL3]], [4, 46, 46]);
      assert.ok(!wrapped.keyBytes.equals(plain.keyBytes));
      assert.ok(wrapped.keyBytes.equals(optioned.keyBytes));
    });

    it('of IPv4 in IPv6 without the option', () => {
      const r = parse(tunnelled(null));
      assert.equal(r.verdict, 'ok');
      assert.deepEqual(r.meta, { l3Off: 14 + 40, l3Len: 36, outerLen: 40, tcpFlags: 0 });
    });

    it('reads the IP length, not the frame length, of a padded minimum-size frame', () => {
      const frame = Buffer.concat([tcp4(), Buffer.alloc(6)]); // 54 bytes of headers padded to 60
      const r = parse(frame);
      assert.equal(r.verdict, 'ok');
      assert.equal(r.meta.l3Len, 40);
    });

    it('records SYN, FIN and RST for the action stage and ignores other flags', () => {
      assert.equal(parse(tcp4(TCP_SYN)).meta.tcpFlags, TCP_SYN);
      assert.equal(parse(tcp4(TCP_FIN | TCP_ACK)).meta.tcpFlags, TCP_FIN);
      assert.equal(parse(tcp4(TCP_RST)).meta.tcpFlags, TCP_RST);
      assert.equal(parse(tcp4(TCP_ACK)).meta.tcpFlags, 0);
    });

    it('skips an unknown tunnel destination option whose type says skip (RFC 8200 4.2: high bits 00)', () => {
      const l3 = ip6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1' }, { proto: 60, data: Buffer.concat([Buffer.from([4, 0, 0x1e, 4, 0, 0, 0, 0]), inner()]) });
      const r = parse(ethernetFrame(MAC_A, MAC_B, l3));
      assert.deepEqual([r.verdict, r.meta.outerLen, r.key.outerSrc?.toString('hex')], ['ok', 48, '20010db8000200000000000000000002']);
    });

    it('accepts destination options made only of the encapsulation limit, PadN and Pad1', () => {
      // Same 8 bytes as Linux writes, then a variant padded with Pad1 bytes instead of PadN.
      const pad1 = Buffer.from([4, 0, 4, 1, 9, 0, 0, 0]);
      for (const opt of [tunnelEncapLimitOption(0), pad1]) {
        const l3 = ip6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1' }, { proto: 60, data: Buffer.concat([opt, inner()]) });
        assert.equal(parse(ethernetFrame(MAC_A, MAC_B, l3)).verdict, 'ok');
      }
    });
  });

  describe('sends to the slow path', () => {
    const cases: [string, Buffer, string][] = [
      ['IPv4 with options', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', options: Buffer.from([1, 1, 1, 0]) }, { udp: { sport: 1, dport: 2 } })), 'ip_options'],
      ['an IPv4 first fragment', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', mf: true }, { udp: { sport: 1, dport: 2 } })), 'fragment'],
      ['an IPv4 later fragment', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', fragOffset: 100 }, { udp: { sport: 1, dport: 2 } })), 'fragment'],
      ['IPv4 with TTL 1', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', ttl: 1 }, { udp: { sport: 1, dport: 2 } })), 'ttl_expired'],
      ['IPv4 with TTL 0', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', ttl: 0 }, { tcp: { sport: 1, dport: 2 } })), 'ttl_expired'],
      ['IPv6 with hop limit 1', ethernetFrame(MAC_A, MAC_B, ip6Packet({ src: '::1', dst: '::2', hopLimit: 1 }, { udp: { sport: 1, dport: 2 } })), 'ttl_expired'],
      ['ICMP', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2' }, { proto: 1, data: Buffer.from([8, 0, 0, 0, 0, 0, 0, 0]) })), 'l4proto'],
      ['ICMPv6', ethernetFrame(MAC_A, MAC_B, ip6Packet({ src: '::1', dst: '::2' }, { proto: 58, data: Buffer.alloc(8) })), 'l4proto'],
      ['SCTP', ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2' }, { proto: 132, data: Buffer.alloc(12) })), 'l4proto'],
      // A tunnel inside a tunnel's inner packet is not the fast path's to unwrap.
      ['IPv6 in IPv4 in IPv6 (nested tunnels)', ethernetFrame(MAC_A, MAC_B, ip6Packet({ src: '2001:db8::1', dst: '2001:db8::2' }, { proto: 4, data: ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2' }, { proto: 41, data: udp6().subarray(14) }) })), 'l4proto'],
      ['ARP', Buffer.concat([Buffer.from('ffffffffffff020000000001' + '0806', 'hex'), Buffer.alloc(28)]), 'non_ip'],
      ['a VLAN-tagged frame', Buffer.concat([Buffer.from('ffffffffffff020000000001' + '8100' + '0064' + '0800', 'hex'), udp4().subarray(14)]), 'non_ip'],
      ['IPv6 with a hop-by-hop header', ip6WithExtension(0, Buffer.from([17, 0, 1, 4, 0, 0, 0, 0])), 'ipv6_ext'],
      ['IPv6 with a routing header', ip6WithExtension(43, Buffer.from([17, 0, 0, 0, 0, 0, 0, 0])), 'ipv6_ext'],
      ['IPv6 with a fragment header', ip6WithExtension(44, Buffer.from([17, 0, 0, 1, 0, 0, 0, 1])), 'fragment'],
      ['IPv6 destination options followed by UDP', ip6WithExtension(60, Buffer.from([17, 0, 1, 4, 0, 0, 0, 0])), 'ipv6_ext'],
      // Linux's layout of a fragmented tunnel packet: the options before the fragment header.
      ['IPv6 destination options followed by a fragment header', ip6WithExtension(60, Buffer.from([44, 0, 4, 1, 4, 1, 1, 0, 4, 0, 0, 1, 0, 0, 0, 1])), 'fragment'],
      // RFC 8200 4.2: an unknown option whose type's high bits are not 00 asks for a discard.
      ...[0x5e, 0x9e, 0xde].map((type): [string, Buffer, string] => [
        `tunnel destination options with an unknown option of type 0x${type.toString(16)}`,
        ethernetFrame(MAC_A, MAC_B, ip6Packet({ src: '::1', dst: '::2' }, { proto: 60, data: Buffer.concat([Buffer.from([4, 0, type, 4, 0, 0, 0, 0]), inner()]) })),
        'ipv6_ext',
      ]),
      [
        'a tunnelled packet whose inner packet has TTL 1',
        ethernetFrame(MAC_A, MAC_B, ipInIp6Packet({ src: '::1', dst: '::2' }, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', ttl: 1 }, { udp: { sport: 1, dport: 2 } }))),
        'ttl_expired',
      ],
    ];
    for (const [name, frame, reason] of cases) {
      it(`${name} (${reason})`, () => {
        const r = parse(frame);
        assert.equal(r.verdict, 'punt', `verdict of ${name}`);
        assert.equal(r.reason, reason);
      });
    }

    it('headers that do not fit in the first mbuf segment (segmented), but parses a packet whose payload is in the second', () => {
      const frame = tcp4();
      assert.deepEqual([parse(frame, [30, frame.length - 30]).verdict, parse(frame, [30, frame.length - 30]).reason], ['punt', 'segmented']);
      assert.equal(parse(frame, [frame.length - 2, 2]).verdict, 'punt'); // the TCP header's last bytes
      const big = udp4();
      assert.equal(parse(big, [42, big.length - 42]).verdict, 'ok'); // Ethernet + IPv4 + UDP in the first
    });
  });

  describe('classifies the Ethernet destination as the kernel does (eth_type_trans)', () => {
    const PORT_MAC = parseMac(MAC_A);
    const to = (dst: string) => testing.parse(ethernetFrame(dst, MAC_B, ip4Packet({ src: '192.168.0.10', dst: '10.0.0.1' }, { udp: { sport: 1234, dport: 53 } })), IN_PORT, { mac: PORT_MAC });
    it('parses a frame to the port\'s own address', () => assert.equal(to(MAC_A).verdict, 'ok'));
    it('drops a frame to another host\'s address (PACKET_OTHERHOST)', () => assert.deepEqual([to('02:00:00:00:00:0c').verdict, to('02:00:00:00:00:0c').reason], ['drop', 'other_host']));
    for (const [what, mac] of [['broadcast', 'ff:ff:ff:ff:ff:ff'], ['IPv4 multicast', '01:00:5e:00:00:fb'], ['IPv6 multicast', '33:33:00:00:00:01']] as const)
      it(`punts a ${what} frame to the kernel`, () => assert.deepEqual([to(mac).verdict, to(mac).reason], ['punt', 'multicast']));
  });

  describe('drops malformed packets', () => {
    const mutate = (frame: Buffer, f: (b: Buffer) => void) => {
      const b = Buffer.from(frame);
      f(b);
      return b;
    };
    const cases: [string, Buffer, string][] = [
      ['IPv4 with version 5', mutate(udp4(), (b) => b.writeUInt8(0x55, 14)), 'bad_header'],
      ['IPv4 with a header length under 20', mutate(udp4(), (b) => b.writeUInt8(0x44, 14)), 'bad_header'],
      ['IPv4 with a total length under its header length', mutate(udp4(), (b) => b.writeUInt16BE(19, 16)), 'bad_header'],
      ['IPv4 with a total length beyond the frame', mutate(udp4(), (b) => b.writeUInt16BE(200, 16)), 'truncated'],
      ['IPv4 whose total length cuts the UDP header', mutate(udp4(), (b) => {
        b.writeUInt16BE(24, 16);
        rechecksum(b);
      }), 'truncated'],
      ['IPv4 with a wrong header checksum', mutate(udp4(), (b) => b.writeUInt16BE(b.readUInt16BE(24) ^ 1, 24)), 'bad_checksum'],
      ['IPv4 with options and a wrong header checksum', mutate(ethernetFrame(MAC_A, MAC_B, ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2', options: Buffer.from([1, 1, 1, 0]) }, { udp: { sport: 1, dport: 2 } })), (b) => b.writeUInt8(7, 14 + 21)), 'bad_checksum'],
      ['IPv4 in IPv6 whose inner header checksum is wrong', mutate(tunnelled(4), (b) => b.writeUInt8(1, 14 + 48 + 8)), 'bad_checksum'],
      ['IPv6 labelled as IPv4 version', mutate(udp6(), (b) => b.writeUInt8(0x40, 14)), 'bad_header'],
      ['IPv6 with a payload length beyond the frame', mutate(udp6(), (b) => b.writeUInt16BE(500, 18)), 'truncated'],
      ['TCP with a data offset under 5', mutate(tcp4(), (b) => b.writeUInt8(0x40, 14 + 20 + 12)), 'bad_header'],
      ['a tunnel option running past its header', mutate(tunnelled(4), (b) => b.writeUInt8(7, 14 + 40 + 6)), 'bad_header'],
      ['a tunnelled IPv4 packet longer than the outer payload', mutate(tunnelled(null), (b) => b.writeUInt16BE(300, 14 + 40 + 2)), 'truncated'],
    ];
    for (const [name, frame, reason] of cases) {
      it(`${name} (${reason})`, () => {
        const r = parse(frame);
        assert.equal(r.verdict, 'drop', `verdict of ${name}`);
        assert.equal(r.reason, reason);
      });
    }

    const valid: [string, Buffer][] = [
      ['IPv4 UDP', udp4()],
      ['IPv4 TCP', tcp4()],
      ['IPv6 UDP', udp6()],
      ['IPv6 TCP', tcp6()],
      ['IPv4 in IPv6 with the option', tunnelled(4)],
      ['IPv4 in IPv6 without the option', tunnelled(null)],
    ];
    for (const [name, frame] of valid) {
      it(`${name} cut at every length before its end is truncated, and never read past its end`, () => {
        for (let len = 0; len < frame.length; len++) {
          const r = parse(frame.subarray(0, len));
          assert.deepEqual([r.verdict, r.reason], ['drop', 'truncated'], `${name} cut to ${len} of ${frame.length} bytes`);
        }
        assert.equal(parse(frame).verdict, 'ok');
      });
    }
  });
});
