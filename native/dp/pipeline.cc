#include "pipeline.h"

#include <algorithm>

#include <rte_ip_frag.h>
#include <rte_prefetch.h>
#ifdef FG_STAGE_CYCLES
#include <rte_cycles.h>
#endif

#include "observation.h"
#include "packet.h"
#include "trace.h"
#include "tunnel.h"
#include "vlan.h"

namespace fg {
namespace {

inline void tx_enqueue(pipeline &pl, uint16_t port, rte_mbuf *m) {
  tx_buffer &b = pl.tx[port];
  if (b.n == 0) pl.dirty[pl.n_dirty++] = port;
  b.pkts[b.n++] = m;
}

inline void drop(pipeline &pl, rte_mbuf *m, drop_reason r) {
  pl.stats->drops[static_cast<unsigned>(r)]++;
  pl.drops[pl.n_drops++] = m;
}

// Cut what follows the IP packet (trim_to); segments cut off a chain are freed with the
// burst's drops.
inline void trim_packet(pipeline &pl, rte_mbuf *m, uint32_t len) {
  rte_mbuf *cut = trim_to(m, len);
  if (unlikely(cut != nullptr)) pl.drops[pl.n_drops++] = cut;
}

// A tunnel whose punted packets go decapsulated to its own slow-path port (the kernel's
// TUN device for it), by its mode and its remote and local address (ipip and sit between
// the same two addresses are two tunnels, as in Linux).
uint16_t slowpath_tunnel(const snapshot *s, uint8_t mode, const uint8_t *remote, const uint8_t *local) {
  for (uint16_t id = 0; id < MAX_TUNNELS; id++) {
    const tunnel &t = s->tun[id];
    if (t.mode == mode && t.slowpath_port != PORT_NONE && tunnel_matches(t, remote, local)) return id;
  }
  return TUNNEL_NONE;
}

// The tunnel mode of a frame that parsing found encapsulated (meta.outer_len != 0) with a
// valid inner header (meta.l3_len != 0): the outer header's family and the inner one's.
inline uint8_t frame_tunnel_mode(const uint8_t *frame, const pkt_meta &meta) {
  const uint8_t outer = detail::load_be16(frame + 12) == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ? 4 : 6;
  return flow_l3_tunnelled(frame[meta.l3_off] >> 4, outer);
}


// Token bucket per worker and input port, in TSC cycles of credit: a flood of new flows
// cannot take more of the kernel (and the learner) than the port's punt rate.
inline bool punt_allowed(pipeline &pl, uint16_t in_port) {
  const port_conf &pc = pl.snap->port[in_port];
  if (pc.punt_cost == 0) return true;
  punt_credit &c = pl.credits[in_port];
  uint64_t credit = c.credit + (pl.now_tsc - c.last_tsc);
  if (credit > pc.punt_burst) credit = pc.punt_burst;
  c.last_tsc = pl.now_tsc;
  if (credit < pc.punt_cost) {
    c.credit = credit;
    return false;
  }
  c.credit = credit - pc.punt_cost;
  return true;
}

// Tell the learner about a punted packet that has a complete flow key.
inline void observe_punt(pipeline &pl, rte_mbuf *m, uint16_t in_port, punt_reason r, const pkt_meta &meta,
                         const flow_key *key, uint16_t tunnel) {
  if (pl.observations == nullptr || key == nullptr) return;
  observation o;
  observation_init(&o, OBS_PUNT, pl.now_tsc, m, meta.l3_off, meta.l3_len, *key, in_port, tunnel);
  o.reason = static_cast<uint8_t>(r);
  if (rte_ring_sp_enqueue_elem(pl.observations, &o, sizeof(o)) != 0) pl.stats->observations_lost++;
}

// Hand a packet to its slow-path port: a tunnel packet decapsulated to the tunnel's TUN,
// anything else to the input port's TAP. key: as for punt().
void to_slowpath(pipeline &pl, rte_mbuf *m, uint16_t in_port, punt_reason r, const pkt_meta &meta,
                 const flow_key *key) {
  const snapshot *s = pl.snap;
  // l3_len != 0: parsing validated the inner IP header, so it can be read and decapsulated.
  if (meta.outer_len != 0 && meta.l3_len != 0) {
    uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
    const uint8_t mode = frame_tunnel_mode(frame, meta);
    const bool outer_ipv4 = tunnel_outer_family(mode) == 4;
    uint16_t tid = slowpath_tunnel(s, mode, frame + ETH_HLEN + ip_src_offset(outer_ipv4), frame + ETH_HLEN + ip_dst_offset(outer_ipv4));
    if (tid != TUNNEL_NONE) {
      const uint8_t tclass = outer_traffic_class(frame + ETH_HLEN, outer_ipv4);
      if (!ecn_decapsulate_inner(tclass, frame + meta.l3_off, tunnel_inner_family(mode) == 4))
        return drop(pl, m, drop_reason::ecn);
      uint16_t tun_port = s->tun[tid].slowpath_port;
      observe_punt(pl, m, in_port, r, meta, key, tid);
      trim_packet(pl, m, meta.l3_off + meta.l3_len);
      rte_pktmbuf_adj(m, meta.l3_off);
      return tx_enqueue(pl, tun_port, m);
    }
  }
  uint16_t sp = s->port[in_port].slowpath;
  // Chains go to the slow path as they are: TAP and TUN devices take them (they offer
  // MULTI_SEGS, which port_start() turns on), as the kernel takes any skb.
  if (sp == PORT_NONE || !s->port[sp].active) return drop(pl, m, drop_reason::no_slowpath);
  if (s->port[sp].l3) {
    // A TUN takes IP packets only.
    if (r == punt_reason::non_ip) return drop(pl, m, drop_reason::no_slowpath);
    // The Ethernet header goes, from the first segment: one that holds no more than it
    // (a chain no real NIC makes) would leave the TUN the header or an empty segment.
    if (m->data_len <= ETH_HLEN) return drop(pl, m, drop_reason::short_segment);
    observe_punt(pl, m, in_port, r, meta, key, TUNNEL_NONE);
    rte_pktmbuf_adj(m, ETH_HLEN);
  } else {
    observe_punt(pl, m, in_port, r, meta, key, TUNNEL_NONE);
  }
  tx_enqueue(pl, sp, m);
}

// ---- the tunnel's ICMP and fragments (rare: only ever reached from punt()) --------------

// A tunnel's path MTU as a packet too big reports it: the lowest report wins until the
// control thread takes it (dataplane::apply_path_mtu_reports()).
void report_path_mtu(pipeline &pl, uint16_t tunnel_id, uint16_t mtu) {
  if (pl.path_mtu_reports == nullptr) return;
  uint16_t *slot = &pl.path_mtu_reports[tunnel_id];
  uint16_t seen = __atomic_load_n(slot, __ATOMIC_RELAXED);
  while ((seen == 0 || mtu < seen) &&
         !__atomic_compare_exchange_n(slot, &seen, mtu, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

constexpr uint8_t ICMP6_PACKET_TOO_BIG = 2;
constexpr uint8_t ICMP4_DEST_UNREACH = 3;
constexpr uint8_t ICMP4_FRAG_NEEDED = 4;
constexpr uint16_t ICMP_HLEN = 8;
// An ICMPv4 error carries at most 576 bytes (RFC 1812 section 4.3.2.3), as Linux's
// icmp_send() sends them.
constexpr uint32_t ICMP4_ERROR_MAX = 576;
// IPv4 TTL of the ICMP errors made here: they enter the kernel as if from the tunnel.
constexpr uint8_t ICMP4_TTL = 64;
// RFC 1812 section 4.3.2.5: ICMP errors with precedence internetwork control, and the TOS
// bits of the packet they are about, as Linux's icmp_send() (RT_TOS(tos) |
// IPTOS_PREC_INTERNETCONTROL).
constexpr uint8_t ICMP4_ERROR_PRECEDENCE = 0xc0;
constexpr uint8_t IP4_TOS_BITS = 0x1e;

// The ICMP errors made here enter the kernel as if they came out of the tunnel: IPv6 hop
// limit as the IPv4 TTL above; an ICMPv6 error carries at most the minimum MTU (RFC 4443
// section 2.4 (c)), as Linux's icmp6_send() sends them.
constexpr uint8_t ICMP6_HOP_LIMIT = 64;
constexpr uint32_t ICMP6_ERROR_MAX = IP6_MIN_MTU;
// Linux's floor for a path MTU an ICMPv4 fragmentation needed may set
// (net.ipv4.route.min_pmtu, __ip_rt_update_pmtu()).
constexpr uint32_t IP4_MIN_PMTU = 552;

// Build, in place of the ICMP error that carries the quoted inner packet at inner_off (of
// `avail` bytes, to `end`), the error for the inner packet's sender: ICMPv4 destination
// unreachable, fragmentation needed (RFC 1191), or ICMPv6 packet too big (RFC 4443 section
// 3.2), with MTU inner_mtu, from the quoted packet's destination to its source. Sends it
// into the tunnel's TUN. Returns false, leaving the packet alone, when the quote is too short.
bool relay_too_big(pipeline &pl, rte_mbuf *m, uint32_t inner_off, uint32_t end, bool inner_ipv4, uint32_t inner_mtu,
                   const tunnel &t) {
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  if (inner_ipv4) {
    auto *inner = reinterpret_cast<const rte_ipv4_hdr *>(f + inner_off);
    const uint32_t inner_hlen = (inner->version_ihl & RTE_IPV4_HDR_IHL_MASK) * RTE_IPV4_IHL_MULTIPLIER;
    // The error quotes as much of the inner packet as the packet too big held, up to 576.
    uint32_t copy = std::min<uint32_t>(end - inner_off, ICMP4_ERROR_MAX - IP4_HLEN - ICMP_HLEN);
    copy = std::min<uint32_t>(copy, rte_be_to_cpu_16(inner->total_length));
    if (copy < inner_hlen + 8) return false;
    const rte_be32_t sender = inner->src_addr;
    const rte_be32_t receiver = inner->dst_addr;
    const uint8_t tos = inner->type_of_service;
    auto *ip4 = reinterpret_cast<rte_ipv4_hdr *>(rte_pktmbuf_adj(m, static_cast<uint16_t>(inner_off - IP4_HLEN - ICMP_HLEN)));
    trim_to(m, IP4_HLEN + ICMP_HLEN + copy);
    memset(ip4, 0, IP4_HLEN + ICMP_HLEN);
    ip4->version_ihl = 0x45;
    ip4->type_of_service = static_cast<uint8_t>((tos & IP4_TOS_BITS) | ICMP4_ERROR_PRECEDENCE);
    ip4->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(IP4_HLEN + ICMP_HLEN + copy));
    ip4->time_to_live = ICMP4_TTL;
    ip4->next_proto_id = IPPROTO_ICMP;
    ip4->src_addr = receiver;
    ip4->dst_addr = sender;
    ip4->hdr_checksum = rte_ipv4_cksum(ip4);
    uint8_t *icmp = reinterpret_cast<uint8_t *>(ip4) + IP4_HLEN;
    icmp[0] = ICMP4_DEST_UNREACH;
    icmp[1] = ICMP4_FRAG_NEEDED;
    const rte_be16_t next_hop_mtu = rte_cpu_to_be_16(static_cast<uint16_t>(inner_mtu));
    memcpy(icmp + 6, &next_hop_mtu, 2);
    const uint16_t sum = static_cast<uint16_t>(~rte_raw_cksum(icmp, ICMP_HLEN + copy));
    memcpy(icmp + 2, &sum, 2);
  } else {
    auto *inner = reinterpret_cast<const rte_ipv6_hdr *>(f + inner_off);
    const uint32_t copy = std::min<uint32_t>({end - inner_off, ICMP6_ERROR_MAX - IP6_HLEN - ICMP_HLEN,
                                              IP6_HLEN + uint32_t{rte_be_to_cpu_16(inner->payload_len)}});
    if (copy < IP6_HLEN + 8) return false;
    uint8_t sender[16], receiver[16];
    memcpy(sender, inner->src_addr, 16);
    memcpy(receiver, inner->dst_addr, 16);
    auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(rte_pktmbuf_adj(m, static_cast<uint16_t>(inner_off - IP6_HLEN - ICMP_HLEN)));
    trim_to(m, IP6_HLEN + ICMP_HLEN + copy);
    memset(ip6, 0, IP6_HLEN + ICMP_HLEN);
    ip6->vtc_flow = rte_cpu_to_be_32(6u << 28);
    ip6->payload_len = rte_cpu_to_be_16(static_cast<uint16_t>(ICMP_HLEN + copy));
    ip6->proto = IPPROTO_ICMPV6;
    ip6->hop_limits = ICMP6_HOP_LIMIT;
    memcpy(ip6->src_addr, receiver, 16);
    memcpy(ip6->dst_addr, sender, 16);
    uint8_t *icmp = reinterpret_cast<uint8_t *>(ip6) + IP6_HLEN;
    icmp[0] = ICMP6_PACKET_TOO_BIG;
    const rte_be32_t mtu = rte_cpu_to_be_32(inner_mtu);
    memcpy(icmp + 4, &mtu, 4);
    const uint16_t sum = rte_ipv6_udptcp_cksum(ip6, icmp);
    memcpy(icmp + 2, &sum, 2);
  }
  pl.stats->punts[static_cast<unsigned>(punt_reason::tunnel_too_big)]++;
  tx_enqueue(pl, t.slowpath_port, m);
  return true;
}

// An ICMPv6 packet too big (RFC 4443 section 3.2) about a packet that this gateway sent
// into an ip4ip6 or ip6ip6 tunnel: the quoted outer source and destination are the
// tunnel's local and remote, and the inner packet is quoted behind them. Does what Linux's
// ip4ip6_err(), ip6ip6_err() and ip6_tnl_err() (net/ipv6/ip6_tunnel.c) do with it:
//  - the path MTU towards the remote becomes max(reported MTU, 1280) when that is lower
//    (ip6_update_pmtu()): reported to the control thread, which lowers the tunnel's
//    effective MTU and its TUN device's (item 10's MTU, and the kernel's own ICMP with it);
//  - the inner sender gets the error of its family (relay_too_big()) with MTU
//    max(reported MTU - outer headers, 1280), Linux's floor, when the quoted packet was
//    larger than that and no larger than the tunnel's MTU (ip4ip6_err() sends nothing
//    when the route already has a lower MTU: the next packet is then too big for the tunnel
//    and the kernel answers it with the exact MTU).
// The error is built in place of the packet too big and sent into the tunnel's TUN, as if
// it came out of the tunnel from the quoted packet's destination: the kernel then forwards
// it to the inner sender, and conntrack sees it as RELATED to the connection, so that NAT
// (masquerade on the tunnel) translates it back like any ICMP error (RFC 5508); a source
// address of the gateway's own would be dropped as martian on the TUN. Returns false, and
// leaves the packet alone, when it is not such a packet too big or calls for no error: it
// then goes to the kernel unchanged.
bool tunnel6_packet_too_big(pipeline &pl, rte_mbuf *m) {
  constexpr uint32_t ICMP6_OFF = ETH_HLEN + IP6_HLEN;
  constexpr uint32_t QUOTED_OFF = ICMP6_OFF + ICMP_HLEN;
  if (m->data_len < QUOTED_OFF + IP6_HLEN) return false;
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  auto *ip6 = reinterpret_cast<const rte_ipv6_hdr *>(f + ETH_HLEN);
  if (ip6->proto != IPPROTO_ICMPV6 || f[ICMP6_OFF] != ICMP6_PACKET_TOO_BIG || f[ICMP6_OFF + 1] != 0) return false;
  const uint32_t end = ETH_HLEN + IP6_HLEN + rte_be_to_cpu_16(ip6->payload_len);
  if (end > m->data_len || end < QUOTED_OFF + IP6_HLEN) return false;
  // The kernel checks the ICMPv6 checksum before it believes a packet too big (icmpv6_rcv()).
  if (rte_ipv6_udptcp_cksum_verify(ip6, f + ICMP6_OFF) != 0) return false;

  auto *quoted = reinterpret_cast<const rte_ipv6_hdr *>(f + QUOTED_OFF);
  uint32_t inner_off = QUOTED_OFF + IP6_HLEN;
  uint8_t nh = quoted->proto;
  if (nh == IPPROTO_DSTOPTS_HDR) {
    if (inner_off + 8 > end) return false;
    nh = f[inner_off];
    inner_off += (uint32_t{f[inner_off + 1]} + 1) * 8;
  }
  if (nh != IPPROTO_IPIP && nh != IPPROTO_IPV6) return false;
  const bool inner_ipv4 = nh == IPPROTO_IPIP;
  const uint16_t tid = slowpath_tunnel(pl.snap, inner_ipv4 ? TUNNEL_IP4IP6 : TUNNEL_IP6IP6, quoted->dst_addr, quoted->src_addr);
  if (tid == TUNNEL_NONE) return false;
  // RFC 792: an ICMPv4 error quotes the IP header and at least 8 bytes after it; the same
  // is asked here of the quoted IPv6 packet.
  uint32_t quoted_len;
  if (inner_ipv4) {
    if (inner_off + IP4_HLEN + 8 > end) return false;
    auto *inner = reinterpret_cast<const rte_ipv4_hdr *>(f + inner_off);
    const uint32_t inner_hlen = (inner->version_ihl & RTE_IPV4_HDR_IHL_MASK) * RTE_IPV4_IHL_MULTIPLIER;
    if ((inner->version_ihl >> 4) != 4 || inner_hlen < IP4_HLEN || inner_off + inner_hlen + 8 > end) return false;
    quoted_len = IP6_HLEN + rte_be_to_cpu_16(quoted->payload_len);
  } else {
    if (inner_off + IP6_HLEN + 8 > end || (f[inner_off] >> 4) != 6) return false;
    // ip6_tnl_err(): the inner packet's own length against the MTU it may have.
    quoted_len = IP6_HLEN + rte_be_to_cpu_16(reinterpret_cast<const rte_ipv6_hdr *>(f + inner_off)->payload_len);
  }

  const uint32_t reported = rte_be_to_cpu_32(detail::load32(f + ICMP6_OFF + 4));
  const tunnel &t = pl.snap->tun[tid];
  report_path_mtu(pl, tid, static_cast<uint16_t>(std::min<uint32_t>(std::max<uint32_t>(reported, IP6_MIN_MTU), UINT16_MAX)));
  const uint32_t outer_headers = inner_off - QUOTED_OFF;
  const uint32_t inner_mtu = std::max<uint32_t>(reported > outer_headers ? reported - outer_headers : 0, IP6_MIN_MTU);
  if (quoted_len <= inner_mtu || inner_mtu > t.effective_mtu) return false;
  return relay_too_big(pl, m, inner_off, end, inner_ipv4, inner_mtu, t);
}

// An ICMPv4 fragmentation needed (RFC 1191) about a packet that this gateway sent into an
// ipip or sit tunnel: the quoted IPv4 header is from the tunnel's local to its remote.
// Linux's ipip_err() and ipip6_err() only lower the path MTU towards the remote to
// max(reported MTU, 552) (ipv4_update_pmtu()); the inner sender hears of it from the next
// packet too big for the tunnel, which the kernel answers. So here: the path MTU is
// reported to the control thread, and the error goes on to the kernel unchanged (false).
bool tunnel4_frag_needed(pipeline &pl, rte_mbuf *m) {
  constexpr uint32_t ICMP4_OFF = ETH_HLEN + IP4_HLEN;
  constexpr uint32_t QUOTED_OFF = ICMP4_OFF + ICMP_HLEN;
  if (m->data_len < QUOTED_OFF + IP4_HLEN) return false;
  const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
  auto *ip4 = reinterpret_cast<const rte_ipv4_hdr *>(f + ETH_HLEN);
  // Parsing found a valid IPv4 header; an ICMP one with options goes on unread.
  if (ip4->version_ihl != 0x45 || ip4->next_proto_id != IPPROTO_ICMP || f[ICMP4_OFF] != ICMP4_DEST_UNREACH ||
      f[ICMP4_OFF + 1] != ICMP4_FRAG_NEEDED)
    return false;
  const uint32_t end = ETH_HLEN + rte_be_to_cpu_16(ip4->total_length);
  if (end > m->data_len || end < QUOTED_OFF + IP4_HLEN) return false;
  // icmp_rcv() checks the checksum before it believes the error.
  if (rte_raw_cksum(f + ICMP4_OFF, end - ICMP4_OFF) != 0xffff) return false;
  auto *quoted = reinterpret_cast<const rte_ipv4_hdr *>(f + QUOTED_OFF);
  if ((quoted->version_ihl >> 4) != 4 || (quoted->next_proto_id != IPPROTO_IPIP && quoted->next_proto_id != IPPROTO_IPV6))
    return false;
  const uint8_t mode = quoted->next_proto_id == IPPROTO_IPIP ? TUNNEL_IPIP : TUNNEL_SIT;
  const uint16_t tid = slowpath_tunnel(pl.snap, mode, reinterpret_cast<const uint8_t *>(&quoted->dst_addr),
                                       reinterpret_cast<const uint8_t *>(&quoted->src_addr));
  const uint32_t reported = rte_be_to_cpu_16(detail::load_be16(f + ICMP4_OFF + 6));
  // A router of before RFC 1191 says 0: Linux then learns nothing from it either.
  if (tid == TUNNEL_NONE || reported == 0) return false;
  report_path_mtu(pl, tid, static_cast<uint16_t>(std::max<uint32_t>(reported, IP4_MIN_PMTU)));
  return false;
}

// An ICMP error about a tunnel packet, handled as the tunnel drivers would (above).
bool tunnel_packet_too_big(pipeline &pl, rte_mbuf *m) {
  if (m->nb_segs != 1 || m->data_len < ETH_HLEN) return false;
  const uint16_t ether_type = detail::load_be16(rte_pktmbuf_mtod(m, const uint8_t *) + 12);
  if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)) return tunnel6_packet_too_big(pl, m);
  if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return tunnel4_frag_needed(pl, m);
  return false;
}

// Linux's IPv6 stack counts a destination options header that precedes any routing header
// as unfragmentable (ip6_find_1stfragopt()): a tunnel packet with the encapsulation limit
// option that it fragments has the options in every fragment and the fragment header after
// them. rte_ip_frag takes only a fragment header right after the IPv6 header (RFC 8200's
// layout), so such a fragment is laid out so first: the first fragment's options move
// behind its fragment header (into the fragmentable part, where the reassembled packet has
// them, for the decapsulation to check as any others), the other fragments' copies are cut
// and their offsets moved on by the options' length. Uses: a single-segment frame whose
// IPv6 header is followed by destination options and a fragment header. Returns false, and
// leaves the packet alone, when it is not such a fragment or its offset would not fit.
bool fragment_header_first(rte_mbuf *m) {
  constexpr uint32_t OPT_OFF = ETH_HLEN + IP6_HLEN;
  if (m->nb_segs != 1 || m->data_len < OPT_OFF + 8) return false;
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(f + ETH_HLEN);
  if (ip6->proto != IPPROTO_DSTOPTS_HDR || f[OPT_OFF] != IPPROTO_FRAGMENT) return false;
  const uint32_t optlen = (uint32_t{f[OPT_OFF + 1]} + 1) * 8;
  const uint32_t payload = rte_be_to_cpu_16(ip6->payload_len);
  rte_ipv6_fragment_ext frag;
  if (m->data_len < OPT_OFF + optlen + sizeof(frag) || payload < optlen + sizeof(frag)) return false;
  memcpy(&frag, f + OPT_OFF + optlen, sizeof(frag));
  const uint16_t frag_data = rte_be_to_cpu_16(frag.frag_data);
  const uint32_t offset = frag_data & ~7u;
  if (offset == 0) {
    const uint8_t inner = frag.next_header;
    memmove(f + OPT_OFF + sizeof(frag), f + OPT_OFF, optlen);
    frag.next_header = IPPROTO_DSTOPTS_HDR;
    memcpy(f + OPT_OFF, &frag, sizeof(frag));
    f[OPT_OFF + sizeof(frag)] = inner;
    ip6->proto = IPPROTO_FRAGMENT;
    return true;
  }
  // The largest offset a fragment header can say (13 bits of 8-byte units).
  if (offset + optlen > 0xfff8) return false;
  frag.frag_data = rte_cpu_to_be_16(static_cast<uint16_t>((offset + optlen) | (frag_data & 7u)));
  frag.next_header = IPPROTO_DSTOPTS_HDR;
  memcpy(f + OPT_OFF + optlen, &frag, sizeof(frag));
  ip6->payload_len = rte_cpu_to_be_16(static_cast<uint16_t>(payload - optlen));
  ip6->proto = IPPROTO_FRAGMENT;
  memmove(f + optlen, f, OPT_OFF);
  rte_pktmbuf_adj(m, static_cast<uint16_t>(optlen));
  return true;
}

// An outer IPv6 fragment of a tunnel packet (RFC 2473 section 7: a tunnel entry point
// fragments the outer packet when the path MTU is below the inner packet plus the outer
// headers; Linux's ip6tnl answers an IPv4 inner packet too big with fragmentation needed
// instead, but other entry points fragment), from a tunnel's remote to its local address. The kernel cannot take it (it has no
// ip6tnl: flowgate is the tunnel), so it is reassembled here, in this worker's table, and
// the whole packet decapsulated into the tunnel's TUN. Fragments for no tunnel go to the
// kernel as they are. Returns false when the packet is not one to reassemble.
bool tunnel_fragment(pipeline &pl, rte_mbuf *m, uint16_t in_port) {
  constexpr uint32_t FRAG_OFF = ETH_HLEN + IP6_HLEN;
  if (pl.frag_tbl == nullptr || m->data_len < FRAG_OFF + sizeof(rte_ipv6_fragment_ext)) return false;
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  auto *ip6 = reinterpret_cast<rte_ipv6_hdr *>(f + ETH_HLEN);
  // A fragment header right after the IPv6 header (RFC 8200), or after the destination
  // options (Linux), which fragment_header_first() turns into the former.
  if (detail::load_be16(f + 12) != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6) ||
      (ip6->proto != IPPROTO_FRAGMENT && ip6->proto != IPPROTO_DSTOPTS_HDR))
    return false;
  // Whether it carries IPv4 or IPv6 shows once it is whole: either mode will do here.
  if (slowpath_tunnel(pl.snap, TUNNEL_IP4IP6, ip6->src_addr, ip6->dst_addr) == TUNNEL_NONE &&
      slowpath_tunnel(pl.snap, TUNNEL_IP6IP6, ip6->src_addr, ip6->dst_addr) == TUNNEL_NONE)
    return false;
  if (ip6->proto == IPPROTO_DSTOPTS_HDR) {
    if (!fragment_header_first(m)) return false;
    f = rte_pktmbuf_mtod(m, uint8_t *);
    ip6 = reinterpret_cast<rte_ipv6_hdr *>(f + ETH_HLEN);
  }
  pl.stats->punts[static_cast<unsigned>(punt_reason::tunnel_fragment)]++;
  auto *frag = reinterpret_cast<rte_ipv6_fragment_ext *>(f + FRAG_OFF);
  // What DPDK 22.11's reassembly takes on trust: a fragment with payload, within the packet,
  // ending within the 64 KiB an IPv6 payload length can say.
  const uint32_t payload = rte_be_to_cpu_16(ip6->payload_len);
  const uint32_t offset = rte_be_to_cpu_16(frag->frag_data) & ~7u;
  if (payload <= sizeof(*frag) || FRAG_OFF + payload > m->pkt_len || offset + payload - sizeof(*frag) > UINT16_MAX) {
    drop(pl, m, drop_reason::reassembly);
    return true;
  }
  m->l2_len = ETH_HLEN;
  m->l3_len = IP6_HLEN + sizeof(*frag);
  rte_ip_frag_death_row &dr = pl.frag_death_row;
  const uint32_t held = dr.cnt;
  rte_mbuf *whole = rte_ipv6_frag_reassemble_packet(pl.frag_tbl, &dr, m, pl.now_tsc, ip6, frag);
  // Fragments given up: this one (overlapping, too many, no room in the table) or those of
  // packets that timed out.
  pl.stats->drops[static_cast<unsigned>(drop_reason::reassembly)] += dr.cnt - held;
  rte_ip_frag_free_death_row(&dr, 0);
  if (whole == nullptr) return true;
  flow_key key;
  pkt_meta meta;
  // No MAC check: each fragment's frame passed it before it was punted as a fragment.
  verdict v = parse_packet(whole, in_port, nullptr, &key, &meta);
  if (v.kind == verdict::DROP) {
    drop(pl, whole, static_cast<drop_reason>(v.reason));
    return true;
  }
  // Decapsulated into the TUN by the outer addresses, as any punted tunnel packet; the flow
  // is not observed: a fragmented flow is never one for the fast path.
  to_slowpath(pl, whole, in_port, punt_reason::tunnel_fragment, meta, nullptr);
  return true;
}

// Hand a packet to the slow path. key: the packet's flow key when it has a complete one
// (misses and TCP flag exceptions), for the learner; else null. Uses: meta.outer_len/l3_len
// of tunnelled packets.
void punt(pipeline &pl, rte_mbuf *m, uint16_t in_port, punt_reason r, const pkt_meta &meta,
          const flow_key *key = nullptr) {
  if (!punt_allowed(pl, in_port)) return drop(pl, m, drop_reason::punt_policed);
  if (unlikely(r == punt_reason::fragment) && tunnel_fragment(pl, m, in_port)) return;
  if (unlikely(r == punt_reason::l4proto) && tunnel_packet_too_big(pl, m)) return;
  pl.stats->punts[static_cast<unsigned>(r)]++;
  to_slowpath(pl, m, in_port, r, meta, key);
}

// Set state bits on a flow, both directions at once, as on the kernel's one flow object for
// both tuples. The pair is freed in the same grace period as e, so it is live here.
inline void flow_mark(pipeline &pl, flow_entry &e, uint8_t bits) {
  __atomic_fetch_or(&e.state, bits, __ATOMIC_RELAXED);
  if (e.pair != FLOW_NONE) __atomic_fetch_or(&pl.ft->entry(e.pair).state, bits, __ATOMIC_RELAXED);
}

inline void write_eth_addrs(uint8_t *frame, const adjacency &a) {
  // Destination and source MAC, adjacent in both; the first word in one load (see adjacency).
  uint64_t word = adjacency_mac_word(a);
  memcpy(frame, &word, 8);
  memcpy(frame + 8, a.src_mac + 2, 4);
}

// Decapsulate a packet of a flow (meta: as parsed; frame: its first byte) and address it
// to the adjacency, as the kernel's tunnel receive (ip6_tnl_rcv(), ip_tunnel_rcv()) and
// then the forward do: RFC 6040 from the outer header into the inner one, then the TTL or
// hop limit. Returns false, changing nothing, when RFC 6040 drops the packet.
template <unsigned OUTER, unsigned INNER>
inline bool decapsulate(rte_mbuf *m, uint8_t *frame, const pkt_meta &meta, const adjacency &a) {
  uint8_t *inner = frame + meta.l3_off;
  const uint8_t tclass = outer_traffic_class(frame + ETH_HLEN, OUTER == 4);
  if (!ecn_decapsulate_inner(tclass, inner, INNER == 4)) return false;
  if (INNER == 4)
    ip4_dec_ttl(reinterpret_cast<rte_ipv4_hdr *>(inner));
  else
    ip6_dec_hop_limit(reinterpret_cast<rte_ipv6_hdr *>(inner));
  frame = reinterpret_cast<uint8_t *>(rte_pktmbuf_adj(m, meta.outer_len));
  write_eth_addrs(frame, a);
  const rte_be16_t ether_type = rte_cpu_to_be_16(INNER == 4 ? RTE_ETHER_TYPE_IPV4 : RTE_ETHER_TYPE_IPV6);
  memcpy(frame + 12, &ether_type, 2);
  return true;
}

// Forward a packet of a flow into tunnel t: TTL or hop limit less one, then the outer headers.
template <unsigned OUTER, unsigned INNER>
inline void encapsulate(pipeline &pl, rte_mbuf *m, uint8_t *frame, const tunnel &t, uint16_t l3_len, uint32_t label) {
  if (INNER == 4)
    ip4_dec_ttl(reinterpret_cast<rte_ipv4_hdr *>(frame + ETH_HLEN));
  else
    ip6_dec_hop_limit(reinterpret_cast<rte_ipv6_hdr *>(frame + ETH_HLEN));
  // The identification only matters without DF: no store per packet otherwise.
  const uint16_t id = OUTER == 4 ? pl.ip_id++ : 0;
  tunnel_encap_as<OUTER, INNER>(m, t, l3_len, label, id);
}

// What the act stage reads for a whole burst, copied out of the pipeline: writes to packet
// bytes may alias anything the pipeline points to, and locals keep the compiler from
// reloading them after every such write.
struct burst_state {
  const snapshot *s;
  flow_entry *entries;
  flow_counter *counters;
  const flow_nat *nat;
  const adjacency *adj;
  uint32_t now_s;
  uint64_t fast_packets = 0;
  uint64_t fast_bytes = 0;
};

// Queue n forwarded frames for output port `port`. A VLAN's are tagged here, last (after
// any encapsulation: a tunnel over a VLAN), counted for it, and queued on the ethdev port
// under it: a frame for a port without VLANs pays one test in forward(), the headroom's.
// forward() checked the headroom for the tags.
inline void tx_enqueue_bulk(pipeline &pl, uint16_t port, rte_mbuf *const *pkts, unsigned n) {
  if (unlikely(port >= MAX_ETHPORTS)) {
    const port_conf &v = pl.snap->port[port];
    uint64_t bytes = 0;
    for (unsigned i = 0; i < n; i++) {
      vlan_push(pkts[i], v, vlan_pcp_of(pkts[i], v));
      bytes += pkts[i]->pkt_len;
    }
    pl.stats->vlan_tx_packets[port - MAX_ETHPORTS] += n;
    pl.stats->vlan_tx_bytes[port - MAX_ETHPORTS] += bytes;
    port = pl.snap->port[port].tx_port;
  }
  tx_buffer &tb = pl.tx[port];
  if (tb.n == 0) pl.dirty[pl.n_dirty++] = port;
  memcpy(&tb.pkts[tb.n], pkts, n * sizeof(pkts[0]));
  tb.n = static_cast<uint16_t>(tb.n + n);
}

// Act on a packet whose flow was found. Uses: meta. Sets: the packet's headers for its
// output port, or nothing when it punts (packets reach the slow path unmodified). Returns
// the output port (a VLAN's: tx_enqueue_bulk() tags it), or PORT_NONE
// when the packet was punted or dropped instead.
// Always inlined: with two callers (the traced instantiation of process_run() too), the
// compiler would otherwise make it a call per packet.
__attribute__((always_inline)) inline uint16_t forward(pipeline &pl, burst_state &b, rte_mbuf *m, uint16_t in_port, const pkt_meta &meta,
                        const flow_key &key, uint32_t idx) {
  flow_entry &e = b.entries[idx];
  // A flow marked for teardown is no longer in the fast path (flow_offload_lookup() skips
  // NF_FLOW_TEARDOWN flows).
  const uint8_t state = __atomic_load_n(&e.state, __ATOMIC_RELAXED);
  if (unlikely(state & FLOW_STATE_TEARDOWN)) {
    punt(pl, m, in_port, punt_reason::teardown, meta, &key);
    return PORT_NONE;
  }
  const snapshot *s = b.s;
  const uint8_t action = e.action;
  const uint16_t target = e.target;
  const uint8_t flags = e.flags;
  if (unlikely(flags & FLOW_F_OUTER_FOLDED)) {
    // The key held only a fold of the outer addresses (flow_key.h): they must be those of
    // the flow's tunnel. A packet that only shares the fold is not this flow's, and its own
    // key is the flow's: the learner is not told.
    const uint8_t *frame = rte_pktmbuf_mtod(m, const uint8_t *);
    const auto *outer = reinterpret_cast<const rte_ipv6_hdr *>(frame + ETH_HLEN);
    if (!tunnel_matches(s->tun[e.tunnel], outer->src_addr, outer->dst_addr)) {
      punt(pl, m, in_port, punt_reason::miss, meta);
      return PORT_NONE;
    }
  }
  const adjacency *a = nullptr;
  const tunnel *t = nullptr;
  uint16_t out;
  uint16_t mtu;
  if (action == FLOW_ACT_ENCAP) {
    t = &s->tun[target];
    out = t->port;
    mtu = t->active ? t->effective_mtu : 0;
  } else {
    a = &b.adj[target];
    out = a->port;
    mtu = s->port[out].mtu;
  }
  if (unlikely(meta.l3_len > mtu || !s->port[out].active)) {
    // An output going away (port or tunnel removal in progress) reads as a miss.
    bool gone = !s->port[out].active || (t != nullptr && !t->active);
    punt(pl, m, in_port, gone ? punt_reason::miss : punt_reason::too_big, meta);
    return PORT_NONE;
  }

  if (unlikely(meta.tcp_flags != 0)) {
    // The kernel's nf_flow_state_check() since 2025 (nf_flow_table_ip.c), after the MTU
    // check as there: a SYN on a closing flow (a new connection reusing the tuple) tears the
    // flow down and goes to the slow path; FIN or RST marks it closing and is forwarded.
    if ((meta.tcp_flags & RTE_TCP_SYN_FLAG) && (state & FLOW_STATE_CLOSING)) {
      flow_mark(pl, e, FLOW_STATE_TEARDOWN);
      punt(pl, m, in_port, punt_reason::teardown, meta, &key);
      return PORT_NONE;
    }
    if ((meta.tcp_flags & TCP_FLAGS_CLOSING) && !(state & FLOW_STATE_CLOSING)) flow_mark(pl, e, FLOW_STATE_CLOSING);
  }

  // Whatever can stop the packet from leaving is checked before it is modified, so that a
  // packet that goes to the slow path after all goes there as it came.
  if (action == FLOW_ACT_ENCAP && unlikely(rte_pktmbuf_headroom(m) < tunnel_overhead(*t))) {
    punt(pl, m, in_port, punt_reason::no_headroom, meta);
    return PORT_NONE;
  }
  // Leaving by a VLAN: room for its tags too (tx_enqueue_bulk() pushes them), after the
  // tunnel's headers when encapsulated.
  const unsigned out_tags = s->port[out].n_tags;
  if (unlikely(out_tags != 0) &&
      rte_pktmbuf_headroom(m) < VLAN_HLEN * out_tags + (action == FLOW_ACT_ENCAP ? tunnel_overhead(*t) : 0)) {
    punt(pl, m, in_port, punt_reason::no_headroom, meta);
    return PORT_NONE;
  }
  if (likely(m->nb_segs == 1)) {
    trim_to(m, meta.l3_off + meta.l3_len);
  } else {
    if (!s->port[out].multiseg) {
      punt(pl, m, in_port, punt_reason::chained, meta);
      return PORT_NONE;
    }
    trim_packet(pl, m, meta.l3_off + meta.l3_len);
  }

  uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
  // NAT before the TTL decrement and encapsulation, on the (inner) IP packet: the kernel's
  // nf_flow_nat_ip() before ip_decrease_ttl().
  if (flags & FLOW_F_NAT) nat_apply(frame + meta.l3_off, key.l3proto, key.l4proto, b.nat[idx]);
  switch (action) {
    case FLOW_ACT_FWD4:
      ip4_dec_ttl(reinterpret_cast<rte_ipv4_hdr *>(frame + ETH_HLEN));
      write_eth_addrs(frame, *a);
      break;
    case FLOW_ACT_FWD6:
      ip6_dec_hop_limit(reinterpret_cast<rte_ipv6_hdr *>(frame + ETH_HLEN));
      write_eth_addrs(frame, *a);
      break;
    case FLOW_ACT_DECAP: {
      // One specialised body per mode: the families are constants in each.
      bool ok;
      switch (key.l3proto) {
        case FLOW_L3_IPV4_IN_IPV6: ok = decapsulate<6, 4>(m, frame, meta, *a); break;
        case FLOW_L3_IPV6_IN_IPV6: ok = decapsulate<6, 6>(m, frame, meta, *a); break;
        case FLOW_L3_IPV4_IN_IPV4: ok = decapsulate<4, 4>(m, frame, meta, *a); break;
        default: ok = decapsulate<4, 6>(m, frame, meta, *a); break;
      }
      if (!ok) {
        drop(pl, m, drop_reason::ecn);
        return PORT_NONE;
      }
      break;
    }
    case FLOW_ACT_ENCAP: {
      // One specialised body per mode, as for decap; the inner family is the tunnel's.
      const uint32_t label = (t->flags & TUNNEL_F_FLOWLABEL_HASH) ? flowlabel_of(key) : 0;
      switch (t->mode) {
        case TUNNEL_IP4IP6: encapsulate<6, 4>(pl, m, frame, *t, meta.l3_len, label); break;
        case TUNNEL_IP6IP6: encapsulate<6, 6>(pl, m, frame, *t, meta.l3_len, label); break;
        case TUNNEL_IPIP: encapsulate<4, 4>(pl, m, frame, *t, meta.l3_len, label); break;
        default: encapsulate<4, 6>(pl, m, frame, *t, meta.l3_len, label); break;
      }
      break;
    }
    default:
      punt(pl, m, in_port, punt_reason::miss, meta);
      return PORT_NONE;
  }

  if (b.counters != nullptr) {
    // This lcore is the counters' one writer; the control thread reads them meanwhile
    // (relaxed loads, flowtable::counter), so the stores are atomic too: the same moves.
    flow_counter &c = b.counters[idx];
    __atomic_store_n(&c.packets, c.packets + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c.bytes, c.bytes + meta.l3_len, __ATOMIC_RELAXED);
  }
  if (e.last_seen != b.now_s) __atomic_store_n(&e.last_seen, b.now_s, __ATOMIC_RELAXED);
  b.fast_packets++;
  b.fast_bytes += meta.l3_len;
  return out;
}

}  // namespace

