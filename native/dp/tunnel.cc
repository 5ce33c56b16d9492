#include "tunnel.h"

#include <algorithm>

namespace fg {
namespace {

// The outer IPv6 header, and the destination options header with the Tunnel Encapsulation
// Limit option when encap_limit >= 0. Returns the template's length.
uint8_t build_ip6_outer(uint8_t *h, const tunnel_params &p, uint8_t next_header) {
  auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(h);
  ip6->vtc_flow = rte_cpu_to_be_32(6u << 28);
  memcpy(ip6->src_addr, p.local, 16);
  memcpy(ip6->dst_addr, p.remote, 16);
  if (p.encap_limit < 0) {
    ip6->proto = next_header;
    return ETH_HLEN + IP6_HLEN;
  }
  // Byte for byte what Linux ip6tnl writes (init_tel_txopt): the encapsulation limit
  // option, then a PadN option of one zero byte to fill the 8-byte header.
  ip6->proto = IPPROTO_DSTOPTS_HDR;
  uint8_t *opt = h + IP6_HLEN;
  opt[0] = next_header;
  opt[1] = 0;  // length in 8-byte units, not counting the first 8
  opt[2] = IP6_OPT_TNL_ENCAP_LIMIT;
  opt[3] = 1;
  opt[4] = static_cast<uint8_t>(p.encap_limit);
  opt[5] = IP6_OPT_PADN;
  opt[6] = 1;
  opt[7] = 0;
  return TUNNEL_HDR_MAX;
}

// The outer IPv4 header as iptunnel_xmit() writes it, less what changes per packet (TOS,
// TTL, total length, identification, checksum; DF when inherited).
uint8_t build_ip4_outer(uint8_t *h, const tunnel_params &p, uint8_t protocol) {
  auto *ip4 = reinterpret_cast<rte_ipv4_hdr *>(h);
  ip4->version_ihl = 0x45;
  ip4->fragment_offset = p.pmtudisc ? rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG) : 0;
  ip4->next_proto_id = protocol;
  memcpy(&ip4->src_addr, p.local, 4);
  memcpy(&ip4->dst_addr, p.remote, 4);
  return ETH_HLEN + IP4_HLEN;
}

}  // namespace

void tunnel_build(tunnel *t, const tunnel_params &p) {
  memset(t, 0, sizeof(*t));
  t->mode = p.mode;
  uint8_t *h = t->tmpl;
  auto *eth = reinterpret_cast<rte_ether_hdr *>(h);
  memcpy(&eth->dst_addr, p.dst_mac, 6);
  memcpy(&eth->src_addr, p.src_mac, 6);
  const uint8_t next_header = t->inner_ipv4() ? IPPROTO_IPIP : IPPROTO_IPV6;
  if (t->outer_ipv4()) {
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    t->tmpl_len = build_ip4_outer(h + ETH_HLEN, p, next_header);
    if (!p.pmtudisc && t->inner_ipv4()) t->flags |= TUNNEL_F_DF_INHERIT;
    // The words tunnel_encap() does not fill in: the template has zero in those it does.
    uint32_t sum = 0;
    for (unsigned i = 0; i < IP4_HLEN; i += 2) sum += (uint32_t{h[ETH_HLEN + i]} << 8) | h[ETH_HLEN + i + 1];
    t->csum_base = sum;
  } else {
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6);
    t->tmpl_len = build_ip6_outer(h + ETH_HLEN, p, next_header);
    if (p.flowlabel_hash) t->flags |= TUNNEL_F_FLOWLABEL_HASH;
    t->flowlabel = p.flowlabel & 0xfffff;
    t->fold = outer_fold6(p.remote, p.local);
  }
  if (p.tclass < 0) t->flags |= TUNNEL_F_INHERIT_TCLASS;
  if (p.hop_limit == 0) t->flags |= TUNNEL_F_INHERIT_HOPLIMIT;
  t->tclass = p.tclass < 0 ? 0 : static_cast<uint8_t>(p.tclass);
  t->hop_limit = p.hop_limit;
  t->mtu = p.mtu;
  t->effective_mtu = p.mtu;  // until derive_tunnel_mtus() sees the underlay port
  t->port = p.port;
  t->slowpath_port = p.slowpath_port;
  t->active = 1;
}

uint16_t tunnel_effective_mtu(const tunnel &t, uint16_t underlay_mtu) {
  // As ip6_tnl_xmit(), ip_tunnel_xmit() and ipip6_tunnel_xmit(): the route's MTU less the
  // outer headers, never below the inner family's minimum (the IPv4 one, or IPv6's 1280);
  // and never above the tunnel device's own MTU (the configured one).
  uint32_t mtu = t.mtu;
  const uint32_t overhead = tunnel_overhead(t);
  if (underlay_mtu != 0) mtu = std::min<uint32_t>(mtu, underlay_mtu > overhead ? underlay_mtu - overhead : 0);
  if (t.path_mtu != 0) mtu = std::min<uint32_t>(mtu, t.path_mtu > overhead ? t.path_mtu - overhead : 0);
  return static_cast<uint16_t>(std::max<uint32_t>(mtu, t.inner_ipv4() ? IP4_MIN_MTU : IP6_MIN_MTU));
}

uint32_t flowlabel_of(const flow_key &inner) {
  // The label must not depend on the outer addresses, only on the inner flow.
  flow_key k;
  flow_key_zero(&k);
  if (flow_l3_is_ipv4(inner.l3proto)) {
    k.ip4.src = inner.ip4.src;
    k.ip4.dst = inner.ip4.dst;
    k.l3proto = FLOW_L3_IPV4;
  } else {
    memcpy(k.ip6.src, inner.ip6.src, 16);
    memcpy(k.ip6.dst, inner.ip6.dst, 16);
    k.l3proto = FLOW_L3_IPV6;
  }
  k.sport = inner.sport;
  k.dport = inner.dport;
  k.l4proto = inner.l4proto;
  // A seed of its own, fixed: the fast path and the slow path (and a restarted flowgate)
  // must give a flow the same label, whichever flowtable hashed its key.
  constexpr uint32_t FLOWLABEL_SEED = 0x9e3779b9u;
  uint32_t h = flow_key_hash(&k, FLOWLABEL_SEED);
  uint32_t label = (h ^ (h >> 12)) & 0xfffff;
  return label != 0 ? label : 1;
}

}  // namespace fg
