// Packet parsing and header writes for the fast path. Pure functions over an mbuf's first
// segment: no EAL, no ethdev, so the test-only exports run exactly this code.
//
// parse_packet() never reads past the packet: every header is checked against both the
// bytes the frame holds (drop: truncated) and the bytes its first segment holds (punt:
// segmented) before it is read.
#pragma once

#include <cstdint>
#include <cstring>

#include <netinet/in.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "common.h"
#include "flow_key.h"
#include "reasons.h"

namespace fg {

constexpr uint16_t ETH_HLEN = sizeof(rte_ether_hdr);
constexpr uint16_t IP4_HLEN = sizeof(rte_ipv4_hdr);
constexpr uint16_t IP6_HLEN = sizeof(rte_ipv6_hdr);
constexpr uint8_t IPPROTO_DSTOPTS_HDR = 60;
constexpr uint8_t IP6_OPT_PAD1 = 0;
constexpr uint8_t IP6_OPT_PADN = 1;
constexpr uint8_t IP6_OPT_TNL_ENCAP_LIMIT = 4;  // RFC 2473 section 5.1
// The two high bits of an option type: what a node that does not know the option does.
constexpr uint8_t IP6_OPT_ACTION_MASK = 0xc0;
constexpr uint8_t IP6_OPT_ACTION_SKIP = 0x00;
// The destination options header that carries the Tunnel Encapsulation Limit option.
constexpr uint16_t TUNNEL_DSTOPT_LEN = 8;

// The TCP flags that change an offloaded flow's state (nf_flow_state_check()).
constexpr uint8_t TCP_FLAGS_STATE = RTE_TCP_SYN_FLAG | RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG;
constexpr uint8_t TCP_FLAGS_CLOSING = RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG;

// ECN codepoints (RFC 3168) in the low two bits of the IPv4 TOS / IPv6 traffic class.
constexpr uint8_t ECN_MASK = 0x03;
constexpr uint8_t ECN_NOT_ECT = 0x00;
constexpr uint8_t ECN_ECT_1 = 0x01;
constexpr uint8_t ECN_ECT_0 = 0x02;
constexpr uint8_t ECN_CE = 0x03;

// IPv6 address classes that the control plane refuses as flow addresses and tunnel
// endpoints (IPv4's multicast class is DPDK's RTE_IS_IPV4_MCAST).
inline bool ip6_is_unspecified(const uint8_t a[16]) {
  uint64_t w[2];
  memcpy(w, a, 16);
  return (w[0] | w[1]) == 0;
}
inline bool ip6_is_loopback(const uint8_t a[16]) {
  static constexpr uint8_t loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return memcmp(a, loopback, 16) == 0;
}
inline bool ip6_is_multicast(const uint8_t a[16]) { return a[0] == 0xff; }  // ff00::/8

// What parsing (or acting on) a packet decided, when it is not "look it up and forward".
struct verdict {
  enum kind_t : uint8_t { OK, PUNT, DROP } kind;
  uint8_t reason;  // punt_reason or drop_reason

  static constexpr verdict ok() { return {OK, 0}; }
  static constexpr verdict punt(punt_reason r) { return {PUNT, static_cast<uint8_t>(r)}; }
  static constexpr verdict drop(drop_reason r) { return {DROP, static_cast<uint8_t>(r)}; }
  bool is_ok() const { return kind == OK; }
};

// Per-packet facts parse_packet() found, for the action stage.
struct pkt_meta {
  uint16_t l3_off;     // offset of the IPv4/IPv6 header to forward (inner one when tunnelled)
  uint16_t l3_len;     // its length by its own header (IPv6: 40 + payload length); 0 until known
  uint16_t outer_len;  // tunnelled: outer IPv6 header + destination options; otherwise 0
  uint8_t tcp_flags;   // TCP: the SYN/FIN/RST bits; otherwise 0
  uint8_t pad;
};

namespace detail {

inline uint16_t load_be16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, sizeof(v));
  return v;  // still network order
}

// Bounds for one header: it must be within the packet's own length (else the packet is
// truncated garbage) and within the first segment (else it is valid but not linear here).
struct bounds {
  uint32_t seg;    // readable bytes from the start of the frame in the first segment
  uint32_t limit;  // end of the current IP packet as its enclosing header says, from frame start

  verdict need(uint32_t end) const {
    if (end > limit) return verdict::drop(drop_reason::truncated);
    if (end > seg) return verdict::punt(punt_reason::segmented);
    return verdict::ok();
  }
};

inline verdict parse_l4(const uint8_t *frame, uint32_t l4_off, uint8_t proto, const bounds &b,
                        flow_key *key, pkt_meta *meta) {
  uint32_t l4_min;
  if (proto == IPPROTO_TCP)
    l4_min = sizeof(rte_tcp_hdr);
  else if (proto == IPPROTO_UDP)
    l4_min = sizeof(rte_udp_hdr);
  else
    return verdict::punt(punt_reason::l4proto);
  verdict v = b.need(l4_off + l4_min);
  if (!v.is_ok()) return v;
  const uint8_t *l4 = frame + l4_off;
  memcpy(&key->sport, l4, 2);  // TCP and UDP both start with the two ports
  memcpy(&key->dport, l4 + 2, 2);
  key->l4proto = proto;
  if (proto == IPPROTO_TCP) {
    const auto *tcp = reinterpret_cast<const rte_tcp_hdr *>(l4);
    if ((tcp->data_off >> 4) < 5) return verdict::drop(drop_reason::bad_header);
    meta->tcp_flags = tcp->tcp_flags & TCP_FLAGS_STATE;
  }
  return verdict::ok();
}