#ifdef FG_STAGE_CYCLES
#define STAGE_END(stage)                  \
  do {                                    \
    uint64_t now_ = rte_rdtsc();          \
    pl.stages.stage += now_ - stage_tsc;  \
    stage_tsc = now_;                     \
  } while (0)
#else
#define STAGE_END(stage) \
  do {                   \
  } while (0)
#endif

namespace {

// Packets received on in_port (an ethdev port, or a VLAN sub-interface once popped).
// TRACED: the traced driver's instantiation, given one packet at a time; it notes the flow
// entry the packet hit and where it was forwarded (pipeline::trace_flow, trace_out).
// Not inlined, as before tracing existed: the callers' code stays as it was measured.
template <bool TRACED>
__attribute__((noinline)) void process_run(pipeline &pl, uint16_t in_port, rte_mbuf **pkts, uint16_t n) {
#ifdef FG_STAGE_CYCLES
  uint64_t stage_tsc = rte_rdtsc();
#endif
  // Indexed like pkts; only packets whose bit is set in `parsed` have a key to look up.
  flow_key keys[BURST_SIZE];
  uint32_t hashes[BURST_SIZE];
  uint32_t idx[BURST_SIZE];
  pkt_meta meta[BURST_SIZE];
  verdict verdicts[BURST_SIZE];
  uint64_t parsed = 0;

  const port_conf &pc = pl.snap->port[in_port];
  const rx_context rx{pc.mac, pl.ft->seed(), in_port, pc.csum_offload != 0};
  for (unsigned i = 0; i < n && i < PREFETCH_OFFSET; i++) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
  for (unsigned i = 0; i < n; i++) {
    if (i + PREFETCH_OFFSET < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + PREFETCH_OFFSET], void *));
    if (likely(parse_fast(pkts[i], rx, &keys[i], &meta[i], &hashes[i])) ||
        detail::parse_fast_tunnel(pkts[i], rx, &keys[i], &meta[i], &hashes[i])) {
      pl.ft->prefetch_bucket(hashes[i]);
      parsed |= uint64_t{1} << i;
      continue;
    }
    verdicts[i] = parse_packet(pkts[i], in_port, &rx.mac, &keys[i], &meta[i]);
    if (verdicts[i].is_ok()) {
      hashes[i] = pl.ft->hash(keys[i]);
      pl.ft->prefetch_bucket(hashes[i]);
      parsed |= uint64_t{1} << i;
    }
  }
  STAGE_END(parse);

  burst_state b;
  b.s = pl.snap;
  b.entries = &pl.ft->entry(0);
  b.counters = b.s->count_flows ? pl.counters : nullptr;
  b.nat = pl.ft->nat();
  b.adj = pl.adj;
  b.now_s = pl.now_s;
  if (parsed != 0) {
    pl.ft->lookup_bulk(keys, hashes, parsed, n, idx);
    // The flows' counter lines, written below: with a large table they are cache misses.
    if (b.counters != nullptr)
      for (unsigned i = 0; i < n; i++)
        if (idx[i] != FLOW_NONE) __builtin_prefetch(&b.counters[idx[i]], 1, 3);
    // Likewise the NAT records, read below, of flows that have one (the entry is in cache
    // after the key compare); not even looked for while the table has no NAT flow.
    if (pl.ft->any_nat())
      for (unsigned i = 0; i < n; i++)
        if (idx[i] != FLOW_NONE && (b.entries[idx[i]].flags & FLOW_F_NAT)) rte_prefetch0(&b.nat[idx[i]]);
  }
  STAGE_END(lookup);

  // Act in arrival order, so that the slow path sees a flow's packets in the order they came.
  rte_mbuf *out[BURST_SIZE];
  uint16_t out_port[BURST_SIZE];
  unsigned n_out = 0;
  bool one_port = true;
  for (unsigned i = 0; i < n; i++) {
    if constexpr (TRACED) {
      pl.trace_flow = ((parsed >> i) & 1) ? idx[i] : FLOW_NONE;
      pl.trace_out = PORT_NONE;
    }
    if (likely((parsed >> i) & 1)) {
      if (unlikely(idx[i] == FLOW_NONE)) {
        punt(pl, pkts[i], in_port, punt_reason::miss, meta[i], &keys[i]);
        continue;
      }
      uint16_t port = forward(pl, b, pkts[i], in_port, meta[i], keys[i], idx[i]);
      if constexpr (TRACED) pl.trace_out = port;
      if (port == PORT_NONE) continue;
      out[n_out] = pkts[i];
      out_port[n_out] = port;
      one_port = one_port && port == out_port[0];
      n_out++;
    } else if (verdicts[i].kind == verdict::DROP) {
      drop(pl, pkts[i], static_cast<drop_reason>(verdicts[i].reason));
    } else {
      punt(pl, pkts[i], in_port, static_cast<punt_reason>(verdicts[i].reason), meta[i]);
    }
  }
  pl.stats->fast_packets += b.fast_packets;
  pl.stats->fast_bytes += b.fast_bytes;
  if (n_out != 0) {
    if (one_port) {
      // The usual burst: every forwarded packet leaves by the same port.
      tx_enqueue_bulk(pl, out_port[0], out, n_out);
    } else {
      for (unsigned i = 0; i < n_out; i++) {
        if (likely(out_port[i] < MAX_ETHPORTS))
          tx_enqueue(pl, out_port[i], out[i]);
        else
          tx_enqueue_bulk(pl, out_port[i], &out[i], 1);
      }
    }
  }
  STAGE_END(act);
}

