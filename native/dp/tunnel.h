// IPv4-over-IPv6 tunnels (RFC 2473; Linux ip6tnl mode ipip6). Encapsulation options are
// data: each tunnel carries its outer headers precomputed as a template (Ethernet towards
// the underlay next hop + IPv6 + optionally the destination options header with the Tunnel
// Encapsulation Limit) and flags for what is filled in per packet, as VPP's
// tunnel_encap_fixup_4o6 does. The fast path and the slow path both encapsulate with
// encap_ip4in6(), so both emit identical outer headers.
#pragma once

#include <cstdint>
#include <cstring>

#include "packet.h"

namespace fg {

enum tunnel_flags : uint8_t {
  TUNNEL_F_INHERIT_TCLASS = 1 << 0,    // traffic class from the inner TOS
  TUNNEL_F_INHERIT_HOPLIMIT = 1 << 1,  // hop limit from the inner TTL (after forwarding)
  TUNNEL_F_FLOWLABEL_HASH = 1 << 2,    // flow label per flow (flow_entry::flowlabel)
};

constexpr uint16_t TUNNEL_HDR_MAX = ETH_HLEN + IP6_HLEN + TUNNEL_DSTOPT_LEN;

// What the control plane configures; tunnel_build() turns it into a tunnel.
struct tunnel_params {
  uint8_t local[16];
  uint8_t remote[16];
  int16_t encap_limit;  // 0..255, or -1: no destination options header
  uint8_t hop_limit;    // 1..255, or 0: inherit the inner TTL
  int16_t tclass;       // 0..255, or -1: inherit the inner TOS
  uint32_t flowlabel;   // 20 bits: the fixed label
  bool flowlabel_hash;  // label per flow instead of the fixed one
  uint16_t mtu;         // largest inner packet; the rest goes to the slow path
  uint16_t port;        // underlay output port
  uint8_t dst_mac[6];   // underlay next hop
  uint8_t src_mac[6];   // the underlay port's address
  uint16_t slowpath_port;  // where this tunnel's punted packets go, decapsulated, or PORT_NONE
};

// Lcores: read from the published snapshot; control thread: builds, never modifies in place.
struct alignas(CACHE_LINE) tunnel {
  uint8_t tmpl[64];  // outer headers as sent, with zero payload length/flow/hop limit fields
  uint8_t tmpl_len;  // ETH_HLEN + IP6_HLEN (+ TUNNEL_DSTOPT_LEN)
  uint8_t flags;     // tunnel_flags
  uint8_t tclass;
  uint8_t hop_limit;
  uint32_t flowlabel;
  uint16_t mtu;  // as configured
  // The underlay path MTU towards remote learnt from ICMPv6 packet too big (as Linux's
  // ip6_update_pmtu() on the route to the remote), or 0 while none was learnt.
  uint16_t path_mtu;
  // The largest inner packet the tunnel sends: min(mtu, underlay port MTU - outer headers,
  // path_mtu - outer headers), set by derive_tunnel_mtus() when the snapshot is built.
  uint16_t effective_mtu;
  uint16_t port;
  uint16_t slowpath_port;
  uint8_t active;

  const uint8_t *local() const { return tmpl + ETH_HLEN + offsetof(rte_ipv6_hdr, src_addr); }
  const uint8_t *remote() const { return tmpl + ETH_HLEN + offsetof(rte_ipv6_hdr, dst_addr); }
};

void tunnel_build(tunnel *t, const tunnel_params &p);

// Whether an IPv6 address can be a tunnel's endpoint: not the unspecified address, the
// loopback address or a multicast address, which ipv6_rcv() drops or no tunnel answers to.
inline bool tunnel_endpoint_ok(const uint8_t a[16]) {
  return !ip6_is_unspecified(a) && !ip6_is_loopback(a) && !ip6_is_multicast(a);
}

// Outer headers added by encapsulation, without the Ethernet header: 40, or 48 with the
// encapsulation limit option. Also the headroom encap_ip4in6() needs.
inline uint16_t tunnel_overhead(const tunnel &t) { return static_cast<uint16_t>(t.tmpl_len - ETH_HLEN); }

// The smallest MTU an IPv6 link may have (RFC 8200 section 5), and so the lowest path MTU
// that a packet too big can set (Linux clamps likewise, __ip6_rt_update_pmtu()).
constexpr uint16_t IP6_MIN_MTU = 1280;
// The smallest IPv4 MTU (RFC 791): the floor of a tunnel's effective MTU, as ip6_tnl_xmit()'s
// max(mtu, IPV4_MIN_MTU) for IPv4 inner packets.
constexpr uint16_t IP4_MIN_MTU = 68;

// A tunnel's effective MTU given its underlay port's MTU (0: unknown).
uint16_t tunnel_effective_mtu(const tunnel &t, uint16_t underlay_mtu);

// Is this decapsulated packet's outer source/destination the tunnel's remote/local?
inline bool tunnel_matches(const tunnel &t, const uint8_t *outer_src, const uint8_t *outer_dst) {
  return t.active && memcmp(outer_src, t.remote(), 16) == 0 && memcmp(outer_dst, t.local(), 16) == 0;
}

// Encapsulate the IPv4 packet of inner_len bytes that follows the Ethernet header of m, and
// ends the frame (trim_to), already forwarded (TTL decremented), in a frame with at least
// tunnel_overhead(t) bytes of headroom: callers check both before they modify the packet.
// Sets: the outer headers; the Ethernet header is the template's. Reads: inner TOS and TTL.
inline void encap_ip4in6(rte_mbuf *m, const tunnel &t, uint16_t inner_len, uint32_t flow_label) {
  const auto *inner = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr *, ETH_HLEN);
  uint8_t tos = inner->type_of_service;
  uint8_t ttl = inner->time_to_live;
  auto *h = reinterpret_cast<uint8_t *>(rte_pktmbuf_prepend(m, tunnel_overhead(t)));
  // Constant-size copies so the compiler emits vector moves, not a memcpy call.
  if (t.tmpl_len == TUNNEL_HDR_MAX)
    memcpy(h, t.tmpl, TUNNEL_HDR_MAX);
  else
    memcpy(h, t.tmpl, ETH_HLEN + IP6_HLEN);

  auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(h + ETH_HLEN);
  uint8_t tclass = ecn_encapsulate((t.flags & TUNNEL_F_INHERIT_TCLASS) ? tos : t.tclass, tos);
  uint32_t label = (t.flags & TUNNEL_F_FLOWLABEL_HASH) ? flow_label : t.flowlabel;
  ip6->vtc_flow = rte_cpu_to_be_32((6u << 28) | (uint32_t{tclass} << 20) | (label & 0xfffff));
  ip6->payload_len = rte_cpu_to_be_16(static_cast<uint16_t>(inner_len + t.tmpl_len - ETH_HLEN - IP6_HLEN));
  ip6->hop_limits = (t.flags & TUNNEL_F_INHERIT_HOPLIMIT) ? ttl : t.hop_limit;
}

// A per-flow IPv6 flow label (RFC 6437): a hash of the inner 5-tuple, never zero.
uint32_t flowlabel_of(const flow_key &inner);

}  // namespace fg