// The IPv4 header at ip (ihl bytes, readable) sums to 0xffff in one's complement: RFC 1812
// section 5.2.2, which ip_rcv_core() enforces (IPSTATS_MIB_CSUMERRORS) before any routing.
inline bool ip4_checksum_ok(const uint8_t *ip, uint32_t ihl) { return rte_raw_cksum(ip, ihl) == 0xffff; }

// Whether the receiving port's checksum offload found the outermost IPv4 header good. Not
// checked, or found bad, are alike: software checks then, and finds a bad one bad, so that
// both parsers decide alike.
inline bool ip4_csum_verified(const rte_mbuf *m) {
  return (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
}

inline verdict parse_ip6(const uint8_t *frame, uint32_t off, bounds b, flow_key *key, pkt_meta *meta,
                         uint8_t l3 = FLOW_L3_IPV6);

// l3: the key's L3 value (FLOW_L3_IPV4, or a tunnelled one for a tunnel's inner packet);
// verified: the port found this header's checksum good (never for an inner header).
inline verdict parse_ip4(const uint8_t *frame, uint32_t off, bounds b, flow_key *key,
                         pkt_meta *meta, uint8_t l3 = FLOW_L3_IPV4, bool verified = false) {
  verdict v = b.need(off + IP4_HLEN);
  if (!v.is_ok()) return v;
  const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(frame + off);
  if ((ip->version_ihl >> 4) != 4) return verdict::drop(drop_reason::bad_header);
  uint32_t ihl = (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * RTE_IPV4_IHL_MULTIPLIER;
  uint32_t tot = rte_be_to_cpu_16(ip->total_length);
  if (ihl < IP4_HLEN || tot < ihl) return verdict::drop(drop_reason::bad_header);
  if (off + tot > b.limit) return verdict::drop(drop_reason::truncated);
  // The checksum covers the options too: they must be readable to check it.
  v = b.need(off + ihl);
  if (!v.is_ok()) return v;
  if (!verified && !ip4_checksum_ok(frame + off, ihl))
    return verdict::drop(drop_reason::bad_checksum);
  b.limit = off + tot;
  meta->l3_off = static_cast<uint16_t>(off);
  meta->l3_len = static_cast<uint16_t>(tot);
  if (ihl != IP4_HLEN) return verdict::punt(punt_reason::ip_options);
  if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))
    return verdict::punt(punt_reason::fragment);
  if (l3 == FLOW_L3_IPV4 && (ip->next_proto_id == IPPROTO_IPIP || ip->next_proto_id == IPPROTO_IPV6)) {
    // IPv4 (ipip) or IPv6 (sit) in IPv4: the flow is the inner packet's, from this outer
    // source to this outer destination; whether they are a tunnel's is the lookup's
    // business. The outer TTL is not checked: the packet is for this host (ip_local_deliver()).
    meta->outer_len = IP4_HLEN;
    meta->l3_len = 0;
    if (ip->next_proto_id == IPPROTO_IPIP) {
      memcpy(key->ip4.outer_src, &ip->src_addr, 8);  // source and destination, adjacent
      return parse_ip4(frame, off + IP4_HLEN, b, key, meta, FLOW_L3_IPV4_IN_IPV4);
    }
    memcpy(key->ip6.outer, &ip->src_addr, 8);
    return parse_ip6(frame, off + IP4_HLEN, b, key, meta, FLOW_L3_IPV6_IN_IPV4);
  }
  key->l3proto = l3;
  key->ip4.src = ip->src_addr;
  key->ip4.dst = ip->dst_addr;
  v = parse_l4(frame, off + IP4_HLEN, ip->next_proto_id, b, key, meta);
  if (!v.is_ok()) return v;
  if (ip->time_to_live <= 1) return verdict::punt(punt_reason::ttl_expired);
  return verdict::ok();
}

inline bool ip6_is_extension(uint8_t nh) {
  switch (nh) {
    case 0:    // hop-by-hop options
    case 43:   // routing
    case 44:   // fragment
    case 50:   // ESP
    case 51:   // AH
    case 60:   // destination options
    case 135:  // mobility
    case 139:  // HIP
    case 140:  // shim6
    case 253:
    case 254:  // experimental
      return true;
    default:
      return false;
  }
}

