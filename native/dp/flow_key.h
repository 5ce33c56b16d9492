// The flowtable key, after the kernel's struct flow_offload_tuple: addresses, ports, L3/L4
// protocol, input port and, for tunnelled traffic, the outer IPv6 source and destination.
// A tunnelled key has an L3 value of its own (as the kernel's tuple has tun.l3_proto): were
// it told apart from a plain IPv4 key by its outer addresses alone, an IPv6 packet from ::
// to :: wrapping a plain flow's tuple would be that flow's key.
// It is kept to 48 bytes (three 16-byte words) so that hashing it is six CRC32 steps and
// comparing it is three vector compares; a key and its flow's action share one cache line.
#pragma once

#include <cstdint>
#include <cstring>

#include <nmmintrin.h>  // SSE4.2 CRC32; DPDK's pkg-config flags select -march=corei7

#include "common.h"

namespace fg {

enum flow_l3 : uint8_t {
  FLOW_L3_IPV4 = 4,            // plain IPv4
  FLOW_L3_IPV6 = 6,            // plain IPv6
  FLOW_L3_IPV4_IN_IPV6 = 46,   // IPv4 inside an IPv6 tunnel: ip4 with the outer addresses
};

struct flow_key {
  union {
    struct {
      uint8_t src[16];
      uint8_t dst[16];
    } ip6;
    struct {
      uint32_t src;  // network byte order
      uint32_t dst;
      // FLOW_L3_IPV4_IN_IPV6: the outer IPv6 source and destination; otherwise zero.
      uint8_t outer_src[16];
      uint8_t outer_dst[16];
    } ip4;
  };
  uint16_t sport;  // network byte order
  uint16_t dport;
  uint16_t in_port;
  uint8_t l3proto;  // flow_l3
  uint8_t l4proto;  // IPPROTO_TCP or IPPROTO_UDP
};
static_assert(sizeof(flow_key) == 48, "flow_key must stay three 16-byte words");

inline void flow_key_zero(flow_key *k) { memset(k, 0, sizeof(*k)); }

inline bool flow_key_is_tunnelled(const flow_key &k) { return k.l3proto == FLOW_L3_IPV4_IN_IPV6; }
// Whether the packet the key describes (the inner one when tunnelled) is IPv4.
inline bool flow_l3_is_ipv4(uint8_t l3proto) { return l3proto != FLOW_L3_IPV6; }

// The hash of a key given as its six 8-byte words (the fast parser has them in registers).
// seed: the flowtable's own (flowtable::seed()), random per table, so that nobody can craft
// keys that crowd one bucket pair and keep other flows out of the fast path.
inline uint32_t flow_key_hash_words(const uint64_t w[6], uint32_t seed) {
  uint64_t h = seed;
  for (int i = 0; i < 6; i++) h = _mm_crc32_u64(h, w[i]);
  // CRC is linear: keys that differ in a few bits (consecutive addresses, as real traffic
  // has) map onto a subspace and crowd a fraction of the buckets. A multiply-xorshift
  // finaliser (MurmurHash3's fmix32) spreads them.
  uint32_t x = static_cast<uint32_t>(h);
  x ^= x >> 16;
  x *= 0x85ebca6bu;
  x ^= x >> 13;
  x *= 0xc2b2ae35u;
  x ^= x >> 16;
  return x;
}

inline uint32_t flow_key_hash(const flow_key *k, uint32_t seed) {
  uint64_t w[6];
  memcpy(w, k, sizeof(w));
  return flow_key_hash_words(w, seed);
}

inline bool flow_key_equal(const flow_key *a, const flow_key *b) {
  const __m128i *pa = reinterpret_cast<const __m128i *>(a);
  const __m128i *pb = reinterpret_cast<const __m128i *>(b);
  __m128i x = _mm_xor_si128(_mm_loadu_si128(pa), _mm_loadu_si128(pb));
  x = _mm_or_si128(x, _mm_xor_si128(_mm_loadu_si128(pa + 1), _mm_loadu_si128(pb + 1)));
  x = _mm_or_si128(x, _mm_xor_si128(_mm_loadu_si128(pa + 2), _mm_loadu_si128(pb + 2)));
  return _mm_testz_si128(x, x);
}

}  // namespace fg