// A burst of a port that carries VLANs: each frame's tags popped, then runs of consecutive
// frames of one logical port through the pipeline as that port's, so that every frame
// keeps its place in arrival order.
// Not inlined: process_burst() stays a test and a tail call for the ports without VLANs.
__attribute__((noinline)) void process_vlans(pipeline &pl, uint16_t parent, rte_mbuf **pkts, uint16_t n) {
  const snapshot &s = *pl.snap;
  // A run is pkts[start, i): a dropped frame ends one (its slot is not the run's).
  unsigned start = 0;
  uint16_t run_port = PORT_NONE;
  uint64_t run_bytes = 0;
  vlan_cache cache;
  auto flush = [&](unsigned end) {
    if (end == start) return;
    if (run_port >= MAX_ETHPORTS) {
      pl.stats->vlan_rx_packets[run_port - MAX_ETHPORTS] += end - start;
      pl.stats->vlan_rx_bytes[run_port - MAX_ETHPORTS] += run_bytes;
    }
    process_run<false>(pl, run_port, pkts + start, static_cast<uint16_t>(end - start));
    run_bytes = 0;
  };
  for (unsigned i = 0; i < n && i < PREFETCH_OFFSET; i++) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
  for (unsigned i = 0; i < n; i++) {
    if (i + PREFETCH_OFFSET < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + PREFETCH_OFFSET], void *));
    rte_mbuf *m = pkts[i];
    drop_reason why = drop_reason::unknown_vlan;
    const uint16_t port = vlan_pop(s, parent, m, cache, &why);
    if (port == PORT_NONE) {
      flush(i);
      start = i + 1;
      drop(pl, m, why);
      continue;
    }
    if (port != run_port) {
      flush(i);
      start = i;
      run_port = port;
    }
    run_bytes += m->pkt_len;
  }
  flush(n);
}