// The destination options header a tunnel entry point adds (RFC 2473 section 4.1.1), with
// the Tunnel Encapsulation Limit option, before IPv4 or IPv6. Options are processed as RFC
// 8200 section 4.2 says (and ip6_parse_tlv() does): one whose type's two high bits are 00 is
// skipped, whatever it is; any other asks for the packet to be discarded and is for the
// kernel to act on. Sets: *len, the header's length, and *next, the header after it.
inline verdict parse_tunnel_dstopts(const uint8_t *frame, uint32_t off, const bounds &b,
                                    uint32_t *len, uint8_t *next) {
  verdict v = b.need(off + 8);
  if (!v.is_ok()) return v;
  const uint8_t *opt = frame + off;
  uint32_t hlen = (static_cast<uint32_t>(opt[1]) + 1) * 8;
  v = b.need(off + hlen);
  if (!v.is_ok()) return v;
  // A fragment header after the options: how Linux fragments a tunnel packet with them
  // (ip6_find_1stfragopt()); the options are checked once the packet is whole.
  if (opt[0] == IPPROTO_FRAGMENT) return verdict::punt(punt_reason::fragment);
  if (opt[0] != IPPROTO_IPIP && opt[0] != IPPROTO_IPV6) return verdict::punt(punt_reason::ipv6_ext);
  for (uint32_t i = 2; i < hlen;) {
    uint8_t type = opt[i];
    if (type == IP6_OPT_PAD1) {
      i++;
      continue;
    }
    if (i + 2 > hlen || i + 2 + opt[i + 1] > hlen) return verdict::drop(drop_reason::bad_header);
    if ((type & IP6_OPT_ACTION_MASK) != IP6_OPT_ACTION_SKIP) return verdict::punt(punt_reason::ipv6_ext);
    i += 2u + opt[i + 1];
  }
  *len = hlen;
  *next = opt[0];
  return verdict::ok();
}

// l3: the key's L3 value (FLOW_L3_IPV6, or a tunnelled one for a tunnel's inner packet).
inline verdict parse_ip6(const uint8_t *frame, uint32_t off, bounds b, flow_key *key, pkt_meta *meta,
                         uint8_t l3) {
  verdict v = b.need(off + IP6_HLEN);
  if (!v.is_ok()) return v;
  const auto *ip6 = reinterpret_cast<const rte_ipv6_hdr *>(frame + off);
  if ((frame[off] >> 4) != 6) return verdict::drop(drop_reason::bad_header);
  uint32_t plen = rte_be_to_cpu_16(ip6->payload_len);
  if (off + IP6_HLEN + plen > b.limit) return verdict::drop(drop_reason::truncated);
  b.limit = off + IP6_HLEN + plen;
  meta->l3_off = static_cast<uint16_t>(off);
  meta->l3_len = static_cast<uint16_t>(IP6_HLEN + plen);

  uint8_t nh = ip6->proto;
  if (l3 == FLOW_L3_IPV6) {
    // A tunnel's outer header (an inner one carrying another tunnel is not the fast path's).
    uint32_t outer_len = IP6_HLEN;
    if (nh == IPPROTO_DSTOPTS_HDR) {
      uint32_t opt_len;
      v = parse_tunnel_dstopts(frame, off + IP6_HLEN, b, &opt_len, &nh);
      if (!v.is_ok()) return v;
      outer_len += opt_len;
    }
    if (nh == IPPROTO_IPIP || nh == IPPROTO_IPV6) {
      // IPv4 or IPv6 in IPv6: the flow is the inner packet's, from this outer source to
      // this outer destination. Whether they are a configured tunnel's endpoints is the
      // lookup's business (for IPv6 inside, the lookup's and the flow's: see flow_key.h).
      meta->outer_len = static_cast<uint16_t>(outer_len);
      meta->l3_len = 0;
      if (nh == IPPROTO_IPIP) {
        memcpy(key->ip4.outer_src, ip6->src_addr, 16);
        memcpy(key->ip4.outer_dst, ip6->dst_addr, 16);
        return parse_ip4(frame, off + outer_len, b, key, meta, FLOW_L3_IPV4_IN_IPV6);
      }
      const uint64_t fold = outer_fold6(ip6->src_addr, ip6->dst_addr);
      memcpy(key->ip6.outer, &fold, 8);
      return parse_ip6(frame, off + outer_len, b, key, meta, FLOW_L3_IPV6_IN_IPV6);
    }
  }
  if (ip6_is_extension(nh))
    return verdict::punt(nh == 44 ? punt_reason::fragment : punt_reason::ipv6_ext);
  key->l3proto = l3;
  memcpy(key->ip6.src, ip6->src_addr, 16);
  memcpy(key->ip6.dst, ip6->dst_addr, 16);
  v = parse_l4(frame, off + IP6_HLEN, nh, b, key, meta);
  if (!v.is_ok()) return v;
  if (ip6->hop_limits <= 1) return verdict::punt(punt_reason::ttl_expired);
  return verdict::ok();
}

}  // namespace detail

// A port's own Ethernet address as parse_fast() compares it: the six bytes loaded little
// endian into the low 48 bits.
inline uint64_t port_mac_word(const uint8_t mac[6]) {
  uint64_t w = 0;
  memcpy(&w, mac, 6);
  return w;
}

