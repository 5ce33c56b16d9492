// The flowtable key, after the kernel's struct flow_offload_tuple: addresses, ports, L3/L4
// protocol, input port and, for tunnelled traffic, the outer addresses.
// A tunnelled key has an L3 value of its own per mode (as the kernel's tuple has
// tun.l3_proto): were it told apart from a plain key by its outer addresses alone, an IPv6
// packet from :: to :: wrapping a plain flow's tuple would be that flow's key.
// It is kept to 48 bytes (three 16-byte words) so that hashing it is six CRC32 steps and
// comparing it is three vector compares; a key and its flow's action share one cache line.
//
// Where a mode's outer addresses go (byte offsets):
//   IPV4_IN_IPV6: inner IPv4 0-7, outer IPv6 source 8-23 and destination 24-39
//   IPV4_IN_IPV4: inner IPv4 0-7, outer IPv4 source 8-11 and destination 12-15, then zero
//   IPV6_IN_IPV4: inner IPv6 0-31, outer IPv4 source 32-35 and destination 36-39
//   IPV6_IN_IPV6: inner IPv6 0-31, and 32-39 a fold of the outer addresses (outer_fold6):
//     both pairs of IPv6 addresses do not fit, so the key only narrows the lookup down and
//     the fast path compares the packet's outer addresses with its flow's tunnel after the
//     lookup (flow_entry::tunnel). A fold that two tunnels share costs offload, never
//     correctness.
#pragma once

#include <cstdint>
#include <cstring>

#include <nmmintrin.h>  // SSE4.2 CRC32; DPDK's pkg-config flags select -march=corei7

#include "common.h"

namespace fg {

// The inner family in the tens (tunnelled keys) or units, the outer family in the units:
// 46 is IPv4 in IPv6, as Linux's mode names (ip4ip6) read.
enum flow_l3 : uint8_t {
  FLOW_L3_IPV4 = 4,            // plain IPv4
  FLOW_L3_IPV6 = 6,            // plain IPv6
  FLOW_L3_IPV4_IN_IPV4 = 44,   // ipip (RFC 2003)
  FLOW_L3_IPV4_IN_IPV6 = 46,   // ip4ip6 (RFC 2473)
  FLOW_L3_IPV6_IN_IPV4 = 64,   // sit (RFC 4213)
  FLOW_L3_IPV6_IN_IPV6 = 66,   // ip6ip6 (RFC 2473)
};

struct flow_key {
  union {
    struct {
      uint8_t src[16];
      uint8_t dst[16];
      // IPV6_IN_IPV4: the outer IPv4 source and destination; IPV6_IN_IPV6: outer_fold6();
      // otherwise zero.
      uint8_t outer[8];
    } ip6;
    struct {
      uint32_t src;  // network byte order
      uint32_t dst;
      // IPV4_IN_IPV6: the outer IPv6 source and destination; IPV4_IN_IPV4: the outer IPv4
      // source and destination in the first 8 bytes; otherwise zero.
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

inline bool flow_l3_is_tunnelled(uint8_t l3proto) { return l3proto >= FLOW_L3_IPV4_IN_IPV4; }
inline bool flow_key_is_tunnelled(const flow_key &k) { return flow_l3_is_tunnelled(k.l3proto); }
// Whether the packet the key describes (the inner one when tunnelled) is IPv4.
inline bool flow_l3_is_ipv4(uint8_t l3proto) {
  return l3proto == FLOW_L3_IPV4 || l3proto == FLOW_L3_IPV4_IN_IPV4 || l3proto == FLOW_L3_IPV4_IN_IPV6;
}
// The L3 value of a tunnelled key: inner and outer family, each 4 or 6.
inline uint8_t flow_l3_tunnelled(uint8_t inner_family, uint8_t outer_family) {
  return static_cast<uint8_t>(inner_family * 10 + outer_family);
}

inline uint64_t rotl64(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }

// The key word of an IPv6-in-IPv6 packet's outer source and destination (32 bytes, as four
// 8-byte words in memory order). Distinct rotations keep a swapped source and destination,
// or addresses that differ in one word only, apart.
inline uint64_t outer_fold6(uint64_t s0, uint64_t s1, uint64_t d0, uint64_t d1) {
  return s0 ^ rotl64(s1, 16) ^ rotl64(d0, 32) ^ rotl64(d1, 48);
}
inline uint64_t outer_fold6(const uint8_t src[16], const uint8_t dst[16]) {
  uint64_t w[4];
  memcpy(w, src, 16);
  memcpy(w + 2, dst, 16);
  return outer_fold6(w[0], w[1], w[2], w[3]);
}

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
