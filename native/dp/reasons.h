// Every outcome of a packet other than "forwarded by the fast path" has a name and a
// counter (STYLE 3). Punted packets go to the slow path (the kernel); dropped packets are
// garbage or cannot be delivered anywhere. The X-macro lists are the one place the names
// live: the enum, the counters and the strings shown to users all come from them.
#pragma once

#include <cstdint>

namespace fg {

// clang-format off
#define FG_PUNT_REASONS(X)                                                               \
  X(miss,        "no offloaded flow matches the packet")                                 \
  X(teardown,    "the flow is marked for teardown, or a TCP SYN on a closing flow")      \
  X(ttl_expired, "TTL or hop limit <= 1")                                                \
  X(too_big,     "larger than the egress MTU")                                           \
  X(ip_options,  "IPv4 header with options")                                             \
  X(fragment,    "IPv4 fragment or IPv6 fragment header")                                \
  X(ipv6_ext,    "IPv6 extension header other than the tunnel's destination options")    \
  X(l4proto,     "L4 protocol other than TCP and UDP")                                   \
  X(non_ip,      "neither IPv4 nor IPv6")                                                \
  X(segmented,   "headers span more than the first mbuf segment")                        \
  X(multicast,   "Ethernet broadcast or multicast destination")                          \
  X(no_headroom, "no mbuf headroom for the tunnel's outer headers")                      \
  X(chained,     "a multi-segment packet for an output port without multi-segment tx")   \
  X(tunnel_fragment, "outer IPv6 fragment of a tunnel packet, reassembled for its TUN")  \
  X(tunnel_too_big, "packet too big about a tunnel packet, relayed into its TUN to the inner sender")

#define FG_DROP_REASONS(X)                                                               \
  X(truncated,    "shorter than its headers say")                                        \
  X(bad_header,   "malformed header (version, header length or total length)")           \
  X(bad_checksum, "IPv4 header checksum wrong (RFC 1812 5.2.2)")                         \
  X(other_host,   "Ethernet destination is another host's address")                      \
  X(ecn,          "outer CE over a not-ECT inner packet (RFC 6040 decapsulation)")       \
  X(no_slowpath,  "a punt with no slow-path port to take it")                            \
  X(short_segment, "a punt for a TUN whose first mbuf segment holds only Ethernet header") \
  X(punt_policed, "a punt over the input port's slow-path rate limit")                   \
  X(tx_full,      "output queue full")                                                   \
  X(reassembly,   "tunnel fragment given up by reassembly: timed out, table full, bad") \
  X(unknown_vlan, "a VLAN tag no sub-interface of the port has, or more tags than configured")
// clang-format on

enum class punt_reason : uint8_t {
#define FG_X(name, text) name,
  FG_PUNT_REASONS(FG_X)
#undef FG_X
      count
};

enum class drop_reason : uint8_t {
#define FG_X(name, text) name,
  FG_DROP_REASONS(FG_X)
#undef FG_X
      count
};

constexpr unsigned PUNT_REASON_COUNT = static_cast<unsigned>(punt_reason::count);
constexpr unsigned DROP_REASON_COUNT = static_cast<unsigned>(drop_reason::count);

extern const char *const punt_reason_names[PUNT_REASON_COUNT];
extern const char *const punt_reason_texts[PUNT_REASON_COUNT];
extern const char *const drop_reason_names[DROP_REASON_COUNT];
extern const char *const drop_reason_texts[DROP_REASON_COUNT];

}  // namespace fg
