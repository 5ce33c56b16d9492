#include "tunnel.h"

#include <algorithm>

namespace fg {

void tunnel_build(tunnel *t, const tunnel_params &p) {
  memset(t, 0, sizeof(*t));
  uint8_t *h = t->tmpl;
  auto *eth = reinterpret_cast<rte_ether_hdr *>(h);
  memcpy(&eth->dst_addr, p.dst_mac, 6);
  memcpy(&eth->src_addr, p.src_mac, 6);
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6);

  auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(h + ETH_HLEN);
  ip6->vtc_flow = rte_cpu_to_be_32(6u << 28);
  memcpy(ip6->src_addr, p.local, 16);
  memcpy(ip6->dst_addr, p.remote, 16);
  if (p.encap_limit >= 0) {
    // Byte for byte what Linux ip6tnl writes (init_tel_txopt): the encapsulation limit
    // option, then a PadN option of one zero byte to fill the 8-byte header.
    ip6->proto = IPPROTO_DSTOPTS_HDR;
    uint8_t *opt = h + ETH_HLEN + IP6_HLEN;
    opt[0] = IPPROTO_IPIP;  // next header
    opt[1] = 0;             // length in 8-byte units, not counting the first 8
    opt[2] = IP6_OPT_TNL_ENCAP_LIMIT;
    opt[3] = 1;
    opt[4] = static_cast<uint8_t>(p.encap_limit);
    opt[5] = IP6_OPT_PADN;
    opt[6] = 1;
    opt[7] = 0;
    t->tmpl_len = TUNNEL_HDR_MAX;
  } else {
    ip6->proto = IPPROTO_IPIP;
    t->tmpl_len = ETH_HLEN + IP6_HLEN;
  }

  if (p.tclass < 0) t->flags |= TUNNEL_F_INHERIT_TCLASS;
  if (p.hop_limit == 0) t->flags |= TUNNEL_F_INHERIT_HOPLIMIT;
  if (p.flowlabel_hash) t->flags |= TUNNEL_F_FLOWLABEL_HASH;
  t->tclass = p.tclass < 0 ? 0 : static_cast<uint8_t>(p.tclass);
  t->hop_limit = p.hop_limit;
  t->flowlabel = p.flowlabel & 0xfffff;
  t->mtu = p.mtu;
  t->effective_mtu = p.mtu;  // until derive_tunnel_mtus() sees the underlay port
  t->port = p.port;
  t->slowpath_port = p.slowpath_port;
  t->active = 1;
}

uint16_t tunnel_effective_mtu(const tunnel &t, uint16_t underlay_mtu) {
  // As ip6_tnl_xmit(): the route's MTU less the outer headers, never below the IPv4 minimum;
  // and never above the tunnel device's own MTU (the configured one).
  uint32_t mtu = t.mtu;
  const uint32_t overhead = tunnel_overhead(t);
  if (underlay_mtu != 0) mtu = std::min<uint32_t>(mtu, underlay_mtu > overhead ? underlay_mtu - overhead : 0);
  if (t.path_mtu != 0) mtu = std::min<uint32_t>(mtu, t.path_mtu > overhead ? t.path_mtu - overhead : 0);
  return static_cast<uint16_t>(std::max<uint32_t>(mtu, IP4_MIN_MTU));
}

uint32_t flowlabel_of(const flow_key &inner) {
  // The label must not depend on the outer addresses, only on the inner flow.
  flow_key k = inner;
  memset(k.ip4.outer_src, 0, sizeof(k.ip4.outer_src) + sizeof(k.ip4.outer_dst));
  k.in_port = 0;
  k.l3proto = FLOW_L3_IPV4;
  // A seed of its own, fixed: the fast path and the slow path (and a restarted flowgate)
  // must give a flow the same label, whichever flowtable hashed its key.
  constexpr uint32_t FLOWLABEL_SEED = 0x9e3779b9u;
  uint32_t h = flow_key_hash(&k, FLOWLABEL_SEED);
  uint32_t label = (h ^ (h >> 12)) & 0xfffff;
  return label != 0 ? label : 1;
}

}  // namespace fg