// Whom the frame is for, as the kernel's eth_type_trans() classifies it: the port itself
// (ok), everyone (broadcast or multicast: PACKET_BROADCAST/MULTICAST, which ip_forward()
// and ip6_forward() never forward, so the kernel decides), or another host
// (PACKET_OTHERHOST, which ip_rcv_core(), ipv6_rcv() and arp_rcv() drop).
inline verdict eth_destination(const uint8_t *frame, uint64_t port_mac) {
  if (port_mac_word(frame) == port_mac) return verdict::ok();
  // The group bit, as rte_is_multicast_ether_addr() tests it (broadcast has it too); not
  // that function itself: its rte_ether_addr is 2-aligned, a frame need not be.
  if (frame[0] & RTE_ETHER_GROUP_ADDR) return verdict::punt(punt_reason::multicast);
  return verdict::drop(drop_reason::other_host);
}

// Parse an Ethernet frame into its flow key. Reads the first segment only. port_mac: the
// receiving port's address (port_mac_word), or nullptr for frames from the kernel, which
// are addressed to the next hop.
// Sets: *key (all 48 bytes), *meta. Reads: packet data, data_len, pkt_len, ol_flags.
inline verdict parse_packet(const rte_mbuf *m, uint16_t in_port, const uint64_t *port_mac, flow_key *key,
                            pkt_meta *meta) {
  flow_key_zero(key);
  key->in_port = in_port;
  *meta = pkt_meta{};
  const uint8_t *frame = rte_pktmbuf_mtod(m, const uint8_t *);
  detail::bounds b{m->data_len, m->pkt_len};
  verdict v = b.need(ETH_HLEN);
  if (!v.is_ok()) return v;
  if (port_mac != nullptr) {
    v = eth_destination(frame, *port_mac);
    if (!v.is_ok()) return v;
  }
  uint16_t ether_type = detail::load_be16(frame + 12);
  if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
    return detail::parse_ip4(frame, ETH_HLEN, b, key, meta, FLOW_L3_IPV4, detail::ip4_csum_verified(m));
  if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6))
    return detail::parse_ip6(frame, ETH_HLEN, b, key, meta);
  return verdict::punt(punt_reason::non_ip);
}

