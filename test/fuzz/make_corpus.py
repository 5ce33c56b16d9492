#!/usr/bin/python3
"""Seed corpus for the fast path's fuzz target (test/fuzz/pipeline_fuzz.cc), built with scapy.

Run with Debian's interpreter, which has python3-scapy:

    /usr/bin/python3 test/fuzz/make_corpus.py     # rewrites test/fuzz/corpus/

Each seed is one burst in the target's input format:

    n: u8 (frames - 1)
    n + 1 times: length: u16 big endian, then the frame
    choices: consumed by the target from the end backwards; every seed here either has
             none (every choice 0: the ordinary world, every frame's flow installed,
             plain forwarding) or a few pseudo-random bytes (named *-world-N), so that
             encapsulation, NAT, chains, small MTUs and the rest start from the seeds too.

The frames are the reference scenario's (LAN 192.168.0.0/24, tunnel 2001:db8:2::1 to
2001:db8:2::2), the same through tunnels of the other modes (ip6ip6 over the same IPv6
underlay, ipip and sit between 192.0.2.1 and 192.0.2.2), and everything the fast path must
punt or drop: options, fragments, extension headers, ICMP, ARP, VLAN, TTL 1, TCP flags, bad
checksums, truncated frames. The target builds its tunnels from the burst's tunnelled
frames, in their mode, so that every seed of a tunnel has its tunnel in the ordinary world.
Tagged frames (802.1Q 100, QinQ 300/7, 802.1ad 300, and tags of no VLAN) mostly get the
target's VLANs, so that the VLAN seeds, tunnels over a VLAN among them, are of a VLAN world
too.
"""

import os
import random
import struct
import sys

from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6EchoRequest, IPOption_NOP,
                       IPOption_RR, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrRouting, Padding, Raw)

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')

# The target addresses frames to the input port's MAC itself (most of the time); this is
# port 0's, so that seeds read as what they are.
PORT_MAC = '02:00:5e:10:00:00'
PEER_MAC = '02:00:5e:20:00:01'
LAN_HOST = '192.168.0.10'
SERVER = '198.51.100.7'
LOCAL6 = '2001:db8:2::1'
REMOTE6 = '2001:db8:2::2'
# The IPv4 underlay of ipip and sit (TEST-NET-1, as the target's own default tunnels).
LOCAL4 = '192.0.2.1'
REMOTE4 = '192.0.2.2'
SERVER6 = '2001:db8:3::7'
LAN_HOST6 = '2001:db8:1::10'


def tel(next_header):
    """The destination options header Linux ip6tnl writes (init_tel_txopt): Tunnel
    Encapsulation Limit 4, PadN of one byte."""
    return bytes([next_header, 0, 4, 1, 4, 1, 1, 0])


# Enough choice bytes for the target to build a whole world (ports, tunnels, flows, mbufs)
# before it runs out and takes the ordinary case for the rest.
CHOICES_LEN = 256


def eth(ethertype=None, dst=PORT_MAC):
    return Ether(dst=dst, src=PEER_MAC) if ethertype is None else Ether(dst=dst, src=PEER_MAC, type=ethertype)


def ip4(**kw):
    fields = dict(src=LAN_HOST, dst=SERVER, ttl=64)
    fields.update(kw)
    return IP(**fields)


def inner_proto(inner):
    return 4 if isinstance(inner, IP) else 41


def tunnel(inner, option=True, src=REMOTE6, dst=LOCAL6, tc=0, dstopt=None):
    """An IPv4 (ip4ip6) or IPv6 (ip6ip6) packet inside IPv6 from the tunnel's remote, as the
    underlay delivers it."""
    if option:
        return eth() / IPv6(src=src, dst=dst, nh=60, tc=tc) / Raw(dstopt or tel(inner_proto(inner))) / inner
    return eth() / IPv6(src=src, dst=dst, nh=inner_proto(inner), tc=tc) / inner


def tunnel4(inner, src=REMOTE4, dst=LOCAL4, tos=0, **kw):
    """An IPv4 (ipip) or IPv6 (sit) packet inside IPv4 from the tunnel's remote, with DF as
    Linux's pmtudisc default sends it."""
    fields = dict(src=src, dst=dst, proto=inner_proto(inner), tos=tos, ttl=64, flags='DF')
    fields.update(kw)
    return eth() / IP(**fields) / inner


