// Point-to-point IP tunnels, as Linux's ip6tnl (ip4ip6 and ip6ip6, RFC 2473), ipip (RFC 2003)
// and sit (IPv6 in IPv4, RFC 4213) run them. Encapsulation options are data: each tunnel
// carries its outer headers precomputed as a template (Ethernet towards the underlay next
// hop + IPv6, optionally with the destination options header carrying the Tunnel
// Encapsulation Limit, or IPv4) and flags for what is filled in per packet, as VPP's
// tunnel_encap_fixup_4o6 does. The fast path and the slow path both encapsulate with
// tunnel_encap(), so both emit identical outer headers.
#pragma once

#include <cstdint>
#include <cstring>

#include "packet.h"

namespace fg {

// Linux's names; the inner and outer families as flow_l3 writes them.
enum tunnel_mode : uint8_t {
  TUNNEL_IP4IP6 = FLOW_L3_IPV4_IN_IPV6,
  TUNNEL_IP6IP6 = FLOW_L3_IPV6_IN_IPV6,
  TUNNEL_IPIP = FLOW_L3_IPV4_IN_IPV4,
  TUNNEL_SIT = FLOW_L3_IPV6_IN_IPV4,
};

inline bool tunnel_mode_valid(uint8_t mode) {
  return mode == TUNNEL_IP4IP6 || mode == TUNNEL_IP6IP6 || mode == TUNNEL_IPIP || mode == TUNNEL_SIT;
}
// Comparisons rather than division: the fast path asks per packet.
inline uint8_t tunnel_inner_family(uint8_t mode) { return flow_l3_is_ipv4(mode) ? 4 : 6; }
inline uint8_t tunnel_outer_family(uint8_t mode) { return mode == TUNNEL_IPIP || mode == TUNNEL_SIT ? 4 : 6; }

// Where an IPv4 or IPv6 header keeps its source and destination address.
inline size_t ip_src_offset(bool ipv4) { return ipv4 ? offsetof(rte_ipv4_hdr, src_addr) : offsetof(rte_ipv6_hdr, src_addr); }
inline size_t ip_dst_offset(bool ipv4) { return ipv4 ? offsetof(rte_ipv4_hdr, dst_addr) : offsetof(rte_ipv6_hdr, dst_addr); }

enum tunnel_flags : uint8_t {
  TUNNEL_F_INHERIT_TCLASS = 1 << 0,    // traffic class / TOS from the inner packet's
  TUNNEL_F_INHERIT_HOPLIMIT = 1 << 1,  // hop limit / TTL from the inner packet's (after forwarding)
  TUNNEL_F_FLOWLABEL_HASH = 1 << 2,    // IPv6 underlay: flow label per flow (flowlabel_of)
  TUNNEL_F_DF_INHERIT = 1 << 3,        // IPv4 underlay without pmtudisc: DF from an inner IPv4 packet
};

constexpr uint16_t TUNNEL_HDR_MAX = ETH_HLEN + IP6_HLEN + TUNNEL_DSTOPT_LEN;

// What the control plane configures; tunnel_build() turns it into a tunnel.
struct tunnel_params {
  uint8_t mode;         // tunnel_mode
  uint8_t local[16];    // IPv4 underlay: the first 4 bytes, the rest zero
  uint8_t remote[16];
  int16_t encap_limit;  // IPv6 underlay: 0..255, or -1: no destination options header
  uint8_t hop_limit;    // hop limit / TTL 1..255, or 0: inherit the inner one
  int16_t tclass;       // traffic class / TOS 0..255, or -1: inherit the inner one
  uint32_t flowlabel;   // IPv6 underlay, 20 bits: the fixed label
  bool flowlabel_hash;  // IPv6 underlay: label per flow instead of the fixed one
  bool pmtudisc;        // IPv4 underlay: DF on every packet (Linux's default), else DF from the inner
  uint16_t mtu;         // largest inner packet; the rest goes to the slow path
  uint16_t port;        // underlay output port
  uint8_t dst_mac[6];   // underlay next hop
  uint8_t src_mac[6];   // the underlay port's address
  uint16_t slowpath_port;  // where this tunnel's punted packets go, decapsulated, or PORT_NONE
};

// Lcores: read from the published snapshot; control thread: builds, never modifies in place.
struct alignas(CACHE_LINE) tunnel {
  uint8_t tmpl[64];  // outer headers as sent, with zero length/checksum/per-packet fields
  uint8_t tmpl_len;  // ETH_HLEN + IP6_HLEN (+ TUNNEL_DSTOPT_LEN), or ETH_HLEN + IP4_HLEN
  uint8_t mode;      // tunnel_mode: also the L3 value of the keys of packets out of it
  uint8_t flags;     // tunnel_flags
  uint8_t tclass;
  uint8_t hop_limit;
  uint8_t active;
  uint16_t mtu;  // as configured
  // The underlay path MTU towards remote learnt from ICMPv6 packet too big (as Linux's
  // ip6_update_pmtu() on the route to the remote), or 0 while none was learnt.
  uint16_t path_mtu;
  // The largest inner packet the tunnel sends: min(mtu, underlay port MTU - outer headers,
  // path_mtu - outer headers), set by derive_tunnel_mtus() when the snapshot is built.
  uint16_t effective_mtu;
  uint16_t port;
  uint16_t slowpath_port;
  uint32_t flowlabel;
  // IPv6 in IPv6: the key word of this tunnel's packets (outer_fold6 of remote, local).
  uint64_t fold;
  // IPv4 underlay: the one's complement sum (unfolded, host order) of the template header's
  // 16-bit words that do not change per packet, so that the checksum is computed from
  // values in registers: reading back the header just written would stall on store
  // forwarding (measured: 20 cycles a packet).
  uint32_t csum_base;