// ---- the traced driver (trace.h) -----------------------------------------------------------

// A worker's counters and tx buffers before one packet went through the pipeline: what
// changed after it says what became of it.
struct trace_before {
  uint64_t punts[PUNT_REASON_COUNT];
  uint64_t drops[DROP_REASON_COUNT];
  uint64_t fast_packets;
  uint16_t n_dirty;
  uint16_t tx_n[MAX_ETHPORTS];  // of the ports dirty then
};

void trace_snapshot(const pipeline &pl, trace_before &t) {
  memcpy(t.punts, pl.stats->punts, sizeof(t.punts));
  memcpy(t.drops, pl.stats->drops, sizeof(t.drops));
  t.fast_packets = pl.stats->fast_packets;
  t.n_dirty = pl.n_dirty;
  for (unsigned d = 0; d < pl.n_dirty; d++) t.tx_n[pl.dirty[d]] = pl.tx[pl.dirty[d]].n;
}

// The ethdev port whose tx buffer took a packet since `t`, and that packet (still in the
// buffer, unsent: readable); PORT_NONE when none did.
uint16_t trace_sent(const pipeline &pl, const trace_before &t, rte_mbuf **m) {
  for (unsigned d = 0; d < pl.n_dirty; d++) {
    const uint16_t p = pl.dirty[d];
    if (pl.tx[p].n > (d < t.n_dirty ? t.tx_n[p] : 0)) {
      *m = pl.tx[p].pkts[pl.tx[p].n - 1];
      return p;
    }
  }
  return PORT_NONE;
}

