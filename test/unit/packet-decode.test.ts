// The header decoder of `flowgate trace` (lib/packet-decode.ts) on frames built by scapy,
// an encoder that is not the project's own, and on hostile input: truncated headers,
// lengths that lie, garbage.
import assert from 'node:assert/strict';

import { decodeHeaders } from '../../lib/packet-decode';
import { scapyBuild } from '../helpers/scapy';

const ETH = `Ether(dst='00:00:22:33:11:55', src='02:00:00:00:00:10')`;

describe('decodeHeaders', function () {
  this.timeout(30_000);

  it('decodes an ip4ip6 tunnel packet: outer IPv6, the encapsulation limit option, the inner IPv4 and TCP with its flags', async () => {
    const [frame] = await scapyBuild([
      `${ETH}/IPv6(src='2001:db8:2::2', dst='2001:db8:2::1', hlim=63, tc=0x20)/` +
        `IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=bytes([4])), PadN(optdata=b'\\x00')])/` +
        `IP(src='10.0.0.1', dst='192.168.0.10', ttl=60, flags='DF', id=7)/TCP(sport=80, dport=40000, flags='SA', seq=1, ack=2, window=512)`,
    ]);
    assert.deepEqual(decodeHeaders(frame!, 'ethernet'), [
      'ethernet 02:00:00:00:00:10 > 00:00:22:33:11:55, IPv6',
      'ipv6 2001:db8:2::2 > 2001:db8:2::1, hlim 63, dest-opts, plen 48, tclass 0x20',
      'dest-opts, ipip, len 8, encapsulation limit 4',
      '-- inner packet --',
      'ipv4 10.0.0.1 > 192.168.0.10, ttl 60, tcp, len 40, id 7, flags DF',
      'tcp 80 > 40000, flags [S.], seq 1, ack 2, win 512',
    ]);
  });

  it('decodes 802.1ad and 802.1Q tags, then UDP over IPv4', async () => {
    const [frame] = await scapyBuild([`${ETH}/Dot1AD(vlan=100, prio=3)/Dot1Q(vlan=20)/IP(src='192.168.0.10', dst='198.51.100.7')/UDP(sport=5000, dport=53)`]);
    assert.deepEqual(decodeHeaders(frame!, 'ethernet'), [
      'ethernet 02:00:00:00:00:10 > 00:00:22:33:11:55, 802.1ad',
      'vlan 802.1ad id 100, pcp 3, 802.1Q',
      'vlan 802.1Q id 20, pcp 0, IPv4',
      'ipv4 192.168.0.10 > 198.51.100.7, ttl 64, udp, len 28, id 1',
      'udp 5000 > 53, len 8',
    ]);
  });

  it("decodes a TUN's raw IPv6 packet with ICMPv6, and ICMP type and code over IPv4", async () => {
    const [ip6, ip4] = await scapyBuild([
      `IPv6(src='2001:db8:1::10', dst='2001:db8:3::1', hlim=1)/ICMPv6EchoRequest()`,
      `${ETH}/IP(src='192.168.0.10', dst='10.0.0.1', ttl=1)/ICMP(type=11, code=0)`,
    ]);
    assert.deepEqual(decodeHeaders(ip6!, 'ip'), ['ipv6 2001:db8:1::10 > 2001:db8:3::1, hlim 1, icmp6, plen 8', 'icmp6 type 128, code 0']);
    assert.deepEqual(decodeHeaders(ip4!, 'ethernet').slice(1), ['ipv4 192.168.0.10 > 10.0.0.1, ttl 1, icmp, len 28, id 1', 'icmp type 11, code 0']);
  });

  it('says where a kept prefix ends, and names what it cannot decode instead of guessing', async () => {
    const [frame] = await scapyBuild([`${ETH}/IP(src='192.168.0.10', dst='10.0.0.1')/TCP()`]);
    assert.deepEqual(decodeHeaders(frame!.subarray(0, 30), 'ethernet', frame!.length), [
      'ethernet 02:00:00:00:00:10 > 00:00:22:33:11:55, IPv4',
      '(ipv4: truncated, 30 of 54 bytes kept)',
    ]);
    assert.equal(decodeHeaders(frame!.subarray(0, 40), 'ethernet', frame!.length).at(-1), '(tcp: truncated, 40 of 54 bytes kept)');
    const badVersion = Buffer.from(frame!);
    badVersion[14] = 0x53; // version 5, header length 12
    assert.match(decodeHeaders(badVersion, 'ethernet')[1] ?? '', /\(bad header: version 5, header length 12\)$/);
    assert.deepEqual(decodeHeaders(Buffer.from('ff', 'hex'), 'ip'), ['ip version 15: not IPv4 or IPv6']);
    assert.deepEqual(decodeHeaders(Buffer.alloc(0), 'ethernet'), ['(ethernet: truncated, 0 of 0 bytes kept)']);
  });

  it('decodes any bytes without throwing', () => {
    // Every prefix of a frame with an IPv6 destination options header that claims 2 KiB.
    const hostile = Buffer.from('000022331155020000000010' + '86dd6000000000083c40' + '20010db8000000000000000000000002'.repeat(2) + '04ff0401', 'hex');
    for (let n = 0; n <= hostile.length; n++) {
      for (const link of ['ethernet', 'ip'] as const) assert.ok(Array.isArray(decodeHeaders(hostile.subarray(0, n), link)));
    }
    for (let seed = 1; seed < 500; seed++) {
      const junk = Buffer.from(Array.from({ length: seed % 130 }, (_, i) => (seed * 7919 + i * 104729) & 0xff));
      decodeHeaders(junk, 'ethernet');
      decodeHeaders(junk, 'ip');
    }
  });
});