namespace detail {

inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

inline uint32_t load32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

// The destination options header Linux ip6tnl writes (init_tel_txopt), byte 0 (the next
// header) and byte 4 (the limit) masked: length 0, option 4 length 1, PadN length 1 value 0.
constexpr uint64_t TEL_OPTION = 0x0001010001040000ull;
constexpr uint64_t TEL_OPTION_MASK = ~((0xffull << 32) | 0xffull);
// The same before an IPv4 packet (next header 4, ip4ip6): one compare in parse_fast().
constexpr uint64_t TEL_OPTION_IPIP = TEL_OPTION | IPPROTO_IPIP;
constexpr uint64_t TEL_OPTION_IPIP_MASK = ~(0xffull << 32);

// Key word 5: ports (as on the wire), input port, L3 and L4 protocol.
inline uint64_t key_tail(uint32_t ports, uint16_t in_port, uint8_t l3, uint8_t l4) {
  return uint64_t{ports} | (uint64_t{in_port} << 32) | (uint64_t{l3} << 48) | (uint64_t{l4} << 56);
}

// The 20-byte IPv4 header at ip sums to 0xffff: ip4_checksum_ok() in a few instructions.
// The one's complement sum of 16-bit words is their sum modulo 0xffff (2^16 = 1 there), and
// so is the sum of the header as two 64-bit words and a 32-bit one (2^32 and 2^64 are 1
// too), with a carry out of 64 bits added back in (an adc). A sum that folds to 0xffff is a
// non-zero multiple of 0xffff (never zero: the version nibble is 4), and the compiler tests
// divisibility by a constant with one multiplication.
inline bool ip4_checksum_ok20(const uint8_t *ip) {
  uint64_t a = load64(ip), b = load64(ip + 8), c = load32(ip + 16);
  uint64_t sum = a + b;
  sum += sum < a;
  sum += c;
  sum += sum < c;
  return sum % 0xffff == 0;
}

// IPv4 + TCP/UDP at ip, forwardable as it is. limit: bytes from ip to the end of what
// encloses it; seg_left: bytes from ip to the end of the first segment; l3: the key's L3
// value; verified: the port checked the header checksum and found it good.
// Locals are as wide as the key word they go into: the compiler spills some of them in this
// register-hungry loop, and a byte spilled and reloaded as a word stalls store forwarding
// (measured: 20 cycles a packet in bench/micro).
inline bool ip4_fast(const uint8_t *ip, uint32_t limit, uint32_t seg_left, uint16_t in_port, uint8_t l3,
                     bool verified, uint64_t *w5, uint16_t *l3_len, uint64_t *tcp_flags) {
  if (seg_left < IP4_HLEN + sizeof(rte_udp_hdr) || ip[0] != 0x45) return false;
  const uint64_t proto = ip[9];
  uint32_t l4_min = proto == IPPROTO_TCP ? sizeof(rte_tcp_hdr) : proto == IPPROTO_UDP ? sizeof(rte_udp_hdr) : 0;
  // The protocol before the checksum: an ipip or sit packet, which parse_fast_tunnel()
  // takes next, is not summed twice.
  if (l4_min == 0) return false;
  if (!verified && !ip4_checksum_ok20(ip)) return false;
  uint16_t frag;
  memcpy(&frag, ip + 6, 2);
  if ((frag & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0 || ip[8] <= 1) return false;
  uint32_t tot = rte_be_to_cpu_16(load_be16(ip + 2));
  if (tot < IP4_HLEN + l4_min || tot > limit || seg_left < IP4_HLEN + l4_min) return false;
  uint64_t flags = 0;
  if (proto == IPPROTO_TCP) {
    if ((ip[IP4_HLEN + 12] >> 4) < 5) return false;
    flags = ip[IP4_HLEN + 13] & TCP_FLAGS_STATE;
  }
  *w5 = key_tail(load32(ip + IP4_HLEN), in_port, l3, static_cast<uint8_t>(proto));
  *l3_len = static_cast<uint16_t>(tot);
  *tcp_flags = flags;
  return true;
}

// An ipip or sit packet's outer IPv4 header at ip, as ip4_fast() takes a header (no
// options, a good checksum) whole and unfragmented: its protocol (IPPROTO_IPIP or
// IPPROTO_IPV6), and *tot its total length; 0 for anything else. Its TTL is not checked:
// the packet is for this host (ip_local_deliver()).
inline uint8_t ip4_tunnel_outer_fast(const uint8_t *ip, uint32_t limit, uint32_t seg_left, bool verified, uint32_t *tot) {
  if (seg_left < IP4_HLEN || ip[0] != 0x45) return 0;
  if (!verified && !ip4_checksum_ok20(ip)) return 0;
  uint16_t frag;
  memcpy(&frag, ip + 6, 2);
  const uint8_t proto = ip[9];
  *tot = rte_be_to_cpu_16(load_be16(ip + 2));
  if ((frag & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0 ||
      (proto != IPPROTO_IPIP && proto != IPPROTO_IPV6) || *tot < IP4_HLEN || *tot > limit)
    return 0;
  return proto;
}

// IPv6 + TCP/UDP at ip6, without extension headers, forwardable as it is: key words 0-3
// (the addresses) and 5. limit and seg_left as for ip4_fast().
inline bool ip6_fast(const uint8_t *ip6, uint32_t limit, uint32_t seg_left, uint16_t in_port, uint8_t l3, uint64_t *w,
                     uint16_t *l3_len, uint64_t *tcp_flags) {
  if (seg_left < IP6_HLEN + sizeof(rte_udp_hdr) || (ip6[0] >> 4) != 6) return false;
  const uint32_t plen = rte_be_to_cpu_16(load_be16(ip6 + 4));
  const uint8_t nh = ip6[6];
  if (IP6_HLEN + plen > limit || (nh != IPPROTO_TCP && nh != IPPROTO_UDP)) return false;
  const uint32_t l4_min = nh == IPPROTO_TCP ? sizeof(rte_tcp_hdr) : sizeof(rte_udp_hdr);
  if (plen < l4_min || seg_left < IP6_HLEN + l4_min || ip6[7] <= 1) return false;
  uint64_t flags = 0;
  if (nh == IPPROTO_TCP) {
    if ((ip6[IP6_HLEN + 12] >> 4) < 5) return false;
    flags = ip6[IP6_HLEN + 13] & TCP_FLAGS_STATE;
  }
  w[0] = load64(ip6 + 8);
  w[1] = load64(ip6 + 16);
  w[2] = load64(ip6 + 24);
  w[3] = load64(ip6 + 32);
  w[5] = key_tail(load32(ip6 + IP6_HLEN), in_port, l3, nh);
  *l3_len = static_cast<uint16_t>(IP6_HLEN + plen);
  *tcp_flags = flags;
  return true;
}

// The packet inside a tunnel at p + l3_off (l3_off past the outer headers), of up to limit
// bytes, into the key words: its own, with the tunnel's outer word (key word 1 for ipip,
// 4 for the others) left to the caller. inner_ipv4: what the outer header said it carries.
inline bool inner_fast(const uint8_t *p, uint32_t l3_off, uint32_t limit, uint32_t seg, uint16_t in_port,
                       bool inner_ipv4, uint8_t l3, uint64_t *w, uint16_t *l3_len, uint64_t *tcp_flags) {
  if (seg < l3_off) return false;
  if (inner_ipv4) {
    // The port's checksum flags are about the outer header, if anything: verify this one.
    if (!ip4_fast(p + l3_off, limit, seg - l3_off, in_port, l3, false, &w[5], l3_len, tcp_flags)) return false;
    w[0] = load64(p + l3_off + 12);
    w[1] = w[2] = w[3] = w[4] = 0;
    return true;
  }
  return ip6_fast(p + l3_off, limit, seg - l3_off, in_port, l3, w, l3_len, tcp_flags);
}

}  // namespace detail

// What parse_fast() needs of the receiving port and of the flowtable: loaded once a burst.
struct rx_context {
  uint64_t mac;       // the port's own address (port_mac_word)
  uint32_t seed;      // the flowtable's hash seed
  uint16_t port;      // the port's id: the key's in_port
  bool csum_offload;  // the port checks IPv4 header checksums (sets RX_IP_CKSUM_GOOD)
};

namespace detail {

// The key words, meta and hash of a parsed packet, out of parse_fast() and its tunnel part.
inline void fast_result(const uint64_t w[6], uint16_t l3_off, uint16_t l3_len, uint16_t outer_len, uint64_t tcp_flags,
                        uint32_t seed, flow_key *key, pkt_meta *meta, uint32_t *hash) {
  memcpy(key, w, 6 * sizeof(uint64_t));
  *meta = pkt_meta{l3_off, l3_len, outer_len, static_cast<uint8_t>(tcp_flags), 0};
  *hash = flow_key_hash_words(w, seed);
}

// parse_fast() for the tunnel modes other than ip4ip6: IPv4 or IPv6 inside IPv4 (ipip,
// sit), IPv6 inside IPv6 (ip6ip6), with the outer headers parse_fast() takes for ip4ip6.
// Out of line, and tried only when parse_fast() said no: a plain or ip4ip6 packet's parse
// is register-bound, and these modes' code beside it made the compiler spill there
// (measured: 2-3 cycles a packet on fwd4 and decap in bench/micro). Sets: as parse_fast().
__attribute__((noinline)) inline bool parse_fast_tunnel(const rte_mbuf *m, const rx_context &rx, flow_key *key,
                                                          pkt_meta *meta, uint32_t *hash) {
  const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
  const uint32_t seg = m->data_len;
  const uint32_t total = m->pkt_len;
  if (seg < ETH_HLEN + IP4_HLEN + sizeof(rte_udp_hdr) || ((load64(p) ^ rx.mac) << 16) != 0) return false;
  const uint16_t ether_type = load_be16(p + 12);
  uint64_t w[6];
  uint16_t l3_len;
  uint64_t tcp_flags;
  if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
    uint32_t outer_tot;
    const uint8_t proto = ip4_tunnel_outer_fast(p + ETH_HLEN, total - ETH_HLEN, seg - ETH_HLEN,
                                                rx.csum_offload && ip4_csum_verified(m), &outer_tot);
    if (proto == 0) return false;
    const bool inner_ipv4 = proto == IPPROTO_IPIP;
    const uint16_t l3_off = ETH_HLEN + IP4_HLEN;
    const uint8_t l3 = inner_ipv4 ? FLOW_L3_IPV4_IN_IPV4 : FLOW_L3_IPV6_IN_IPV4;
    if (!inner_fast(p, l3_off, outer_tot - IP4_HLEN, seg, rx.port, inner_ipv4, l3, w, &l3_len, &tcp_flags)) return false;
    // The outer source and destination are one key word.
    if (inner_ipv4)
      w[1] = load64(p + ETH_HLEN + 12);
    else
      w[4] = load64(p + ETH_HLEN + 12);
    fast_result(w, l3_off, l3_len, IP4_HLEN, tcp_flags, rx.seed, key, meta, hash);
    return true;
  }
  if (ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)) return false;
  const uint8_t *ip6 = p + ETH_HLEN;
  if (seg < ETH_HLEN + IP6_HLEN + sizeof(rte_udp_hdr) || (ip6[0] >> 4) != 6) return false;
  const uint32_t plen = rte_be_to_cpu_16(load_be16(ip6 + 4));
  if (ETH_HLEN + IP6_HLEN + plen > total) return false;
  uint8_t nh = ip6[6];
  uint32_t outer_len = IP6_HLEN;
  if (nh == IPPROTO_DSTOPTS_HDR && seg >= ETH_HLEN + IP6_HLEN + TUNNEL_DSTOPT_LEN) {
    const uint64_t opt = load64(ip6 + IP6_HLEN);
    if ((opt & TEL_OPTION_MASK) != TEL_OPTION) return false;
    nh = static_cast<uint8_t>(opt);
    outer_len = IP6_HLEN + TUNNEL_DSTOPT_LEN;
  }
  if (nh != IPPROTO_IPV6 || plen < outer_len - IP6_HLEN) return false;
  const uint16_t l3_off = static_cast<uint16_t>(ETH_HLEN + outer_len);
  if (seg < l3_off ||
      !ip6_fast(p + l3_off, plen - (outer_len - IP6_HLEN), seg - l3_off, rx.port, FLOW_L3_IPV6_IN_IPV6, w, &l3_len,
                &tcp_flags))
    return false;
  w[4] = outer_fold6(load64(ip6 + 8), load64(ip6 + 16), load64(ip6 + 24), load64(ip6 + 32));
  fast_result(w, l3_off, l3_len, static_cast<uint16_t>(outer_len), tcp_flags, rx.seed, key, meta, hash);
  return true;
}

}  // namespace detail