// First reason whose counter moved since `before`, or TRACE_NO_REASON.
template <size_t N>
uint8_t moved(const uint64_t (&now)[N], const uint64_t (&before)[N]) {
  for (size_t r = 0; r < N; r++)
    if (now[r] != before[r]) return static_cast<uint8_t>(r);
  return TRACE_NO_REASON;
}

// One selected packet through the pipeline on its own, and its record. r holds what was
// known before: seq, input, the bytes as received.
void trace_one(pipeline &pl, trace_session &ts, uint16_t port, rte_mbuf *m, trace_record &r) {
  trace_before t;
  trace_snapshot(pl, t);
  process_run<true>(pl, port, &m, 1);
  r.flow = pl.trace_flow;
  const uint8_t punted = moved(pl.stats->punts, t.punts);
  const uint8_t dropped = moved(pl.stats->drops, t.drops);
  rte_mbuf *sent = nullptr;
  const uint16_t tx_port = trace_sent(pl, t, &sent);
  r.punt_reason = punted;
  if (dropped != TRACE_NO_REASON) {
    r.decision = static_cast<uint8_t>(trace_decision::drop);
    r.reason = dropped;
  } else if (pl.stats->fast_packets != t.fast_packets) {
    const uint8_t action = pl.ft->entry(r.flow).action;
    r.decision = static_cast<uint8_t>(action == FLOW_ACT_DECAP   ? trace_decision::decap
                                      : action == FLOW_ACT_ENCAP ? trace_decision::encap
                                                                 : trace_decision::forward);
    r.out_port = pl.trace_out;
  } else {
    // A punt; a tunnel fragment held for reassembly goes nowhere yet.
    r.decision = static_cast<uint8_t>(trace_decision::punt);
    r.reason = punted;
    r.out_port = tx_port;
  }
  if (sent != nullptr) trace_set_tx(r, sent, pl.snap->port[tx_port].l3 != 0);
  trace_submit(ts, r);
}

