// VLAN sub-interfaces (802.1Q, 802.1ad, and QinQ: 802.1Q inside 802.1ad) as logical ports,
// the way the kernel's flowtable handles up to two VLAN headers (nf_flow_table_ip.c's
// nf_flow_skb_encap_protocol() and nf_flow_encap_pop()/push()): tags are popped on rx, the
// frame is then looked up and forwarded as if it arrived on the sub-interface, and tags are
// pushed again on tx. The rest of the fast path never sees a tag: after vlan_pop() a frame
// is a plain Ethernet frame of its logical port, so parsing, tunnel decap, ICMP and
// fragment handling and the punt to the sub-interface's own TAP (untagged, so the kernel
// needs no 8021q) are the untagged code.
//
// The received outermost tag's TCI is kept in the mbuf (vlan_tci, with RX_VLAN_STRIPPED in
// ol_flags, as a NIC that strips tags leaves it), so that its PCP goes on with the frame.
#pragma once

#include <cstdint>
#include <cstring>

#include <rte_mbuf.h>

#include "packet.h"
#include "snapshot.h"

namespace fg {

constexpr uint16_t VLAN_HLEN = 4;
constexpr uint16_t VLAN_MAX_TAGS = 2;
constexpr uint16_t ETH_ADDRS_LEN = 12;  // destination and source MAC, before the first TPID
constexpr uint16_t VLAN_VID_MASK = 0x0fff;
constexpr unsigned VLAN_PCP_SHIFT = 13;
constexpr uint16_t TPID_8021Q = RTE_ETHER_TYPE_VLAN;   // 0x8100
constexpr uint16_t TPID_8021AD = RTE_ETHER_TYPE_QINQ;  // 0x88a8

// A tag as on the wire (TPID then TCI, network order), as the 4 bytes load into a word.
inline uint32_t vlan_tag_word(uint16_t tpid, uint16_t tci) {
  const rte_be16_t be[2] = {rte_cpu_to_be_16(tpid), rte_cpu_to_be_16(tci)};
  uint32_t w;
  memcpy(&w, be, 4);
  return w;
}

// A tag word (vlan_tag_word) without its PCP and DEI: TPID and VLAN id.
inline const uint32_t VLAN_TAG_MASK = vlan_tag_word(0xffff, VLAN_VID_MASK);

inline bool is_vlan_tpid(rte_be16_t type) {
  return type == rte_cpu_to_be_16(TPID_8021Q) || type == rte_cpu_to_be_16(TPID_8021AD);
}

// The VLAN sub-interface of parent with this tag (TPID and VLAN id, PCP and DEI zero), or
// PORT_NONE.
inline uint16_t vlan_lookup(const snapshot &s, uint16_t parent, uint32_t tag) {
  for (unsigned i = 0; i < s.n_vlans; i++)
    if (s.vlan_map[i].parent == parent && s.vlan_map[i].tag == tag) return s.vlan_map[i].port;
  return PORT_NONE;
}

// A VLAN sub-interface's configuration on parent (an ethdev port, or the 802.1ad VLAN whose
// inner 802.1Q tags it carries): MTU 0 is the parent's. The caller checked the stacking.
inline void vlan_conf_build(port_conf &pc, const snapshot &s, uint16_t parent, uint16_t vid, bool ad, uint8_t pcp,
                            uint16_t mtu, uint64_t mac) {
  const port_conf &up = s.port[parent];
  pc = port_conf{};
  pc.tx_port = up.n_tags != 0 ? up.tx_port : parent;
  const port_conf &phys = s.port[pc.tx_port];
  pc.mtu = mtu != 0 ? mtu : up.mtu;
  pc.slowpath = PORT_NONE;
  pc.active = 1;
  pc.multiseg = phys.multiseg;
  pc.csum_offload = phys.csum_offload;  // a NIC checks IPv4 checksums behind tags as well
  pc.mac = mac;
  pc.kernel_egress_port = PORT_NONE;
  pc.kernel_egress_tunnel = TUNNEL_NONE;
  pc.vlan_parent = parent;
  pc.pcp = pcp;
  if (up.n_tags != 0) pc.tags[pc.n_tags++] = up.tags[0];
  pc.tags[pc.n_tags++] = vlan_tag_word(ad ? TPID_8021AD : TPID_8021Q, vid);
}

// The rx demultiplexing of a snapshot's VLANs (every sub-interface by its parent and its
// own, innermost, tag; the ethdev ports under them marked), after any VLAN change.
inline void derive_vlans(snapshot &s) {
  for (uint16_t p = 0; p < MAX_ETHPORTS; p++) s.port[p].has_vlans = 0;
  s.n_vlans = 0;
  for (uint16_t p = MAX_ETHPORTS; p < MAX_PORTS; p++) {
    const port_conf &v = s.port[p];
    if (!v.active || v.n_tags == 0) continue;
    s.vlan_map[s.n_vlans++] = vlan_map_entry{v.vlan_parent, p, v.tags[v.n_tags - 1]};
    s.port[v.tx_port].has_vlans = 1;
  }
}

// The last lookup of a burst's demultiplexing: frames of one VLAN come in runs.
struct vlan_cache {
  uint16_t parent = PORT_NONE;
  uint32_t tag = 0;
  uint16_t port = PORT_NONE;
};

// Take `popped` bytes of tags from after the MAC addresses (which move up to the EtherType),
// keeping the outermost tag's TCI as a NIC that strips tags leaves it.
inline void vlan_strip(rte_mbuf *m, uint16_t popped, uint16_t outer_tci) {
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  uint64_t addrs_lo;
  uint32_t addrs_hi;
  memcpy(&addrs_lo, f, 8);
  memcpy(&addrs_hi, f + 8, 4);
  memcpy(f + popped, &addrs_lo, 8);
  memcpy(f + popped + 8, &addrs_hi, 4);
  m->data_off = static_cast<uint16_t>(m->data_off + popped);
  m->data_len = static_cast<uint16_t>(m->data_len - popped);
  m->pkt_len -= popped;
  m->vlan_tci = outer_tci;
  m->ol_flags |= RTE_MBUF_F_RX_VLAN | RTE_MBUF_F_RX_VLAN_STRIPPED;
}

// Demultiplex a frame received on an ethdev port that carries VLANs: pop its tags (one, or
// 802.1ad then 802.1Q) and return the logical port it arrived on. Untagged frames, frames
// with a priority tag only (VLAN id 0, which the kernel takes as the device's own), and
// frames whose tags span more than the first segment are the parent's own, the latter
// as they are (the parser punts them to the parent's TAP as non-IP: the kernel decides).
// Returns PORT_NONE with *why set when the frame is to be dropped: truncated inside its
// tags, or a tag that no sub-interface has (an unknown VLAN id, or more tags than the
// configured stacking: the kernel without such a VLAN device drops them too).
// Sets: the frame without its tags, vlan_tci and RX_VLAN_STRIPPED when a tag was popped.
inline uint16_t vlan_pop_slow(const snapshot &s, uint16_t parent, rte_mbuf *m, vlan_cache &c, drop_reason *why) {
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  const uint32_t seg = m->data_len;
  const uint32_t total = m->pkt_len;
  if (seg < ETH_HLEN || total < ETH_HLEN || !is_vlan_tpid(detail::load_be16(f + ETH_ADDRS_LEN))) return parent;
  uint16_t port = parent;
  uint32_t off = ETH_ADDRS_LEN;
  uint16_t outer_tci = 0;
  for (unsigned n = 0; is_vlan_tpid(detail::load_be16(f + off)); n++) {
    // The tag and the EtherType after it.
    if (total < off + VLAN_HLEN + 2) {
      *why = drop_reason::truncated;
      return PORT_NONE;
    }
    // One tag too many is known from its TPID, already read: dropped however the frame is
    // segmented, as the whole frame would be.
    if (n == VLAN_MAX_TAGS) {
      *why = drop_reason::unknown_vlan;
      return PORT_NONE;
    }
    if (seg < off + VLAN_HLEN + 2) return parent;
    const uint16_t tci = rte_be_to_cpu_16(detail::load_be16(f + off + 2));
    if (n == 0) outer_tci = tci;
    if ((tci & VLAN_VID_MASK) != 0) {
      const uint32_t tag = detail::load32(f + off) & VLAN_TAG_MASK;
      if (c.parent != port || c.tag != tag) c = {port, tag, vlan_lookup(s, port, tag)};
      if (c.port == PORT_NONE) {
        *why = drop_reason::unknown_vlan;
        return PORT_NONE;
      }
      port = c.port;
    }
    off += VLAN_HLEN;
  }
  vlan_strip(m, static_cast<uint16_t>(off - ETH_ADDRS_LEN), outer_tci);
  return port;
}

// vlan_pop() in few instructions for the usual frame: one tag, of the VLAN the previous
// frame had, and no tag after it. Anything else takes the loop above.
inline uint16_t vlan_pop(const snapshot &s, uint16_t parent, rte_mbuf *m, vlan_cache &c, drop_reason *why) {
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  constexpr uint32_t SINGLE = ETH_HLEN + VLAN_HLEN;
  if (likely(m->data_len >= SINGLE && m->pkt_len >= SINGLE && c.parent == parent)) {
    const uint32_t tag = detail::load32(f + ETH_ADDRS_LEN) & VLAN_TAG_MASK;
    if (likely(tag == c.tag && c.port != PORT_NONE && !is_vlan_tpid(detail::load_be16(f + ETH_ADDRS_LEN + VLAN_HLEN)))) {
      vlan_strip(m, VLAN_HLEN, rte_be_to_cpu_16(detail::load_be16(f + ETH_ADDRS_LEN + 2)));
      return c.port;
    }
  }
  return vlan_pop_slow(s, parent, m, c, why);
}

// The PCP a frame leaving by VLAN v carries: the received one when it arrived tagged (a
// forwarded frame keeps its priority), else the VLAN's configured one.
inline uint8_t vlan_pcp_of(const rte_mbuf *m, const port_conf &v) {
  const uint8_t received = static_cast<uint8_t>(m->vlan_tci >> VLAN_PCP_SHIFT);
  return (m->ol_flags & RTE_MBUF_F_RX_VLAN_STRIPPED) ? received : v.pcp;
}

// Whether frame m can take VLAN v's tags in front of it, after extra_headroom bytes of
// other headers (a tunnel's) are prepended: checked before a frame is modified.
inline bool vlan_push_fits(const rte_mbuf *m, const port_conf &v, uint32_t extra_headroom = 0) {
  return rte_pktmbuf_headroom(m) >= VLAN_HLEN * v.n_tags + extra_headroom && m->data_len >= ETH_HLEN;
}

// Push VLAN v's tags (outermost first) with PCP pcp between the MAC addresses and the
// EtherType. The caller checked vlan_push_fits().
inline void vlan_push(rte_mbuf *m, const port_conf &v, uint8_t pcp) {
  const uint8_t *old = rte_pktmbuf_mtod(m, const uint8_t *);
  // The addresses in registers, loaded as the rewrite stored them (no store-forwarding stall).
  uint64_t addrs_lo;
  uint32_t addrs_hi;
  memcpy(&addrs_lo, old, 8);
  memcpy(&addrs_hi, old + 8, 4);
  const uint16_t len = static_cast<uint16_t>(VLAN_HLEN * v.n_tags);
  m->data_off = static_cast<uint16_t>(m->data_off - len);
  m->data_len = static_cast<uint16_t>(m->data_len + len);
  m->pkt_len += len;
  uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
  memcpy(f, &addrs_lo, 8);
  memcpy(f + 8, &addrs_hi, 4);
  const uint32_t pcp_bits = rte_cpu_to_be_32(uint32_t{pcp} << VLAN_PCP_SHIFT);
  const uint32_t outer = v.tags[0] | pcp_bits;
  memcpy(f + ETH_ADDRS_LEN, &outer, VLAN_HLEN);
  if (v.n_tags == 2) {
    const uint32_t inner = v.tags[1] | pcp_bits;
    memcpy(f + ETH_ADDRS_LEN + VLAN_HLEN, &inner, VLAN_HLEN);
  }
}

}  // namespace fg