def udp6(**kw):
    fields = dict(src=LAN_HOST6, dst=SERVER6, hlim=64)
    fields.update(kw)
    return IPv6(**fields) / UDP(sport=40000, dport=53) / Raw(b'fuzz payload')


def tcp6(flags='A', **kw):
    fields = dict(src=LAN_HOST6, dst=SERVER6, hlim=64)
    fields.update(kw)
    return IPv6(**fields) / TCP(sport=40001, dport=443, flags=flags, seq=1000, ack=2000) / Raw(b'GET / HTTP/1.1\r\n')


def udp4(**kw):
    return ip4(**kw) / UDP(sport=40000, dport=53) / Raw(b'fuzz payload')


def tcp4(flags='A', **kw):
    return ip4(**kw) / TCP(sport=40001, dport=443, flags=flags, seq=1000, ack=2000) / Raw(b'GET / HTTP/1.1\r\n')


def frames():
    """(name, [frames]) pairs."""
    yield 'ip4-udp', [eth() / udp4()]
    yield 'ip4-tcp', [eth() / tcp4()]
    yield 'ip4-tcp-syn', [eth() / tcp4('S')]
    yield 'ip4-tcp-fin', [eth() / tcp4('FA')]
    yield 'ip4-tcp-rst', [eth() / tcp4('R')]
    yield 'ip4-tcp-options', [eth() / ip4() / TCP(sport=40001, dport=443, flags='A',
                                                   options=[('MSS', 1460), ('SAckOK', b''), ('WScale', 7)])]
    yield 'ip4-tcp-bad-data-offset', [eth() / ip4() / TCP(sport=1, dport=2, dataofs=4)]
    yield 'ip4-udp-no-checksum', [eth() / ip4() / UDP(sport=5000, dport=5001, chksum=0) / Raw(b'x' * 20)]
    # DF, as Linux's TCP sends: an ipip tunnel without pmtudisc copies it to the outer header.
    yield 'ip4-tcp-df', [eth() / ip4(flags='DF') / TCP(sport=40001, dport=443, flags='A', seq=1000, ack=2000)
                         / Raw(b'GET / HTTP/1.1\r\n')]
    yield 'ip4-udp-df', [eth() / udp4(flags='DF')]
    yield 'ip4-ttl1', [eth() / udp4(ttl=1)]
    yield 'ip4-bad-checksum', [eth() / udp4(chksum=0x1234)]
    yield 'ip4-options', [eth() / ip4(options=[IPOption_RR()]) / UDP(sport=1, dport=2)]
    yield 'ip4-options-nop', [eth() / ip4(options=[IPOption_NOP()] * 4) / TCP(sport=1, dport=2)]
    yield 'ip4-fragment-first', [eth() / ip4(flags='MF', id=7) / UDP(sport=1, dport=2) / Raw(b'a' * 32)]
    yield 'ip4-fragment-later', [eth() / ip4(frag=4, id=7) / Raw(b'a' * 32)]
    yield 'ip4-icmp', [eth() / ip4() / ICMP()]
    yield 'ip4-padded-min-frame', [eth() / ip4() / TCP(sport=40001, dport=443, flags='A') / Padding(b'\0' * 6)]
    yield 'ip4-1500', [eth() / ip4() / UDP(sport=40000, dport=9) / Raw(b'm' * 1472)]
    yield 'ip4-1600', [eth() / ip4() / UDP(sport=40000, dport=9) / Raw(b'm' * 1572)]
    yield 'ip4-broadcast-mac', [eth(dst='ff:ff:ff:ff:ff:ff') / udp4()]
    yield 'ip4-multicast-mac', [eth(dst='01:00:5e:00:00:fb') / udp4(dst='224.0.0.251')]
    yield 'ip4-ecn-ce', [eth() / udp4(tos=0x03)]

    v6 = dict(src='2001:db8:1::10', dst='2001:db8:3::7', hlim=64)
    yield 'ip6-udp', [eth() / IPv6(**v6) / UDP(sport=40000, dport=53) / Raw(b'fuzz payload')]
    yield 'ip6-tcp', [eth() / IPv6(**v6) / TCP(sport=40001, dport=443, flags='A') / Raw(b'data')]
    yield 'ip6-tcp-syn', [eth() / IPv6(**v6) / TCP(sport=40001, dport=443, flags='S')]
    yield 'ip6-hop-limit1', [eth() / IPv6(src=v6['src'], dst=v6['dst'], hlim=1) / UDP(sport=1, dport=2)]
    yield 'ip6-hop-by-hop', [eth() / IPv6(**v6) / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2)]
    yield 'ip6-routing', [eth() / IPv6(**v6) / IPv6ExtHdrRouting(addresses=['2001:db8::1']) / UDP(sport=1, dport=2)]
    yield 'ip6-fragment', [eth() / IPv6(**v6) / IPv6ExtHdrFragment(m=1, id=9) / UDP(sport=1, dport=2) / Raw(b'f' * 24)]
    yield 'ip6-icmp', [eth() / IPv6(**v6) / ICMPv6EchoRequest()]
    yield 'ip6-1600', [eth() / IPv6(**v6) / UDP(sport=40000, dport=9) / Raw(b'm' * 1552)]

    yield 'ip4in6-tel-udp', [tunnel(udp4(src=SERVER, dst=LAN_HOST))]
    yield 'ip4in6-tel-tcp', [tunnel(tcp4(src=SERVER, dst=LAN_HOST))]
    yield 'ip4in6-udp', [tunnel(udp4(src=SERVER, dst=LAN_HOST), option=False)]
    yield 'ip4in6-tcp-fin', [tunnel(tcp4('FA', src=SERVER, dst=LAN_HOST), option=False)]
    yield 'ip4in6-inner-ttl1', [tunnel(udp4(src=SERVER, dst=LAN_HOST, ttl=1))]
    yield 'ip4in6-inner-options', [tunnel(ip4(options=[IPOption_RR()]) / UDP(sport=1, dport=2))]
    yield 'ip4in6-inner-fragment', [tunnel(ip4(flags='MF') / UDP(sport=1, dport=2) / Raw(b'a' * 16))]
    yield 'ip4in6-inner-icmp', [tunnel(ip4() / ICMP())]
    yield 'ip4in6-ecn-ce-over-not-ect', [tunnel(udp4(src=SERVER, dst=LAN_HOST, tos=0), tc=3)]
    yield 'ip4in6-ecn-ce-over-ect0', [tunnel(udp4(src=SERVER, dst=LAN_HOST, tos=2), tc=3)]
    yield 'ip4in6-ecn-ect1-over-ect0', [tunnel(udp4(src=SERVER, dst=LAN_HOST, tos=2), tc=1)]
    # Options other than Linux's layout: longer padding, an unknown option (skippable and
    # not), and a header claiming more than the packet holds.
    yield 'ip4in6-tel-padn4', [tunnel(udp4(), dstopt=bytes([4, 1, 4, 1, 4, 1, 4, 0, 0, 0, 0, 0, 0, 0, 1, 0]))]
    yield 'ip4in6-dstopt-unknown-skip', [tunnel(udp4(), dstopt=bytes([4, 0, 0x1e, 1, 0, 1, 1, 0]))]
    yield 'ip4in6-dstopt-unknown-discard', [tunnel(udp4(), dstopt=bytes([4, 0, 0x9e, 1, 0, 1, 1, 0]))]
    yield 'ip4in6-dstopt-overlong', [tunnel(udp4(), dstopt=bytes([4, 9, 4, 1, 4, 1, 1, 0]))]
    yield 'ip4in6-outer-fragment', [eth() / IPv6(src=REMOTE6, dst=LOCAL6) / IPv6ExtHdrFragment(nh=4, m=1)
                                    / udp4(src=SERVER, dst=LAN_HOST)]
    # Issue 10 item 1: unspecified outer addresses wrapping a plain flow's tuple.
    yield 'ip4in6-unspecified', [tunnel(udp4(), option=False, src='::', dst='::'),
                                 eth() / udp4()]
    yield 'ip4in6-unspecified-tel', [tunnel(udp4(), src='::', dst='::'), eth() / udp4()]
    yield 'ip4in6-multicast-outer', [tunnel(udp4(), dst='ff02::1')]

    # IPv6 in IPv6 (RFC 2473) over the same underlay, with and without the option.
    down6 = dict(src=SERVER6, dst=LAN_HOST6)
    yield 'ip6in6-tel-udp', [tunnel(udp6(**down6))]
    yield 'ip6in6-tel-tcp', [tunnel(tcp6(**down6))]
    yield 'ip6in6-udp', [tunnel(udp6(**down6), option=False)]
    yield 'ip6in6-tcp-fin', [tunnel(tcp6('FA', **down6), option=False)]
    yield 'ip6in6-tcp-syn', [tunnel(tcp6('S', **down6))]
    yield 'ip6in6-inner-hop-limit1', [tunnel(udp6(hlim=1, **down6))]
    yield 'ip6in6-inner-hop-by-hop', [tunnel(IPv6(**down6) / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2))]
    yield 'ip6in6-inner-fragment', [tunnel(IPv6(**down6) / IPv6ExtHdrFragment(m=1) / UDP(sport=1, dport=2) / Raw(b'f' * 16))]
    yield 'ip6in6-inner-icmp', [tunnel(IPv6(**down6) / ICMPv6EchoRequest())]
    yield 'ip6in6-inner-ip6in6', [tunnel(tunnel(udp6(**down6), option=False)[IPv6])]
    yield 'ip6in6-ecn-ce-over-not-ect', [tunnel(udp6(tc=0, **down6), tc=3)]
    yield 'ip6in6-ecn-ce-over-ect0', [tunnel(udp6(tc=2, **down6), tc=3)]
    yield 'ip6in6-ecn-ect1-over-ect0', [tunnel(udp6(tc=2, **down6), tc=1, option=False)]
    yield 'ip6in6-1500', [tunnel(IPv6(**down6) / UDP(sport=40000, dport=9) / Raw(b'm' * 1404))]
    yield 'ip6in6-dstopt-unknown-skip', [tunnel(udp6(), dstopt=bytes([41, 0, 0x1e, 1, 0, 1, 1, 0]))]
    yield 'ip6in6-outer-fragment', [eth() / IPv6(src=REMOTE6, dst=LOCAL6) / IPv6ExtHdrFragment(nh=41, m=1)
                                    / udp6(**down6)]
    yield 'ip6in6-unspecified', [tunnel(udp6(), option=False, src='::', dst='::'), eth() / udp6()]
    # A packet whose outer addresses are the tunnel's swapped: the same fold words, rotated
    # apart (outer_fold6), so not the flow's.
    yield 'ip6in6-swapped', [tunnel(udp6(**down6)), tunnel(udp6(**down6), src=LOCAL6, dst=REMOTE6)]

    # IPv4 in IPv4 (RFC 2003) and IPv6 in IPv4 (sit, RFC 4213).
    yield 'ipip-udp', [tunnel4(udp4(src=SERVER, dst=LAN_HOST))]
    yield 'ipip-tcp', [tunnel4(tcp4(src=SERVER, dst=LAN_HOST))]
    yield 'ipip-no-df', [tunnel4(udp4(src=SERVER, dst=LAN_HOST), flags=0, id=77)]
    yield 'ipip-tcp-fin', [tunnel4(tcp4('FA', src=SERVER, dst=LAN_HOST))]
    yield 'ipip-tcp-syn', [tunnel4(tcp4('S', src=SERVER, dst=LAN_HOST))]
    yield 'ipip-inner-ttl1', [tunnel4(udp4(src=SERVER, dst=LAN_HOST, ttl=1))]
    yield 'ipip-outer-ttl1', [tunnel4(udp4(src=SERVER, dst=LAN_HOST), ttl=1)]
    yield 'ipip-inner-options', [tunnel4(ip4(options=[IPOption_RR()]) / UDP(sport=1, dport=2))]
    yield 'ipip-inner-fragment', [tunnel4(ip4(flags='MF') / UDP(sport=1, dport=2) / Raw(b'a' * 16))]
    yield 'ipip-inner-icmp', [tunnel4(ip4() / ICMP())]
    yield 'ipip-inner-df', [tunnel4(udp4(src=SERVER, dst=LAN_HOST, flags='DF'), flags=0)]
    yield 'ipip-outer-options', [eth() / IP(src=REMOTE4, dst=LOCAL4, proto=4, options=[IPOption_NOP()] * 4)
                                 / udp4(src=SERVER, dst=LAN_HOST)]
    yield 'ipip-outer-fragment', [tunnel4(udp4(src=SERVER, dst=LAN_HOST), flags='MF')]
    yield 'ipip-inner-ipip', [tunnel4(tunnel4(udp4(src=SERVER, dst=LAN_HOST))[IP])]
    yield 'ipip-ecn-ce-over-not-ect', [tunnel4(udp4(src=SERVER, dst=LAN_HOST, tos=0), tos=3)]
    yield 'ipip-ecn-ce-over-ect0', [tunnel4(udp4(src=SERVER, dst=LAN_HOST, tos=2), tos=3)]
    yield 'ipip-ecn-ect1-over-ect0', [tunnel4(udp4(src=SERVER, dst=LAN_HOST, tos=2), tos=1)]
    yield 'ipip-1500', [tunnel4(ip4(src=SERVER, dst=LAN_HOST) / UDP(sport=40000, dport=9) / Raw(b'm' * 1452))]
    yield 'ipip-unspecified', [tunnel4(udp4(), src='0.0.0.0', dst='0.0.0.0'), eth() / udp4()]
    yield 'ipip-broadcast-outer', [tunnel4(udp4(), dst='255.255.255.255')]
    yield 'sit-udp', [tunnel4(udp6(**down6))]
    yield 'sit-tcp', [tunnel4(tcp6(**down6))]
    yield 'sit-tcp-rst', [tunnel4(tcp6('R', **down6))]
    yield 'sit-inner-hop-limit1', [tunnel4(udp6(hlim=1, **down6))]
    yield 'sit-inner-routing', [tunnel4(IPv6(**down6) / IPv6ExtHdrRouting(addresses=['2001:db8::1']) / UDP(sport=1, dport=2))]
    yield 'sit-inner-icmp', [tunnel4(IPv6(**down6) / ICMPv6EchoRequest())]
    yield 'sit-ecn-ce-over-not-ect', [tunnel4(udp6(tc=0, **down6), tos=3)]
    yield 'sit-ecn-ce-over-ect0', [tunnel4(udp6(tc=2, **down6), tos=3)]
    yield 'sit-ecn-ect1-over-ect0', [tunnel4(udp6(tc=2, **down6), tos=1)]
    yield 'sit-outer-fragment', [tunnel4(udp6(**down6), frag=8)]
    yield 'sit-1500', [tunnel4(IPv6(**down6) / UDP(sport=40000, dport=9) / Raw(b'm' * 1432))]
    # ipip and sit between the same two addresses are two tunnels; so are ip4ip6 and ip6ip6.
    yield 'ipip-and-sit', [tunnel4(udp4(src=SERVER, dst=LAN_HOST)), tunnel4(udp6(**down6))]
    yield 'ip4in6-and-ip6in6', [tunnel(udp4(src=SERVER, dst=LAN_HOST)), tunnel(udp6(**down6), option=False)]

    yield 'arp', [Ether(dst='ff:ff:ff:ff:ff:ff', src=PEER_MAC) / ARP(psrc=LAN_HOST, pdst='192.168.0.1')]
    yield 'vlan-ip4-udp', [eth() / Dot1Q(vlan=10) / udp4()]
    yield 'qinq-ip4-udp', [eth(0x88a8) / Dot1Q(vlan=100, type=0x8100) / Dot1Q(vlan=10) / udp4()]
    yield 'ether-short', [bytes(eth() / udp4())[:13]]
    yield 'empty', [b'']

    # Truncated: every header cut short somewhere, and IP lengths larger than the frame.
    for name, full in (('ip4-udp', eth() / udp4()), ('ip6-tcp', eth() / IPv6(**v6) / TCP(sport=1, dport=2)),
                       ('ip4in6-tel-tcp', tunnel(tcp4(src=SERVER, dst=LAN_HOST))),
                       ('ip6in6-tel-tcp', tunnel(tcp6(**down6))),
                       ('ipip-tcp', tunnel4(tcp4(src=SERVER, dst=LAN_HOST))),
                       ('sit-tcp', tunnel4(tcp6(**down6)))):
        raw = bytes(full)
        for cut in (20, 34, 40, 54, 62, 70, 74, 94, 102, 114):
            if cut < len(raw):
                yield f'truncated-{name}-{cut}', [raw[:cut]]
    yield 'ip4-total-length-too-big', [eth() / ip4(len=400) / UDP(sport=1, dport=2)]
    yield 'ip6-payload-length-too-big', [eth() / IPv6(plen=300, **v6) / UDP(sport=1, dport=2)]

    # Bursts: a connection's two directions; a mix of everything; a full burst of flows.
    yield 'burst-both-directions', [eth() / tcp4(), tunnel(tcp4(src=SERVER, dst=LAN_HOST))]
    # Every mode at once (the target's ordinary world builds a tunnel from each of the first
    # four frames), and plain packets of both families to be forwarded or encapsulated.
    yield 'burst-every-mode', [tunnel(tcp4(src=SERVER, dst=LAN_HOST)), tunnel(tcp6(**down6)),
                               tunnel4(tcp4(src=SERVER, dst=LAN_HOST)), tunnel4(tcp6(**down6)),
                               eth() / tcp4(), eth() / tcp6(), eth() / udp6(), eth() / udp4(flags='DF')]
    yield 'burst-mixed', [eth() / udp4(), eth() / IPv6(**v6) / UDP(sport=1, dport=2), tunnel(udp4()),
                          eth() / tcp4('S'), Ether(dst='ff:ff:ff:ff:ff:ff') / ARP(), eth() / ip4(flags='MF') / UDP(),
                          tunnel(udp4(), option=False), tunnel(udp6(), option=False), tunnel4(udp4()),
                          tunnel4(udp6())]
    yield 'burst-32-flows', [eth() / ip4(src=f'192.168.0.{10 + i}') / UDP(sport=40000 + i, dport=53) / Raw(b'q')
                             for i in range(32)]

    # Tagged frames, for the VLANs the target gives a burst that has them (build_vlans():
    # 802.1Q 100, 802.1ad 300 with 802.1Q 7 inside, on the input port; 802.1Q 200 on another
    # port), and tags of none of them. Last, so that the seeds above keep their worlds.
    q, qinq, ad = [Q100], [AD300, Q7], [AD300]
    yield 'vlan100-ip4-udp', [tagged(eth() / udp4(), *q)]
    yield 'vlan100-ip4-tcp', [tagged(eth() / tcp4(), *q)]
    yield 'vlan100-ip6-tcp', [tagged(eth() / tcp6(), *q)]
    yield 'vlan100-pcp5-ip4-tcp', [tagged(eth() / tcp4(), *q, pcp=5)]
    yield 'vlan100-ip4-ttl1', [tagged(eth() / udp4(ttl=1), *q)]
    yield 'vlan100-ip4-options', [tagged(eth() / ip4(options=[IPOption_RR()]) / UDP(sport=1, dport=2), *q)]
    yield 'vlan100-arp', [tagged(Ether(dst='ff:ff:ff:ff:ff:ff', src=PEER_MAC) / ARP(psrc=LAN_HOST, pdst='192.168.0.1'), *q)]
    yield 'qinq-300-7-ip4-tcp', [tagged(eth() / tcp4(), *qinq)]
    yield 'qinq-300-7-ip6-udp', [tagged(eth() / udp6(), *qinq, pcp=6)]
    yield 'vlan-ad300-ip4-udp', [tagged(eth() / udp4(), *ad)]
    # A priority tag (VLAN id 0) is the port's own frame; the kernel takes it so too.
    yield 'vlan-priority-tag-ip4-tcp', [tagged(eth() / tcp4(), (0x8100, 0), pcp=3)]
    yield 'vlan-unknown-999', [tagged(eth() / udp4(), (0x8100, 999))]
    # VLAN 200 is another port's: unknown on the input port.
    yield 'vlan-200-other-port', [tagged(eth() / udp4(), (0x8100, 200))]
    yield 'vlan-three-tags', [tagged(eth() / udp4(), AD300, Q7, (0x8100, 5))]
    yield 'vlan-qinq-wrong-order', [tagged(eth() / udp4(), Q100, AD300)]
    yield 'vlan-inner-7-alone', [tagged(eth() / udp4(), Q7)]
    for cut in (14, 16, 18, 20, 22, 30, 42):
        yield f'truncated-qinq-{cut}', [bytes(tagged(eth() / tcp4(), *qinq))[:cut]]
    # Tunnels over a VLAN underlay, of every mode (issue 12: "tunnel over vlan").
    yield 'vlan100-ip4in6-tel-tcp', [tagged(tunnel(tcp4(src=SERVER, dst=LAN_HOST)), *q)]
    yield 'vlan100-ip6in6-udp', [tagged(tunnel(udp6(**down6), option=False), *q)]
    yield 'vlan100-ipip-tcp', [tagged(tunnel4(tcp4(src=SERVER, dst=LAN_HOST)), *q)]
    yield 'qinq-sit-tcp', [tagged(tunnel4(tcp6(**down6)), *qinq)]
    yield 'qinq-ip4in6-ecn-ce-over-ect0', [tagged(tunnel(udp4(src=SERVER, dst=LAN_HOST, tos=2), tc=3), *qinq)]
    # Bursts: runs of one VLAN (vlan_pop()'s cache) broken by others; every mode over VLANs
    # (the ordinary world builds a tunnel from each of the first four frames); a mix of
    # tagged, untagged and unknown.
    yield 'burst-vlan-runs', ([tagged(eth() / tcp4(src=f'192.168.0.{20 + i}'), *q) for i in range(6)]
                              + [tagged(eth() / tcp4(src=f'192.168.0.{40 + i}'), *qinq) for i in range(6)]
                              + [tagged(eth() / tcp4(src=f'192.168.0.{20 + i}'), *q) for i in range(4)])
    yield 'burst-vlan-every-mode', [tagged(tunnel(tcp4(src=SERVER, dst=LAN_HOST)), *q),
                                    tagged(tunnel(tcp6(**down6)), *qinq),
                                    tagged(tunnel4(tcp4(src=SERVER, dst=LAN_HOST)), *ad),
                                    tagged(tunnel4(tcp6(**down6)), *q),
                                    tagged(eth() / tcp4(), *q), eth() / tcp6(), tagged(eth() / udp6(), *qinq),
                                    eth() / udp4(flags='DF')]
    yield 'burst-vlan-mixed', [tagged(eth() / tcp4(), *q), eth() / tcp4(), tagged(eth() / udp4(), (0x8100, 999)),
                               tagged(eth() / udp6(), *qinq), tagged(eth() / udp4(), (0x8100, 0), pcp=7),
                               tagged(eth() / tcp4('S'), *ad), tagged(tunnel4(udp4()), *q)]


