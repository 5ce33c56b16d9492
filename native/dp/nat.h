// Address and port translation of an offloaded flow direction, as the kernel's flowtable
// does it for NF_FLOW_SNAT / NF_FLOW_DNAT (net/netfilter/nf_flow_table_ip.c:
// nf_flow_snat_ip, nf_flow_dnat_ip, nf_flow_nat_port, and their IPv6 twins). The control
// plane gives the tuple the packet leaves with, taken from the connection's reply tuple.
//
// The old values are the flow key's and the new ones are fixed, so the checksum change is a
// constant: the control thread sums it once (RFC 1624: HC' = ~(~HC + ~m + m')) and the lcore
// only adds a folded 16-bit delta. Records live in an array parallel to the flow entries
// (flowtable::nat), one cache line each, read only by flows with FLOW_F_NAT.
#pragma once

#include <cstdint>
#include <cstring>

#include <netinet/in.h>

#include "common.h"
#include "flow_key.h"

namespace fg {

// Which fields a direction rewrites (for the control plane's listing; the lcore writes all
// four fields, unchanged ones with the key's own values).
enum flow_nat_field : uint8_t {
  NAT_F_SRC = 1 << 0,
  NAT_F_DST = 1 << 1,
  NAT_F_SPORT = 1 << 2,
  NAT_F_DPORT = 1 << 3,
};

// The rewrite as the control plane describes it: only the fields whose bit is set count.
struct flow_nat_spec {
  uint8_t flags = 0;    // NAT_F_*
  uint8_t src[16] = {};  // IPv4: the first 4 bytes; network order
  uint8_t dst[16] = {};
  uint16_t sport = 0;   // network order
  uint16_t dport = 0;
};

// Control thread: written before the entry is published; lcores: read.
struct alignas(CACHE_LINE) flow_nat {
  union {
    struct {
      uint32_t src;  // network order
      uint32_t dst;
    } ip4;
    struct {
      uint8_t src[16];
      uint8_t dst[16];
    } ip6;
  };
  uint16_t sport;     // network order
  uint16_t dport;
  uint16_t ip4_delta;  // added to the IPv4 header checksum: the address change
  uint16_t l4_delta;   // added to the TCP/UDP checksum: pseudo-header addresses and ports
  uint8_t flags;       // NAT_F_*, for listing
};
static_assert(sizeof(flow_nat) == CACHE_LINE, "a NAT record is one cache line");

namespace detail {

// One's complement sum of ~old + new over n 16-bit words: the checksum change of replacing
// old by new (RFC 1624 eqn. 3). Words are taken in memory order; one's complement sums do
// not care about byte order as long as every term uses the same.
inline uint32_t csum_change(uint32_t sum, const void *old_bytes, const void *new_bytes, unsigned n_words) {
  for (unsigned i = 0; i < n_words; i++) {
    uint16_t o, w;
    memcpy(&o, static_cast<const uint8_t *>(old_bytes) + 2 * i, 2);
    memcpy(&w, static_cast<const uint8_t *>(new_bytes) + 2 * i, 2);
    sum += static_cast<uint16_t>(~o);
    sum += w;
  }
  return sum;
}

// Folded to 16 bits, with 0xffff (one's complement -0) as 0, so that a change that cancels
// out (no change, or swapped addresses) leaves a checksum bit for bit as it was.
inline uint16_t csum_fold_delta(uint32_t sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff ? 0 : static_cast<uint16_t>(sum);
}

}  // namespace detail

// Add a precomputed delta to a checksum field (both in memory order).
inline uint16_t csum_add_delta(uint16_t check, uint16_t delta) {
  uint32_t sum = static_cast<uint16_t>(~check);
  sum += delta;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Control thread: the record for a flow with key k and rewrite s.
inline void flow_nat_build(flow_nat *n, const flow_key &k, const flow_nat_spec &s) {
  memset(n, 0, sizeof(*n));
  n->flags = s.flags;
  uint32_t addr_sum = 0;
  if (flow_l3_is_ipv4(k.l3proto)) {
    n->ip4.src = k.ip4.src;
    n->ip4.dst = k.ip4.dst;
    if (s.flags & NAT_F_SRC) memcpy(&n->ip4.src, s.src, 4);
    if (s.flags & NAT_F_DST) memcpy(&n->ip4.dst, s.dst, 4);
    addr_sum = detail::csum_change(addr_sum, &k.ip4.src, &n->ip4.src, 2);
    addr_sum = detail::csum_change(addr_sum, &k.ip4.dst, &n->ip4.dst, 2);
    n->ip4_delta = detail::csum_fold_delta(addr_sum);
  } else {
    memcpy(n->ip6.src, (s.flags & NAT_F_SRC) ? s.src : k.ip6.src, 16);
    memcpy(n->ip6.dst, (s.flags & NAT_F_DST) ? s.dst : k.ip6.dst, 16);
    addr_sum = detail::csum_change(addr_sum, k.ip6.src, n->ip6.src, 8);
    addr_sum = detail::csum_change(addr_sum, k.ip6.dst, n->ip6.dst, 8);
  }
  n->sport = (s.flags & NAT_F_SPORT) ? s.sport : k.sport;
  n->dport = (s.flags & NAT_F_DPORT) ? s.dport : k.dport;
  uint32_t l4_sum = detail::csum_change(addr_sum, &k.sport, &n->sport, 1);
  l4_sum = detail::csum_change(l4_sum, &k.dport, &n->dport, 1);
  n->l4_delta = detail::csum_fold_delta(l4_sum);
}

// Control thread: the rewrite a record holds, as the control plane gave it.
inline flow_nat_spec flow_nat_spec_of(const flow_nat &n, uint8_t l3proto) {
  flow_nat_spec s;
  s.flags = n.flags;
  if (flow_l3_is_ipv4(l3proto)) {
    if (n.flags & NAT_F_SRC) memcpy(s.src, &n.ip4.src, 4);
    if (n.flags & NAT_F_DST) memcpy(s.dst, &n.ip4.dst, 4);
  } else {
    if (n.flags & NAT_F_SRC) memcpy(s.src, n.ip6.src, 16);
    if (n.flags & NAT_F_DST) memcpy(s.dst, n.ip6.dst, 16);
  }
  if (n.flags & NAT_F_SPORT) s.sport = n.sport;
  if (n.flags & NAT_F_DPORT) s.dport = n.dport;
  return s;
}

// Lcores: rewrite the addresses and ports of the IP packet at l3 (the inner one when
// tunnelled), which the fast parser checked: IPv4 without options or IPv6 without extension
// headers, TCP or UDP with its header in the segment. Reads: the packet's L3/L4 headers.
// Sets: addresses, ports, the IPv4 header checksum and the TCP/UDP checksum.
inline void nat_apply(uint8_t *l3, uint8_t l3proto, uint8_t l4proto, const flow_nat &n) {
  uint8_t *l4;
  if (flow_l3_is_ipv4(l3proto)) {
    memcpy(l3 + 12, &n.ip4, 8);  // source and destination, adjacent in both
    uint16_t check;
    memcpy(&check, l3 + 10, 2);
    check = csum_add_delta(check, n.ip4_delta);
    memcpy(l3 + 10, &check, 2);
    l4 = l3 + 20;
  } else {
    memcpy(l3 + 8, &n.ip6, 32);
    l4 = l3 + 40;
  }
  memcpy(l4, &n.sport, 4);  // sport, dport
  if (l4proto == IPPROTO_TCP) {
    uint16_t check;
    memcpy(&check, l4 + 16, 2);
    check = csum_add_delta(check, n.l4_delta);
    memcpy(l4 + 16, &check, 2);
  } else {
    // A UDP checksum of 0 means none (IPv4) and stays so; one that becomes 0 is written as
    // 0xffff (CSUM_MANGLED_0), as nf_flow_nat_port_udp() does.
    uint16_t check;
    memcpy(&check, l4 + 6, 2);
    if (check != 0) {
      check = csum_add_delta(check, n.l4_delta);
      if (check == 0) check = 0xffff;
      memcpy(l4 + 6, &check, 2);
    }
  }
}

}  // namespace fg