// The common case in few instructions: Ethernet to the port's own address + IPv4 without
// options, fragments, a bad checksum or an expiring TTL, IPv6 without extension headers, or
// IPv4 in IPv6 (ip4ip6) with no option or the one Linux writes, carrying TCP or UDP, with
// the headers in the first segment. It builds the key as six words and hashes them with the
// flowtable's seed while they are in registers. Anything else returns false: the other
// tunnel modes are parse_fast_tunnel()'s, and every exception and every malformed packet
// parse_packet()'s, which then says what it is.
// Sets: *key, *meta, *hash.
__rte_always_inline bool parse_fast(const rte_mbuf *m, const rx_context &rx, flow_key *key, pkt_meta *meta, uint32_t *hash) {
  using namespace detail;
  const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
  const uint32_t seg = m->data_len;
  const uint32_t total = m->pkt_len;
  if (unlikely(seg < ETH_HLEN + IP4_HLEN + sizeof(rte_udp_hdr))) return false;
  // The destination MAC is the low six bytes of the first word; the source's first two,
  // the high ones, are shifted out.
  if (unlikely(((load64(p) ^ rx.mac) << 16) != 0)) return false;
  const uint16_t ether_type = load_be16(p + 12);
  uint64_t w[6];
  uint16_t l3_off = ETH_HLEN, outer_len_out = 0, l3_len;
  uint64_t tcp_flags;  // wide, as ip4_fast() says why
  if (likely(ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))) {
    // The mbuf's flags are read only where the port sets them: a load less per packet.
    if (!ip4_fast(p + ETH_HLEN, total - ETH_HLEN, seg - ETH_HLEN, rx.port, FLOW_L3_IPV4,
                  rx.csum_offload && ip4_csum_verified(m), &w[5], &l3_len, &tcp_flags))
      return false;
    w[0] = load64(p + ETH_HLEN + 12);
    w[1] = w[2] = w[3] = w[4] = 0;
  } else if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)) {
    const uint8_t *ip6 = p + ETH_HLEN;
    if (seg < ETH_HLEN + IP6_HLEN + sizeof(rte_udp_hdr) || (ip6[0] >> 4) != 6) return false;
    uint32_t plen = rte_be_to_cpu_16(load_be16(ip6 + 4));
    if (ETH_HLEN + IP6_HLEN + plen > total) return false;
    uint8_t nh = ip6[6];
    if (nh == IPPROTO_TCP || nh == IPPROTO_UDP) {
      if (!ip6_fast(ip6, total - ETH_HLEN, seg - ETH_HLEN, rx.port, FLOW_L3_IPV6, w, &l3_len, &tcp_flags)) return false;
      w[4] = 0;
    } else {
      // ip4ip6 only, with the option or without: parse_fast_tunnel() takes ip6ip6.
      uint16_t outer_len;
      if (nh == IPPROTO_DSTOPTS_HDR && seg >= ETH_HLEN + IP6_HLEN + TUNNEL_DSTOPT_LEN &&
          (load64(ip6 + IP6_HLEN) & TEL_OPTION_IPIP_MASK) == TEL_OPTION_IPIP)
        outer_len = IP6_HLEN + TUNNEL_DSTOPT_LEN;
      else if (nh == IPPROTO_IPIP)
        outer_len = IP6_HLEN;
      else
        return false;
      if (plen < static_cast<uint32_t>(outer_len - IP6_HLEN)) return false;
      l3_off = static_cast<uint16_t>(ETH_HLEN + outer_len);
      // The port's checksum flags are about the outer header, if anything: verify this one.
      if (!ip4_fast(p + l3_off, plen - (outer_len - IP6_HLEN), seg - l3_off, rx.port, FLOW_L3_IPV4_IN_IPV6, false,
                    &w[5], &l3_len, &tcp_flags))
        return false;
      w[0] = load64(p + l3_off + 12);
      w[1] = load64(ip6 + 8);
      w[2] = load64(ip6 + 16);
      w[3] = load64(ip6 + 24);
      w[4] = load64(ip6 + 32);
      outer_len_out = outer_len;
    }
  } else {
    return false;
  }
  fast_result(w, l3_off, l3_len, outer_len_out, tcp_flags, rx.seed, key, meta, hash);
  return true;
}