# VLAN tags (TPID, VLAN id) of the target's VLANs.
Q100 = (0x8100, 100)
AD300 = (0x88a8, 300)
Q7 = (0x8100, 7)


def tagged(frame, *tags, pcp=0):
    """frame with these tags (outermost first) after its MAC addresses, each with pcp."""
    raw = bytes(frame)
    return raw[:12] + b''.join(struct.pack('>HH', tpid, pcp << 13 | vid) for tpid, vid in tags) + raw[12:]


def seed(frame_list, choices=b''):
    out = bytearray([len(frame_list) - 1])
    for f in frame_list:
        raw = bytes(f)
        out += struct.pack('>H', len(raw)) + raw
    return bytes(out) + choices


def main():
    os.makedirs(CORPUS, exist_ok=True)
    # Inputs kept from findings (regression-*) are not this script's: they stay.
    for old in os.listdir(CORPUS):
        if not old.startswith('regression-'):
            os.unlink(os.path.join(CORPUS, old))
    rng = random.Random(2473)  # fixed: the corpus is the same on every run
    count = 0
    for name, frame_list in frames():
        with open(os.path.join(CORPUS, name), 'wb') as fh:
            fh.write(seed(frame_list))
        count += 1
        # Two other worlds for each: pseudo-random choices.
        for n in range(2):
            choices = bytes(rng.randrange(256) for _ in range(CHOICES_LEN))
            with open(os.path.join(CORPUS, f'{name}-world-{n + 1}'), 'wb') as fh:
                fh.write(seed(frame_list, choices))
            count += 1
    print(f'{count} seeds in {CORPUS}', file=sys.stderr)


if __name__ == '__main__':
    main()
