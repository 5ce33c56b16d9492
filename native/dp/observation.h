// Observation records: what the fast path tells the learner about packets around the slow
// path, instead of the packets themselves. A punt record says where a packet came in and
// what its flow key was; an egress record says where the kernel sent it and with which
// Ethernet header and tuple (after any NAT). Both carry a fingerprint of the packet that the
// kernel does not change when it forwards (or NATs) it, so the learner can pair them.
//
// The layout is read in TypeScript (lib/slowpath/observations.ts) from a Buffer of packed
// records; observation_layout() in the addon exports the offsets so a test keeps the two
// in step.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>

#include <nmmintrin.h>

#include "flow_key.h"
#include "packet.h"

namespace fg {

enum observation_kind : uint8_t {
  OBS_PUNT = 1,           // a packet the fast path handed to the kernel (port, or tunnel's TUN)
  OBS_EGRESS_PORT = 2,    // a packet the kernel sent out of a port's TAP
  OBS_EGRESS_TUNNEL = 3,  // a packet the kernel routed into a tunnel's TUN
};

struct observation {
  uint64_t tsc;          // when the fast path saw it
  flow_key key;          // PUNT: as received (outer addresses when tunnelled); EGRESS: as the kernel sent it
  uint8_t kind;          // observation_kind
  uint8_t reason;        // PUNT: punt_reason
  uint8_t tcp_flags;     // the TCP flags byte, or 0
  uint8_t pad0;
  uint16_t port;         // PUNT: input port; EGRESS_PORT: the port the TAP mirrors; else PORT_NONE
  uint16_t tunnel;       // PUNT decapsulated to a tunnel's TUN, or EGRESS_TUNNEL: the tunnel; else TUNNEL_NONE
  uint8_t dst_mac[6];    // EGRESS_PORT: the Ethernet addresses the kernel wrote
  uint8_t src_mac[6];
  uint32_t fingerprint;  // the same for a packet before and after the kernel forwarded it
  uint16_t l3_len;
  uint8_t pad1[6];
};
static_assert(sizeof(observation) == 88, "observation records are 88 bytes");

// Payload bytes a fingerprint covers.
constexpr uint32_t FINGERPRINT_PAYLOAD = 16;

// Fields of an IP packet that forwarding and NAT leave alone: the IPv4 identification, the
// TCP sequence and acknowledgement numbers and flags, the UDP length, and the first payload
// bytes (after the TCP options, which MSS clamping may rewrite). Uses: the (inner) IP packet
// of l3_len bytes at l3_off in m, whose L3 and L4 headers parsing found in the first
// segment. The payload may be in later segments (a chain from a scattering port): it is
// read across them, so that a packet has one fingerprint however it was segmented.
inline uint32_t packet_fingerprint(const rte_mbuf *m, uint32_t l3_off, uint16_t l3_len, const flow_key &key) {
  const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, l3_off);
  uint32_t h = 0x2545f491u;
  uint32_t l4_off;
  if (!flow_l3_is_ipv4(key.l3proto)) {  // plain IPv6, or IPv6 inside a tunnel
    l4_off = IP6_HLEN;
  } else {
    uint16_t id;
    memcpy(&id, l3 + 4, 2);
    h = _mm_crc32_u16(h, id);
    l4_off = IP4_HLEN;
  }
  h = _mm_crc32_u8(h, key.l4proto);
  uint32_t fixed;  // the part of the L4 header that NAT does not rewrite
  if (key.l4proto == IPPROTO_TCP) {
    uint64_t seq_ack;
    memcpy(&seq_ack, l3 + l4_off + 4, 8);
    h = static_cast<uint32_t>(_mm_crc32_u64(h, seq_ack));
    h = _mm_crc32_u8(h, l3[l4_off + 13]);
    fixed = (l3[l4_off + 12] >> 4) * 4u;
  } else {
    uint16_t udp_len;
    memcpy(&udp_len, l3 + l4_off + 4, 2);
    h = _mm_crc32_u16(h, udp_len);
    fixed = sizeof(rte_udp_hdr);
  }
  uint32_t start = l4_off + fixed;
  if (start >= l3_len) return h;
  uint32_t n = std::min<uint32_t>(FINGERPRINT_PAYLOAD, l3_len - start);
  uint8_t copy[FINGERPRINT_PAYLOAD];
  const auto *payload = static_cast<const uint8_t *>(rte_pktmbuf_read(m, l3_off + start, n, copy));
  if (payload == nullptr) return h;  // shorter than its headers say: parsing refuses those
  for (uint32_t i = 0; i < n; i++) h = _mm_crc32_u8(h, payload[i]);
  return h;
}

// A record of the (inner) IP packet of l3_len bytes at l3_off in m, whose flow key parsing
// found: the fields every kind fills alike. The caller sets an egress record's MACs.
inline void observation_init(observation *o, observation_kind kind, uint64_t tsc, const rte_mbuf *m, uint32_t l3_off,
                             uint16_t l3_len, const flow_key &key, uint16_t port, uint16_t tunnel) {
  memset(o, 0, sizeof(*o));
  o->tsc = tsc;
  o->key = key;
  o->kind = kind;
  if (key.l4proto == IPPROTO_TCP) {
    const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, l3_off);
    o->tcp_flags = l3[(flow_l3_is_ipv4(key.l3proto) ? IP4_HLEN : IP6_HLEN) + 13];
  }
  o->port = port;
  o->tunnel = tunnel;
  o->fingerprint = packet_fingerprint(m, l3_off, l3_len, key);
  o->l3_len = l3_len;
}

}  // namespace fg