// Incremental checksum update for one 16-bit word (RFC 1624, eqn. 3). All three values in
// network byte order: one's complement sums do not care which order, as long as it is one.
inline rte_be16_t csum_replace16(rte_be16_t check, rte_be16_t old_word, rte_be16_t new_word) {
  uint32_t sum = static_cast<uint16_t>(~check);
  sum += static_cast<uint16_t>(~old_word);
  sum += new_word;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<rte_be16_t>(~sum);
}

// TTL-1 with the header checksum updated incrementally. Caller checked TTL > 1.
inline void ip4_dec_ttl(rte_ipv4_hdr *ip) {
  // TTL and protocol form one checksum word. Load it once and store it once: re-reading it
  // after a one-byte TTL store would stall on store forwarding. Byte 0 is the TTL in memory
  // order, and it is > 1, so subtracting 1 from the word as loaded cannot borrow.
  rte_be16_t before;
  memcpy(&before, &ip->time_to_live, 2);
  rte_be16_t after = static_cast<rte_be16_t>(rte_cpu_to_be_16(rte_be_to_cpu_16(before) - 0x100));
  memcpy(&ip->time_to_live, &after, 2);
  ip->hdr_checksum = csum_replace16(ip->hdr_checksum, before, after);
}

inline void ip4_set_tos(rte_ipv4_hdr *ip, uint8_t tos) {
  rte_be16_t before;
  memcpy(&before, &ip->version_ihl, 2);  // version/IHL and TOS form one checksum word
  rte_be16_t after = static_cast<rte_be16_t>(rte_cpu_to_be_16(static_cast<uint16_t>((rte_be_to_cpu_16(before) & 0xff00) | tos)));
  memcpy(&ip->version_ihl, &after, 2);
  ip->hdr_checksum = csum_replace16(ip->hdr_checksum, before, after);
}