// A burst while a trace runs: as process_burst() and process_vlans(), with the packets the
// session selects taken out of the runs and traced one by one. VLAN tags are popped first
// (the filter sees a VLAN's frames as its sub-interface does, untagged), but the bytes
// recorded are the frame as received.
__attribute__((noinline)) void process_traced(pipeline &pl, trace_session &ts, uint16_t in_port, rte_mbuf **pkts,
                                              uint16_t n) {
  const snapshot &s = *pl.snap;
  const bool vlans = s.port[in_port].has_vlans;
  const bool l3 = s.port[in_port].l3;
  unsigned start = 0;
  uint16_t run_port = PORT_NONE;
  uint64_t run_bytes = 0;
  vlan_cache cache;
  auto count_vlan = [&](uint16_t port, uint64_t packets, uint64_t bytes) {
    if (port < MAX_ETHPORTS) return;
    pl.stats->vlan_rx_packets[port - MAX_ETHPORTS] += packets;
    pl.stats->vlan_rx_bytes[port - MAX_ETHPORTS] += bytes;
  };
  auto flush = [&](unsigned end) {
    if (end > start) {
      count_vlan(run_port, end - start, run_bytes);
      process_run<false>(pl, run_port, pkts + start, static_cast<uint16_t>(end - start));
    }
    run_bytes = 0;
  };
  trace_record r;
  for (unsigned i = 0; i < n; i++) {
    rte_mbuf *m = pkts[i];
    memset(&r, 0, offsetof(trace_record, rx));
    r.tsc = pl.now_tsc;
    r.worker = pl.worker;
    r.wire_len = m->pkt_len;
    r.flags = l3 ? TRACE_F_RX_L3 : 0;
    r.flow = FLOW_NONE;
    r.out_port = PORT_NONE;
    r.reason = r.punt_reason = TRACE_NO_REASON;
    uint16_t port = in_port;
    bool rx_copied = false;
    if (vlans) {
      r.rx_len = trace_copy(m, r.rx);
      rx_copied = true;
      drop_reason why = drop_reason::unknown_vlan;
      port = vlan_pop(s, in_port, m, cache, &why);
      if (port == PORT_NONE) {
        flush(i);
        start = i + 1;
        // Nothing was popped: the frame is as received, and the parent's.
        r.in_port = in_port;
        if (trace_selects(ts, in_port, m, l3) && trace_take(ts, &r.seq)) {
          r.decision = static_cast<uint8_t>(trace_decision::drop);
          r.reason = static_cast<uint8_t>(why);
          trace_submit(ts, r);
        }
        drop(pl, m, why);
        continue;
      }
    }
    if (!trace_selects(ts, port, m, l3) || !trace_take(ts, &r.seq)) {
      if (port != run_port) {
        flush(i);
        start = i;
        run_port = port;
      }
      run_bytes += m->pkt_len;
      continue;
    }
    flush(i);
    start = i + 1;
    count_vlan(port, 1, m->pkt_len);
    if (!rx_copied) r.rx_len = trace_copy(m, r.rx);
    r.in_port = port;
    trace_one(pl, ts, port, m, r);
  }
  flush(n);
}

}  // namespace

void process_burst(pipeline &pl, uint16_t in_port, rte_mbuf **pkts, uint16_t n) {
  pl.stats->rx_packets += n;
  // What tracing costs while off: this test, per burst.
  if (unlikely(pl.trace != nullptr)) return process_traced(pl, *pl.trace, in_port, pkts, n);
  // The one test a port without VLANs pays, per burst.
  if (unlikely(pl.snap->port[in_port].has_vlans)) return process_vlans(pl, in_port, pkts, n);
  process_run<false>(pl, in_port, pkts, n);
}

#undef STAGE_END

}  // namespace fg