  bool outer_ipv4() const { return tunnel_outer_family(mode) == 4; }
  bool inner_ipv4() const { return tunnel_inner_family(mode) == 4; }
  uint8_t address_len() const { return outer_ipv4() ? 4 : 16; }
  const uint8_t *local() const { return tmpl + ETH_HLEN + ip_src_offset(outer_ipv4()); }
  const uint8_t *remote() const { return tmpl + ETH_HLEN + ip_dst_offset(outer_ipv4()); }
};

void tunnel_build(tunnel *t, const tunnel_params &p);

// Whether an IPv6 address can be a tunnel's endpoint: not the unspecified address, the
// loopback address or a multicast address, which ipv6_rcv() drops or no tunnel answers to.
inline bool tunnel_endpoint_ok(const uint8_t a[16]) {
  return !ip6_is_unspecified(a) && !ip6_is_loopback(a) && !ip6_is_multicast(a);
}
// The same for IPv4 (4 bytes, network order): not 0.0.0.0, loopback (127/8), multicast or
// limited broadcast, which ip_route_input_slow() treats as martian or no tunnel answers to.
inline bool tunnel_endpoint4_ok(const uint8_t a[4]) {
  uint32_t v;
  memcpy(&v, a, 4);
  v = rte_be_to_cpu_32(v);
  return v != 0 && (v >> 24) != 127 && !RTE_IS_IPV4_MCAST(v) && v != UINT32_MAX;
}

// Outer headers added by encapsulation, without the Ethernet header: 40, or 48 with the
// encapsulation limit option, or 20. Also the headroom tunnel_encap() needs.
inline uint16_t tunnel_overhead(const tunnel &t) { return static_cast<uint16_t>(t.tmpl_len - ETH_HLEN); }

// The smallest MTU an IPv6 link may have (RFC 8200 section 5), and so the lowest path MTU
// that a packet too big can set (Linux clamps likewise, __ip6_rt_update_pmtu()).
constexpr uint16_t IP6_MIN_MTU = 1280;
// The smallest IPv4 MTU (RFC 791): the floor of a tunnel's effective MTU, as ip6_tnl_xmit()'s
// max(mtu, IPV4_MIN_MTU) for IPv4 inner packets.
constexpr uint16_t IP4_MIN_MTU = 68;

// A tunnel's effective MTU given its underlay port's MTU (0: unknown).
uint16_t tunnel_effective_mtu(const tunnel &t, uint16_t underlay_mtu);

// Is a packet from outer_src to outer_dst (addresses of the tunnel's outer family, as in
// the outer header) this tunnel's?
inline bool tunnel_matches(const tunnel &t, const uint8_t *outer_src, const uint8_t *outer_dst) {
  const size_t n = t.address_len();
  return t.active && memcmp(outer_src, t.remote(), n) == 0 && memcmp(outer_dst, t.local(), n) == 0;
}

// The outer part of the key of packets that arrive in tunnel t, from its remote to its
// local address: its L3 value and outer addresses (or their fold). The inner addresses,
// ports and protocol are the caller's.
inline void tunnel_key_outer(const tunnel &t, flow_key *k) {
  k->l3proto = t.mode;
  switch (t.mode) {
    case TUNNEL_IP4IP6:
      memcpy(k->ip4.outer_src, t.remote(), 16);
      memcpy(k->ip4.outer_dst, t.local(), 16);
      break;
    case TUNNEL_IPIP:
      memcpy(k->ip4.outer_src, t.remote(), 4);
      memcpy(k->ip4.outer_src + 4, t.local(), 4);
      break;
    case TUNNEL_SIT:
      memcpy(k->ip6.outer, t.remote(), 4);
      memcpy(k->ip6.outer + 4, t.local(), 4);
      break;
    default:
      memcpy(k->ip6.outer, &t.fold, 8);
      break;
  }
}

// Encapsulate the IP packet of inner_len bytes (of the tunnel's inner family) that follows
// the Ethernet header of m and ends the frame (trim_to), already forwarded (TTL or hop limit
// decremented), in a frame with at least tunnel_overhead(t) bytes of headroom: callers check
// both before they modify the packet. flow_label: the per-flow label when the tunnel hashes
// labels; ip_id: the IPv4 underlay's identification for packets without DF (RFC 6864: any
// value for those with it; 0 here).
// Sets: the outer headers; the Ethernet header is the template's. Reads: the inner
// TOS/traffic class, TTL/hop limit and DF.
// OUTER and INNER: the tunnel's families, as constants (tunnel_encap() picks them).
template <unsigned OUTER, unsigned INNER>
inline void tunnel_encap_as(rte_mbuf *m, const tunnel &t, uint16_t inner_len, uint32_t flow_label, uint16_t ip_id) {
  const uint8_t *inner = rte_pktmbuf_mtod_offset(m, const uint8_t *, ETH_HLEN);
  uint8_t tos, ttl;
  rte_be16_t inner_df = 0;
  if (INNER == 4) {
    const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(inner);
    tos = ip->type_of_service;
    ttl = ip->time_to_live;
    inner_df = ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  } else {
    tos = ip6_traffic_class(reinterpret_cast<const rte_ipv6_hdr *>(inner));
    ttl = inner[7];
  }
  const uint8_t outer_tos = ecn_encapsulate((t.flags & TUNNEL_F_INHERIT_TCLASS) ? tos : t.tclass, tos);
  const uint8_t outer_ttl = (t.flags & TUNNEL_F_INHERIT_HOPLIMIT) ? ttl : t.hop_limit;
  auto *h = reinterpret_cast<uint8_t *>(rte_pktmbuf_prepend(m, tunnel_overhead(t)));
  // Constant-size copies so the compiler emits vector moves, not a memcpy call.
  if (OUTER == 4) {
    memcpy(h, t.tmpl, ETH_HLEN + IP4_HLEN);
    auto *ip4 = reinterpret_cast<rte_ipv4_hdr *>(h + ETH_HLEN);
    // ip_tunnel_xmit(): DF from the tunnel (pmtudisc, in the template), or from an inner
    // IPv4 packet.
    const uint16_t df = (t.flags & TUNNEL_F_DF_INHERIT) ? rte_be_to_cpu_16(inner_df) : 0;
    const bool has_df = df != 0 || (t.tmpl[ETH_HLEN + 6] & (RTE_IPV4_HDR_DF_FLAG >> 8)) != 0;
    const uint16_t id = has_df ? 0 : ip_id;
    const uint16_t total = static_cast<uint16_t>(inner_len + IP4_HLEN);
    uint32_t sum = t.csum_base + outer_tos + total + id + df + (uint32_t{outer_ttl} << 8);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip4->type_of_service = outer_tos;
    ip4->total_length = rte_cpu_to_be_16(total);
    ip4->packet_id = rte_cpu_to_be_16(id);
    if (df != 0) ip4->fragment_offset = rte_cpu_to_be_16(df);
    ip4->time_to_live = outer_ttl;
    ip4->hdr_checksum = rte_cpu_to_be_16(static_cast<uint16_t>(~sum));
    return;
  }
  if (t.tmpl_len == TUNNEL_HDR_MAX)
    memcpy(h, t.tmpl, TUNNEL_HDR_MAX);
  else
    memcpy(h, t.tmpl, ETH_HLEN + IP6_HLEN);
  auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(h + ETH_HLEN);
  const uint32_t label = (t.flags & TUNNEL_F_FLOWLABEL_HASH) ? flow_label : t.flowlabel;
  ip6->vtc_flow = rte_cpu_to_be_32((6u << 28) | (uint32_t{outer_tos} << 20) | (label & 0xfffff));
  ip6->payload_len = rte_cpu_to_be_16(static_cast<uint16_t>(inner_len + t.tmpl_len - ETH_HLEN - IP6_HLEN));
  ip6->hop_limits = outer_ttl;
}

inline void tunnel_encap(rte_mbuf *m, const tunnel &t, uint16_t inner_len, uint32_t flow_label, uint16_t ip_id) {
  switch (t.mode) {
    case TUNNEL_IP4IP6: return tunnel_encap_as<6, 4>(m, t, inner_len, flow_label, ip_id);
    case TUNNEL_IP6IP6: return tunnel_encap_as<6, 6>(m, t, inner_len, flow_label, ip_id);
    case TUNNEL_IPIP: return tunnel_encap_as<4, 4>(m, t, inner_len, flow_label, ip_id);
    default: return tunnel_encap_as<4, 6>(m, t, inner_len, flow_label, ip_id);
  }
}

// A per-flow IPv6 flow label (RFC 6437): a hash of the inner 5-tuple, never zero.
uint32_t flowlabel_of(const flow_key &inner);

}  // namespace fg