inline void ip6_dec_hop_limit(rte_ipv6_hdr *ip6) { ip6->hop_limits--; }

inline uint8_t ip6_traffic_class(const rte_ipv6_hdr *ip6) {
  return static_cast<uint8_t>(rte_be_to_cpu_32(ip6->vtc_flow) >> 20);
}

// Tunnel entry (Linux INET_ECN_encapsulate, RFC 6040 normal mode as Linux does it): the
// outer ECN field copies the inner one, except that CE becomes ECT(0).
inline uint8_t ecn_encapsulate(uint8_t outer_tclass, uint8_t inner_tos) {
  uint8_t inner_ecn = inner_tos & ECN_MASK;
  return static_cast<uint8_t>((outer_tclass & ~ECN_MASK) |
                              (inner_ecn == ECN_CE ? ECN_ECT_0 : inner_ecn));
}

// Tunnel exit (RFC 6040 section 4.2, as Linux INET_ECN_decapsulate): an outer CE marks an
// ECN-capable inner packet CE and drops a not-ECN-capable one; an outer ECT(1) turns an
// inner ECT(0) into ECT(1). Returns false to drop.
inline bool ecn_decapsulate(uint8_t outer_tclass, rte_ipv4_hdr *inner) {
  uint8_t outer = outer_tclass & ECN_MASK;
  uint8_t tos = inner->type_of_service;
  uint8_t ecn = tos & ECN_MASK;
  if (ecn == ECN_NOT_ECT) return outer != ECN_CE;
  if (outer == ECN_CE && ecn != ECN_CE)
    ip4_set_tos(inner, tos | ECN_CE);
  else if (outer == ECN_ECT_1 && ecn == ECN_ECT_0)
    ip4_set_tos(inner, static_cast<uint8_t>((tos & ~ECN_MASK) | ECN_ECT_1));
  return true;
}

// The same for an inner IPv6 packet (its traffic class has no checksum to keep).
inline bool ecn_decapsulate6(uint8_t outer_tclass, rte_ipv6_hdr *inner) {
  uint8_t outer = outer_tclass & ECN_MASK;
  uint32_t vtc = rte_be_to_cpu_32(inner->vtc_flow);
  uint8_t ecn = (vtc >> 20) & ECN_MASK;
  if (ecn == ECN_NOT_ECT) return outer != ECN_CE;
  uint8_t set;
  if (outer == ECN_CE)
    set = ECN_CE;
  else if (outer == ECN_ECT_1 && ecn == ECN_ECT_0)
    set = ECN_ECT_1;
  else
    return true;
  inner->vtc_flow = rte_cpu_to_be_32((vtc & ~(uint32_t{ECN_MASK} << 20)) | (uint32_t{set} << 20));
  return true;
}

// The outer header's traffic class (IPv6) or TOS (IPv4).
inline uint8_t outer_traffic_class(const uint8_t *outer, bool outer_ipv4) {
  return outer_ipv4 ? outer[1] : ip6_traffic_class(reinterpret_cast<const rte_ipv6_hdr *>(outer));
}

// RFC 6040 at the tunnel exit for the inner packet at inner, of either family. Returns
// false to drop.
inline bool ecn_decapsulate_inner(uint8_t outer_tclass, uint8_t *inner, bool inner_ipv4) {
  return inner_ipv4 ? ecn_decapsulate(outer_tclass, reinterpret_cast<rte_ipv4_hdr *>(inner))
                    : ecn_decapsulate6(outer_tclass, reinterpret_cast<rte_ipv6_hdr *>(inner));
}

// Cut link-layer padding (and anything else) after the IP packet: a 60-byte minimum frame
// carrying a 40-byte TCP ACK must not grow a 6-byte tail inside a tunnel. A chain loses the
// segments after the one that holds byte len, empty ones included (an empty last segment
// wedges the tx queues of some PMDs). Returns those segments, detached, for the caller to
// free (the fast path frees them with the burst's drops), or nullptr.
inline rte_mbuf *trim_to(rte_mbuf *m, uint32_t len) {
  if (likely(m->nb_segs == 1)) {
    if (m->pkt_len > len) {
      m->data_len = static_cast<uint16_t>(m->data_len - (m->pkt_len - len));
      m->pkt_len = len;
    }
    return nullptr;
  }
  if (len > m->pkt_len) len = m->pkt_len;
  rte_mbuf *last = m;
  uint32_t left = len;
  uint16_t segs = 1;
  while (left > last->data_len && last->next != nullptr) {
    left -= last->data_len;
    last = last->next;
    segs++;
  }
  if (left < last->data_len) last->data_len = static_cast<uint16_t>(left);
  rte_mbuf *tail = last->next;
  last->next = nullptr;
  m->nb_segs = segs;
  m->pkt_len = len;
  return tail;
}

}  // namespace fg
