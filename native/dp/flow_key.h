// The flowtable key, after the kernel's struct flow_offload_tuple: addresses, ports, L3/L4
// protocol, input port and, for tunnelled traffic, the outer IPv6 source and destination.
// It is kept to 48 bytes (three 16-byte words) so that hashing it is six CRC32 steps and
// comparing it is three vector compares; a key and its flow's action share one cache line.
#pragma once

#include <cstdint>
#include <cstring>

#include <nmmintrin.h>  // SSE4.2 CRC32; DPDK's pkg-config flags select -march=corei7

#include "common.h"

namespace fg {

enum flow_l3 : uint8_t {
  FLOW_L3_IPV4 = 4,  // plain IPv4, or IPv4 inside an IPv6 tunnel (outer addresses set)
  FLOW_L3_IPV6 = 6,
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
      // Outer IPv6 source and destination of a decapsulated packet; zero when the packet
      // arrived without a tunnel header (no tunnel endpoint can be the unspecified address).
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

inline bool flow_key_is_tunnelled(const flow_key &k) {
  if (k.l3proto != FLOW_L3_IPV4) return false;
  uint64_t w[2];
  memcpy(w, k.ip4.outer_dst, sizeof(w));
  return (w[0] | w[1]) != 0;
}

constexpr uint32_t FLOW_HASH_SEED = 0x9e3779b9u;

// The hash of a key given as its six 8-byte words (the fast parser has them in registers).
inline uint32_t flow_key_hash_words(const uint64_t w[6]) {
  uint64_t h = FLOW_HASH_SEED;
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

inline uint32_t flow_key_hash(const flow_key *k) {
  uint64_t w[6];
  memcpy(w, k, sizeof(w));
  return flow_key_hash_words(w);
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
