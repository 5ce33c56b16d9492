// libFuzzer target over the fast path: one burst through process_burst() (native/dp/pipeline.cc)
// on guard-page mbufs (native/testing/guarded_mbufs.h), in a world built from the input:
// ports with and without slow paths (TAP or TUN), MTUs, punt policers, tunnels of every mode
// (ip4ip6, ip6ip6, ipip, sit) as dataplane::add_tunnel accepts them, VLAN sub-interfaces
// (802.1Q and QinQ on the input port, 802.1Q on another; each with or without a TAP, as a
// tunnel's underlay or a flow's output too), tagged frames for them, and flows of all four
// actions, with and without NAT, whose keys are taken from the burst's own frames so that
// lookups hit (decapsulation flows keyed as dataplane::resolve_flow() keys them, by their
// tunnel). Built with ASan and UBSan (test/fuzz/Makefile); a finding is a crash, a sanitizer
// report or one of the oracles below aborting.
//
// Oracles, besides the sanitizers and the guard pages:
//  - parse_fast() and parse_packet() agree on the key (all 48 bytes), the meta and the hash
//    of every packet the fast parser accepts, segmented as the burst has it and contiguous;
//  - every packet of the burst ends up exactly once in a tx buffer of an active port or in
//    the drop list;
//  - nothing is written in front of a packet's data (front pattern of guarded_mbufs), and
//    nothing after it (guard page);
//  - a punted packet reaches its slow path unmodified (without its Ethernet header on a TUN)
//    but for its VLAN tags, popped by vlan_pop() (which the pcap tests judge with scapy);
//    a tunnel's packet goes to that tunnel's TUN (same mode, from its remote to its local
//    address) when it has one, as the inner packet with only the RFC 6040 ECN fix-up;
//  - a forwarded packet had a live flow for its key, leaves by that flow's port (the ethdev
//    port under it for a VLAN, with the VLAN's tags and PCP) with its Ethernet header (and
//    EtherType of the inner family after decapsulation) or its tunnel's outer headers (the
//    template's bytes but for the per-packet fields, which must be what the tunnel's
//    settings and the inner packet make them; a valid outer IPv4 checksum), with exactly its
//    IP packet (no padding), TTL or hop limit one less, ECN as RFC 6040 at a tunnel exit,
//    IPv4 header and TCP/UDP checksums still valid where they were;
//  - a decapsulation flow forwards only packets of its own tunnel: an ip6ip6 packet whose
//    outer addresses only share the key's fold with the tunnel's is not its flow's.
//
// Input format (test/fuzz/make_corpus.py writes seeds in it):
//   n: u8, frames in the burst: n % BURST_SIZE + 1
//   n times: length: u16 big endian, frame: that many bytes (fewer at the end of the input)
//   choices: the rest, consumed from the end backwards (FuzzedDataProvider's integers);
//            when they run out every choice is 0, which is always the ordinary case.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dp/flowtable.h"
#include "dp/memory.h"
#include "dp/observation.h"
#include "dp/packet.h"
#include "dp/pipeline.h"
#include "dp/snapshot.h"
#include "dp/trace.h"
#include "dp/tunnel.h"
#include "dp/vlan.h"
#include "testing/guarded_mbufs.h"

using namespace fg;
using fg::testing::guarded_mbufs;

namespace {

// The world: fast-path ports 0..3; port p's TAP is TAP_BASE + p, a TUN-like (L3) slow path
// for it L3_BASE + p; tunnel t's TUN is TUN_BASE + t.
constexpr uint16_t FAST_PORTS = 4;
constexpr uint16_t TAP_BASE = 4;
constexpr uint16_t L3_BASE = 8;
constexpr uint16_t TUN_BASE = 12;
constexpr uint16_t TUNNELS = 4;
// VLANs, when a burst has them: 802.1Q 100 (VLAN_Q), 802.1ad 300 (VLAN_AD) with 802.1Q 7
// inside (VLAN_QINQ) on the input port, 802.1Q 200 on another port (VLAN_OTHER); VLAN v's
// TAP is VLAN_TAP_BASE + v.
constexpr uint16_t VLAN_Q = MAX_ETHPORTS;
constexpr uint16_t VLAN_AD = MAX_ETHPORTS + 1;
constexpr uint16_t VLAN_QINQ = MAX_ETHPORTS + 2;
constexpr uint16_t VLAN_OTHER = MAX_ETHPORTS + 3;
constexpr uint16_t VLANS = 4;
constexpr uint16_t VLAN_TAP_BASE = TUN_BASE + TUNNELS;
static_assert(VLAN_TAP_BASE + VLANS <= MAX_ETHPORTS, "the world's ethdev ports fit");
constexpr uint32_t FLOW_CAPACITY = 128;
constexpr uint32_t NOW_S = 1000;
constexpr uint64_t NOW_TSC = 1000000000;

struct frame_in;
void describe(const frame_in &f, size_t i);
// The packet the checks are looking at, described with any finding.
const frame_in *checking = nullptr;
size_t checking_index = 0;

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...) {
  if (checking != nullptr) describe(*checking, checking_index);
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "pipeline_fuzz: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  abort();
}

void hex(const char *what, const void *p, size_t n) {
  fprintf(stderr, "%s:", what);
  for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", static_cast<const uint8_t *>(p)[i]);
  fprintf(stderr, "\n");
}

// The hash the lookup must get for a key: with the table's own (random) seed.
uint32_t expected_hash(const flowtable &ft, const flow_key &key) { return ft.hash(key); }

// The MAC address of fast-path port p (port_conf::mac), to which frames are addressed most
// of the time.
void port_mac(uint16_t p, uint8_t mac[6]) {
  const uint8_t m[6] = {0x02, 0x00, 0x5e, 0x10, 0x00, static_cast<uint8_t>(p)};
  memcpy(mac, m, 6);
}

// Choices from the end of the input. Every helper maps the value 0 (what an exhausted input
// gives) to the ordinary case.
struct chooser {
  FuzzedDataProvider &fdp;
  unsigned pick(unsigned n) { return fdp.ConsumeIntegralInRange<unsigned>(0, n - 1); }
  bool rarely(unsigned n) { return pick(n) == n - 1; }  // 1 in n, never when exhausted
  template <typename T>
  T any() { return fdp.ConsumeIntegral<T>(); }
  void bytes(uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = any<uint8_t>();
  }
};

uint16_t choose_mtu(chooser &c) {
  switch (c.pick(6)) {
    case 0: return 1500;
    case 1: return 1280;
    case 2: return 9000;
    case 3: return 65535;
    case 4: return 68;
    default: return c.fdp.ConsumeIntegralInRange<uint16_t>(68, 65535);
  }
}

uint16_t choose_headroom(chooser &c) {
  // Around the tunnel headers (40, 48 bytes: the prepend of encapsulation), none at all,
  // odd ones, and the usual RTE_PKTMBUF_HEADROOM first.
  static const uint16_t common[] = {RTE_PKTMBUF_HEADROOM, 0, 1, 2, 39, 40, 41, 47, 48, 49, 64, 256};
  unsigned i = c.pick(sizeof(common) / sizeof(common[0]) + 1);
  if (i < sizeof(common) / sizeof(common[0])) return common[i];
  return c.fdp.ConsumeIntegralInRange<uint16_t>(0, 512);
}

// Segment lengths for a frame (empty: one segment). Real receive paths chain segments
// that each hold data, so no segment is empty.
std::vector<uint32_t> choose_segments(chooser &c, uint32_t len) {
  unsigned n = c.rarely(3) ? 2 + c.pick(3) : 1;
  if (n == 1 || len < n) return {};
  std::vector<uint32_t> lens;
  uint32_t left = len;
  for (unsigned i = 0; i + 1 < n; i++) {
    uint32_t l = c.fdp.ConsumeIntegralInRange<uint32_t>(1, left - (n - 1 - i));
    lens.push_back(l);
    left -= l;
  }
  lens.push_back(left);
  return lens;
}

uint16_t ip_checksum(const uint8_t *p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

bool ip4_header_ok(const uint8_t *ip) { return ip_checksum(ip, IP4_HLEN) == 0; }

// The length of a frame's VLAN tags (TPIDs 0x8100 and 0x88a8 after the MAC addresses), up
// to one more than vlan_pop() takes, that are followed by an EtherType.
size_t tags_len(const std::vector<uint8_t> &f) {
  size_t len = 0;
  while (len <= VLAN_MAX_TAGS * VLAN_HLEN && f.size() >= ETH_HLEN + len + VLAN_HLEN &&
         is_vlan_tpid(detail::load_be16(f.data() + ETH_ADDRS_LEN + len)))
    len += VLAN_HLEN;
  return len;
}

// Most frames get correct IPv4 header checksums (a mutated header seldom has one), so that
// they get past the check and into the lookup and the actions: the outer IPv4 header, and
// the inner one of IPv4 in IPv4 or in IPv6 (after the tunnel's destination options, when
// there).
void fix_ip4_checksums(std::vector<uint8_t> &f) {
  // A tagged frame (a seed of a VLAN world, or a mutation): its headers after the tags, as
  // vlan_pop() leaves them.
  const size_t tags = tags_len(f);
  if (tags != 0) {
    const std::vector<uint8_t> t(f.begin() + ETH_ADDRS_LEN, f.begin() + static_cast<long>(ETH_ADDRS_LEN + tags));
    f.erase(f.begin() + ETH_ADDRS_LEN, f.begin() + static_cast<long>(ETH_ADDRS_LEN + tags));
    fix_ip4_checksums(f);
    f.insert(f.begin() + ETH_ADDRS_LEN, t.begin(), t.end());
    return;
  }
  auto fix = [&](size_t off) {
    if (f.size() < off + IP4_HLEN || (f[off] >> 4) != 4) return false;
    size_t ihl = (f[off] & 0x0f) * 4u;
    if (ihl < IP4_HLEN || f.size() < off + ihl) return false;
    f[off + 10] = f[off + 11] = 0;
    uint16_t sum = ip_checksum(&f[off], ihl);
    f[off + 10] = static_cast<uint8_t>(sum >> 8);
    f[off + 11] = static_cast<uint8_t>(sum);
    return true;
  };
  if (f.size() < ETH_HLEN) return;
  uint16_t type = static_cast<uint16_t>(f[12] << 8 | f[13]);
  if (type == RTE_ETHER_TYPE_IPV4) {
    // ipip: the inner header has a checksum of its own (the outer one does not cover it).
    if (fix(ETH_HLEN) && f[ETH_HLEN + 9] == IPPROTO_IPIP) fix(ETH_HLEN + (f[ETH_HLEN] & 0x0f) * 4u);
    return;
  }
  if (type != RTE_ETHER_TYPE_IPV6 || f.size() < ETH_HLEN + IP6_HLEN) return;
  uint8_t nh = f[ETH_HLEN + 6];
  if (nh == IPPROTO_IPIP) {
    fix(ETH_HLEN + IP6_HLEN);
    return;
  }
  if (nh == IPPROTO_DSTOPTS_HDR && f.size() >= ETH_HLEN + IP6_HLEN + 2)
    fix(ETH_HLEN + IP6_HLEN + (f[ETH_HLEN + IP6_HLEN + 1] + 1u) * 8);
}

// Whether the TCP/UDP checksum of the IP packet at ip (IPv4 without options, or IPv6 without
// extension headers, as the fast path forwards them) is valid; UDP over IPv4 without one
// counts as not valid (there is nothing to keep valid).
bool l4_checksum_ok(const uint8_t *ip, uint32_t l3_len, bool v6, uint8_t proto) {
  uint32_t hlen = v6 ? IP6_HLEN : IP4_HLEN;
  if (l3_len < hlen) return false;
  uint32_t l4_len = l3_len - hlen;
  const uint8_t *l4 = ip + hlen;
  if (proto == IPPROTO_UDP && !v6 && l4_len >= 8 && l4[6] == 0 && l4[7] == 0) return false;
  uint32_t sum = 0;
  const uint8_t *addrs = ip + (v6 ? 8 : 12);
  unsigned addr_len = v6 ? 32 : 8;
  for (unsigned i = 0; i < addr_len; i += 2) sum += static_cast<uint32_t>(addrs[i] << 8 | addrs[i + 1]);
  sum += proto;
  sum += l4_len & 0xffff;
  sum += l4_len >> 16;
  return ip_checksum(l4, l4_len, sum) == 0;
}

struct heap_free {
  void operator()(void *p) const { free(p); }
};

struct installed_flow {
  flow_key key;
  uint32_t idx;
  uint8_t action;
  uint16_t out;  // output port
  const adjacency *adj;
  const tunnel *tun;    // ENCAP: the tunnel the packets go into
  const tunnel *decap;  // DECAP: the tunnel the flow is of (flow_entry::tunnel)
  bool nat;
  uint8_t installed_state;  // flow_state bits before the burst
};

struct frame_in {
  std::vector<uint8_t> bytes;  // as received, after addressing
  // The frame as the pipeline sees it, after vlan_pop() (its bytes without their tags, on
  // its logical port), or bytes and the input port when the port has no VLANs.
  std::vector<uint8_t> seen;
  uint16_t port;
  uint16_t headroom;
  std::vector<uint32_t> segments;
  rte_mbuf *m = nullptr;
  // parse_packet() over the frame in one segment, for the flows and the expectations.
  verdict whole_verdict;
  flow_key key;
  pkt_meta meta;
};

// How a frame was received, printed with every finding about it.
void describe(const frame_in &f, size_t i) {
  fprintf(stderr, "packet %zu: %zu bytes (%zu after vlan_pop, on port %u), headroom %u, segments", i, f.bytes.size(),
          f.seen.size(), f.port, f.headroom);
  if (f.segments.empty()) fprintf(stderr, " none");
  for (uint32_t l : f.segments) fprintf(stderr, " %u", l);
  fprintf(stderr, "\n");
  hex("frame", f.bytes.data(), f.bytes.size());
}

// The tunnel mode of a frame that parse_packet() found encapsulated (meta.outer_len != 0),
// or 0: read from the outer header alone, the inner one being maybe what was wrong with it.
// Here and below a frame's headers are read from what the pipeline saw (frame_in::seen,
// after vlan_pop()): a tunnel's underlay may be a VLAN.
uint8_t frame_mode(const frame_in &f) {
  if (f.meta.outer_len == 0) return 0;
  const uint8_t *ip = f.seen.data() + ETH_HLEN;
  if (f.seen[12] == 0x08 && f.seen[13] == 0x00) return ip[9] == IPPROTO_IPIP ? TUNNEL_IPIP : TUNNEL_SIT;
  const uint8_t nh = ip[6] == IPPROTO_DSTOPTS_HDR ? ip[IP6_HLEN] : ip[6];
  return nh == IPPROTO_IPIP ? TUNNEL_IP4IP6 : TUNNEL_IP6IP6;
}

// The outer source and destination address of a frame of that mode, in its outer family.
const uint8_t *frame_outer_src(const frame_in &f, uint8_t mode) {
  return f.seen.data() + ETH_HLEN + (tunnel_outer_family(mode) == 4 ? 12 : 8);
}
const uint8_t *frame_outer_dst(const frame_in &f, uint8_t mode) {
  return f.seen.data() + ETH_HLEN + (tunnel_outer_family(mode) == 4 ? 16 : 24);
}

// Whether a tunnelled frame is tunnel t's: its mode, from t's remote to t's local address.
bool frame_of_tunnel(const frame_in &f, const tunnel &t) {
  const uint8_t mode = frame_mode(f);
  return mode != 0 && t.mode == mode && tunnel_matches(t, frame_outer_src(f, mode), frame_outer_dst(f, mode));
}

// The traffic class of an IPv6 header, the TOS of an IPv4 one.
uint8_t ip_tos(const uint8_t *ip) {
  return (ip[0] >> 4) == 4 ? ip[1] : static_cast<uint8_t>((ip[0] & 0x0f) << 4 | ip[1] >> 4);
}

// Byte 1 of an inner IP header after the tunnel exit: RFC 6040 section 4.2 (outer CE marks
// an ECN-capable inner packet CE, outer ECT(1) turns an inner ECT(0) into ECT(1)), written
// here from the RFC's table, not from the code under test. The ECN field is the low two
// bits of byte 1 in IPv4, bits 4-5 of it in IPv6. *drop: a not-ECT packet under CE.
uint8_t ecn_exit_byte1(const uint8_t *inner, uint8_t outer_tos, bool *drop) {
  const bool v4 = (inner[0] >> 4) == 4;
  const unsigned shift = v4 ? 0 : 4;
  const uint8_t in_ecn = ip_tos(inner) & ECN_MASK, out_ecn = outer_tos & ECN_MASK;
  uint8_t ecn = in_ecn;
  *drop = in_ecn == ECN_NOT_ECT && out_ecn == ECN_CE;
  if (in_ecn != ECN_NOT_ECT && out_ecn == ECN_CE) ecn = ECN_CE;
  else if (in_ecn == ECN_ECT_0 && out_ecn == ECN_ECT_1) ecn = ECN_ECT_1;
  return static_cast<uint8_t>((inner[1] & ~(ECN_MASK << shift)) | ecn << shift);
}

// The differential oracle: whatever parse_fast() accepts, parse_packet() must accept with
// the same key (all 48 bytes), meta and hash.
// The receiving port's context, as process_burst() builds it.
// mac_port: the port whose address in_port has (a VLAN has its parent's).
rx_context rx_of(const flowtable &ft, uint16_t in_port, uint16_t mac_port) {
  uint8_t mac[6];
  port_mac(mac_port, mac);
  return rx_context{port_mac_word(mac), ft.seed(), in_port, false};
}

void check_parsers_agree(const flowtable &ft, const rte_mbuf *m, uint16_t in_port, uint16_t mac_port, const char *form) {
  const rx_context rx = rx_of(ft, in_port, mac_port);
  flow_key fast_key, key;
  pkt_meta fast_meta, meta;
  uint32_t fast_hash = 0;
  // Bytes the fast parser leaves unwritten would show as this pattern.
  memset(&fast_key, 0xee, sizeof(fast_key));
  memset(&fast_meta, 0xee, sizeof(fast_meta));
  // Both fast parsers, as process_burst() tries them: the inline one, then the other tunnel modes'.
  if (!parse_fast(m, rx, &fast_key, &fast_meta, &fast_hash) &&
      !detail::parse_fast_tunnel(m, rx, &fast_key, &fast_meta, &fast_hash))
    return;
  verdict v = parse_packet(m, in_port, &rx.mac, &key, &meta);
  if (!v.is_ok()) {
    hex("frame", rte_pktmbuf_mtod(m, const uint8_t *), m->data_len);
    fail("%s: parse_fast accepted a frame that parse_packet %s (reason %u)", form,
         v.kind == verdict::PUNT ? "punts" : "drops", v.reason);
  }
  if (memcmp(&fast_key, &key, sizeof(key)) != 0 || memcmp(&fast_meta, &meta, sizeof(meta)) != 0 ||
      fast_hash != expected_hash(ft, key)) {
    hex("frame", rte_pktmbuf_mtod(m, const uint8_t *), m->data_len);
    hex("parse_fast key  ", &fast_key, sizeof(fast_key));
    hex("parse_packet key", &key, sizeof(key));
    hex("parse_fast meta  ", &fast_meta, sizeof(fast_meta));
    hex("parse_packet meta", &meta, sizeof(meta));
    fail("%s: parsers disagree (hash %08x, expected %08x)", form, fast_hash, expected_hash(ft, key));
  }
}

std::vector<uint8_t> packet_bytes(const rte_mbuf *m) {
  std::vector<uint8_t> out;
  for (const rte_mbuf *s = m; s != nullptr; s = s->next) {
    const uint8_t *p = rte_pktmbuf_mtod(s, const uint8_t *);
    out.insert(out.end(), p, p + s->data_len);
  }
  return out;
}

// The chain must say what it holds: a PMD trusts nb_segs and pkt_len, and some wedge their
// tx queue on an empty segment.
void check_chain(const rte_mbuf *m, size_t i) {
  uint32_t sum = 0;
  uint16_t segs = 0;
  for (const rte_mbuf *s = m; s != nullptr; s = s->next) {
    if (static_cast<uint32_t>(s->data_off) + s->data_len > s->buf_len)
      fail("packet %zu: segment %u data (%u + %u) beyond its buffer (%u)", i, segs, s->data_off, s->data_len,
           s->buf_len);
    if (s->data_len == 0 && m->nb_segs > 1) fail("packet %zu: segment %u of the chain is empty", i, segs);
    sum += s->data_len;
    segs++;
  }
  if (segs != m->nb_segs || sum != m->pkt_len)
    fail("packet %zu: chain of %u segments, %u bytes says nb_segs %u, pkt_len %u", i, segs, sum, m->nb_segs,
         m->pkt_len);
}

struct world {
  flowtable ft;
  std::unique_ptr<snapshot, heap_free> snap;
  std::unique_ptr<adjacency, heap_free> adj;
  std::unique_ptr<worker_stats, heap_free> stats;
  std::unique_ptr<rte_ring, heap_free> ring;
  pipeline pl{};  // zeroed, as the worker's (rte_zmalloc)
  uint16_t n_adj = 0;
  std::vector<installed_flow> flows;

  const installed_flow *flow_of(const flow_key &k) const {
    for (const installed_flow &f : flows)
      if (memcmp(&f.key, &k, sizeof(k)) == 0) return &f;
    return nullptr;
  }
};


void build_ports(world &w, chooser &c, uint16_t in_port) {
  snapshot &s = *w.snap;
  for (auto &p : s.port) p.slowpath = PORT_NONE;
  for (auto &t : s.tun) t.slowpath_port = PORT_NONE;
  s.count_flows = c.rarely(4) ? 0 : 1;
  for (uint16_t p = 0; p < FAST_PORTS; p++) {
    port_conf &pc = s.port[p];
    pc.active = p == in_port || !c.rarely(8);  // an output may be going away
    pc.mtu = choose_mtu(c);
    uint8_t mac[6];
    port_mac(p, mac);
    pc.mac = port_mac_word(mac);
    pc.multiseg = !c.rarely(4);
    switch (c.pick(4)) {
      case 0:
      case 1: pc.slowpath = static_cast<uint16_t>(TAP_BASE + p); break;
      case 2: pc.slowpath = static_cast<uint16_t>(L3_BASE + p); break;
      default: pc.slowpath = PORT_NONE; break;
    }
    if (c.rarely(8)) {
      pc.punt_cost = c.fdp.ConsumeIntegralInRange<uint64_t>(1, 2 * NOW_TSC);
      pc.punt_burst = c.fdp.ConsumeIntegralInRange<uint64_t>(0, 4 * NOW_TSC);
    }
    for (uint16_t sp : {static_cast<uint16_t>(TAP_BASE + p), static_cast<uint16_t>(L3_BASE + p)}) {
      s.port[sp].active = !c.rarely(16);
      s.port[sp].mtu = 65535;
      s.port[sp].l3 = sp >= L3_BASE;
      s.port[sp].multiseg = 1;  // TAP and TUN devices take chains
    }
  }
}

// The tunnel of the other inner family over the same underlay (ipip and sit, ip4ip6 and
// ip6ip6): between the same two addresses, a tunnel of its own (same_tunnel).
uint8_t other_inner_mode(uint8_t mode) {
  switch (mode) {
    case TUNNEL_IP4IP6: return TUNNEL_IP6IP6;
    case TUNNEL_IP6IP6: return TUNNEL_IP4IP6;
    case TUNNEL_IPIP: return TUNNEL_SIT;
    default: return TUNNEL_IPIP;
  }
}

// Change an IPv6 remote address so that outer_fold6(remote, local) stays what it was: x in
// the first word, rotated back by 16 in the second, cancel out in the fold. The address's
// first byte (multicast or not) is kept. An ip6ip6 tunnel with such a remote shares its
// flows' keys with the packets of the tunnel whose remote it was (flow_key.h).
void fold_twin(uint8_t remote[16], uint64_t x) {
  x &= ~uint64_t{0xff};
  if (x == 0) x = 0x100;
  uint64_t w[2];
  memcpy(w, remote, 16);
  w[0] ^= x;
  w[1] ^= rotl64(x, 48);  // rotr 16
  memcpy(remote, w, 16);
}

// VLAN sub-interfaces, as dataplane::add_vlan() builds them, with or without a TAP each.
void build_vlans(world &w, chooser &c, uint16_t in_port) {
  snapshot &s = *w.snap;
  const uint16_t other = static_cast<uint16_t>((in_port + 1 + c.pick(FAST_PORTS - 1)) % FAST_PORTS);
  const port_conf &parent = s.port[in_port];
  vlan_conf_build(s.port[VLAN_Q], s, in_port, 100, false, static_cast<uint8_t>(c.pick(8)), 0, parent.mac);
  vlan_conf_build(s.port[VLAN_AD], s, in_port, 300, true, 0, c.rarely(4) ? 1280 : 0, parent.mac);
  vlan_conf_build(s.port[VLAN_QINQ], s, VLAN_AD, 7, false, static_cast<uint8_t>(c.pick(8)), 0, parent.mac);
  vlan_conf_build(s.port[VLAN_OTHER], s, other, 200, false, static_cast<uint8_t>(c.pick(8)), 0, s.port[other].mac);
  for (uint16_t v = 0; v < VLANS; v++) {
    // dataplane::remove_port() removes a port's VLANs before the port: a VLAN is never
    // active over an inactive port.
    port_conf &vc = s.port[MAX_ETHPORTS + v];
    vc.active = s.port[vc.tx_port].active;
    if (c.rarely(3)) continue;
    const uint16_t tap = static_cast<uint16_t>(VLAN_TAP_BASE + v);
    s.port[MAX_ETHPORTS + v].slowpath = tap;
    s.port[tap].active = 1;
    s.port[tap].mtu = 65535;
    s.port[tap].multiseg = 1;
  }
  derive_vlans(s);  // as dataplane::derive() does
}

// A flow's or a tunnel's output: a fast-path port, or sometimes a VLAN when there are any.
uint16_t choose_out_port(chooser &c, const snapshot &s) {
  if (s.n_vlans != 0 && c.rarely(3)) return static_cast<uint16_t>(MAX_ETHPORTS + c.pick(VLANS));
  return static_cast<uint16_t>(c.pick(FAST_PORTS));
}

// A frame of a burst on a port with VLANs: sometimes a tag (or two) of a VLAN the port has,
// or of one it has not, inserted after the MAC addresses.
void add_tags(chooser &c, std::vector<uint8_t> &f) {
  if (f.size() < ETH_ADDRS_LEN) return;
  static const uint8_t tags[][8] = {
      {0x81, 0x00, 0x00, 100},                      // VLAN_Q
      {0x88, 0xa8, 0x01, 0x2c, 0x81, 0x00, 0x00, 7},  // VLAN_QINQ
      {0x88, 0xa8, 0x01, 0x2c},                     // VLAN_AD
      {0x81, 0x00, 0x03, 0xe7},                     // 999: unknown
      {0x81, 0x00, 0x00, 100, 0x81, 0x00, 0x00, 5},  // one tag too many
  };
  static const size_t lens[] = {4, 8, 4, 4, 8};
  // 0, the ordinary case, leaves the frame untagged: the port's own.
  const unsigned pick = c.pick(8);
  if (pick == 0 || pick > 5) return;
  const unsigned k = pick - 1;
  std::vector<uint8_t> t(tags[k], tags[k] + lens[k]);
  t[0] = c.rarely(8) ? c.any<uint8_t>() : t[0];
  t[2] = static_cast<uint8_t>(t[2] | (c.pick(8) << 5));  // a PCP
  f.insert(f.begin() + ETH_ADDRS_LEN, t.begin(), t.end());
}

void build_tunnels(world &w, chooser &c, const std::vector<frame_in> &frames) {
  snapshot &s = *w.snap;
  static const uint8_t modes[] = {TUNNEL_IP4IP6, TUNNEL_IP6IP6, TUNNEL_IPIP, TUNNEL_SIT};
  for (uint16_t t = 0; t < TUNNELS; t++) {
    if (c.rarely(4)) continue;
    tunnel_params p{};
    // Endpoints from a tunnelled frame of the burst, in its mode (so that its lookups and
    // punts find the tunnel), or the reference scenario's in any mode. The ordinary world
    // takes tunnel t from frame t: a burst of several modes gets a tunnel for each.
    const unsigned n_frames = static_cast<unsigned>(frames.size());
    const frame_in &f = frames[(t + c.pick(n_frames)) % n_frames];
    const uint8_t fmode = frame_mode(f);
    if (fmode != 0 && !c.rarely(4)) {
      p.mode = fmode;
      const size_t n = tunnel_outer_family(fmode) == 4 ? 4 : 16;
      memcpy(p.remote, frame_outer_src(f, fmode), n);
      memcpy(p.local, frame_outer_dst(f, fmode), n);
      if (c.rarely(8))
        p.mode = other_inner_mode(p.mode);  // its packets are not the frame's
      else if (p.mode == TUNNEL_IP6IP6 && c.rarely(4))
        fold_twin(p.remote, c.any<uint64_t>());  // the frame's key, not its addresses
    } else {
      p.mode = modes[c.pick(4)];
      if (tunnel_outer_family(p.mode) == 6) {
        static const uint8_t local[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        memcpy(p.local, local, 16);
        memcpy(p.remote, local, 16);
        p.remote[15] = static_cast<uint8_t>(2 + t);
      } else {
        static const uint8_t local[4] = {192, 0, 2, 1};  // TEST-NET-1, as make_corpus.py
        memcpy(p.local, local, 4);
        memcpy(p.remote, local, 4);
        p.remote[3] = static_cast<uint8_t>(2 + t);
      }
    }
    const bool outer4 = tunnel_outer_family(p.mode) == 4;
    // dataplane::add_tunnel (check_tunnel_params) refuses endpoints that are not unicast.
    if (outer4 ? !tunnel_endpoint4_ok(p.local) || !tunnel_endpoint4_ok(p.remote)
               : !tunnel_endpoint_ok(p.local) || !tunnel_endpoint_ok(p.remote))
      continue;
    // ...and a second tunnel of one mode between the same addresses (same_tunnel).
    bool duplicate = false;
    for (uint16_t o = 0; o < t; o++) {
      const tunnel &other = s.tun[o];
      duplicate = duplicate || (other.active && other.mode == p.mode && memcmp(other.local(), p.local, other.address_len()) == 0 &&
                                memcmp(other.remote(), p.remote, other.address_len()) == 0);
    }
    if (duplicate) continue;
    if (outer4) {
      // An IPv4 underlay has no encapsulation limit or flow label (check_tunnel_params).
      p.encap_limit = -1;
      p.pmtudisc = !c.rarely(3);  // Linux's default: DF on every packet
    } else {
      p.encap_limit = c.rarely(3) ? -1 : static_cast<int16_t>(c.pick(256) ^ 4);
      p.flowlabel = c.any<uint32_t>() & 0xfffff;
      p.flowlabel_hash = c.rarely(2);
    }
    p.hop_limit = c.rarely(4) ? 0 : static_cast<uint8_t>(64 ^ c.pick(256));  // 0: inherit
    p.tclass = c.rarely(3) ? -1 : static_cast<int16_t>(c.pick(256));
    const uint16_t overhead = outer4 ? IP4_HLEN : IP6_HLEN + (p.encap_limit >= 0 ? TUNNEL_DSTOPT_LEN : 0);
    p.mtu = c.pick(3) == 0 ? static_cast<uint16_t>(1500 - overhead) : choose_mtu(c);
    p.port = choose_out_port(c, s);
    c.bytes(p.dst_mac, 6);
    port_mac(p.port, p.src_mac);
    p.slowpath_port = c.rarely(3) ? PORT_NONE : static_cast<uint16_t>(TUN_BASE + t);
    tunnel_build(&s.tun[t], p);
    if (p.slowpath_port != PORT_NONE) {
      port_conf &tun_port = s.port[p.slowpath_port];
      tun_port.active = 1;
      tun_port.l3 = 1;
      tun_port.mtu = 65535;
      tun_port.multiseg = 1;
    }
  }
  derive_tunnel_mtus(s);  // as dataplane::derive() does for every published snapshot
}

// The key of a decapsulation flow of tunnel t as dataplane::resolve_flow() builds it: the
// inner packet's part of k, and tunnel_key_outer() of the tunnel.
flow_key decap_key(const tunnel &t, const flow_key &k) {
  flow_key d = k;
  if (flow_l3_is_ipv4(k.l3proto)) {
    memset(d.ip4.outer_src, 0, sizeof(d.ip4.outer_src));
    memset(d.ip4.outer_dst, 0, sizeof(d.ip4.outer_dst));
  } else {
    memset(d.ip6.outer, 0, sizeof(d.ip6.outer));
  }
  tunnel_key_outer(t, &d);
  return d;
}

// The flow actions that dataplane::validate_flow accepts for a key: forward plain IPv4 or
// IPv6, or encapsulate it into a tunnel of its family; decapsulate a tunnelled packet by a
// tunnel whose decap key is its key (for ip6ip6 that may be a tunnel whose addresses only
// share the fold: the fast path must then not decapsulate); else none.
uint8_t choose_action(chooser &c, const snapshot &s, const flow_key &k, uint16_t *tunnel_id) {
  if (flow_key_is_tunnelled(k)) {
    uint16_t match[TUNNELS];
    unsigned n = 0;
    for (uint16_t t = 0; t < TUNNELS; t++) {
      if (!s.tun[t].active || s.tun[t].mode != k.l3proto) continue;
      const flow_key d = decap_key(s.tun[t], k);
      if (memcmp(&d, &k, sizeof(k)) == 0) match[n++] = t;
    }
    if (n == 0) return FLOW_ACT_NONE;
    *tunnel_id = match[c.pick(n)];
    return FLOW_ACT_DECAP;
  }
  if (c.pick(2) == 1) {
    uint16_t t = static_cast<uint16_t>(c.pick(TUNNELS));
    if (s.tun[t].active && s.tun[t].inner_ipv4() == flow_l3_is_ipv4(k.l3proto)) {
      *tunnel_id = t;
      return FLOW_ACT_ENCAP;
    }
  }
  return k.l3proto == FLOW_L3_IPV6 ? FLOW_ACT_FWD6 : FLOW_ACT_FWD4;
}

void install_flows(world &w, chooser &c, const std::vector<frame_in> &frames) {
  const snapshot &s = *w.snap;
  uint32_t prev = FLOW_NONE;
  for (const frame_in &f : frames) {
    if (!f.whole_verdict.is_ok() || w.flow_of(f.key) != nullptr || c.rarely(4)) continue;
    installed_flow fl{};
    uint16_t tunnel_id = TUNNEL_NONE;
    fl.action = choose_action(c, s, f.key, &tunnel_id);
    if (fl.action == FLOW_ACT_NONE) continue;
    fl.key = fl.action == FLOW_ACT_DECAP ? decap_key(s.tun[tunnel_id], f.key) : f.key;
    uint32_t idx = w.ft.alloc();
    if (idx == FLOW_NONE) break;
    flow_entry &e = w.ft.entry(idx);
    flow_entry_init(e, fl.key, fl.action, FLOW_NONE, NOW_S - c.pick(3));
    if (fl.action == FLOW_ACT_DECAP) {
      e.tunnel = tunnel_id;
      fl.decap = &s.tun[tunnel_id];
    }
    if (c.rarely(3)) {
      flow_nat_spec nat;
      nat.flags = static_cast<uint8_t>(1 + c.pick(15));
      c.bytes(nat.src, flow_l3_is_ipv4(f.key.l3proto) ? 4 : 16);
      c.bytes(nat.dst, flow_l3_is_ipv4(f.key.l3proto) ? 4 : 16);
      nat.sport = c.fdp.ConsumeIntegralInRange<uint16_t>(1, 65535);  // validate_flow: ports 1..65535
      nat.dport = c.fdp.ConsumeIntegralInRange<uint16_t>(1, 65535);
      w.ft.set_nat(idx, nat);
      fl.nat = true;
    }
    if (fl.action == FLOW_ACT_ENCAP) {
      e.target = tunnel_id;
      fl.tun = &s.tun[tunnel_id];
      fl.out = fl.tun->port;
    } else {
      adjacency &a = w.adj.get()[w.n_adj];
      c.bytes(a.dst_mac, 6);
      a.port = choose_out_port(c, s);
      port_mac(a.port, a.src_mac);
      e.target = w.n_adj++;
      fl.adj = &a;
      fl.out = a.port;
    }
    if (c.rarely(16)) e.state |= FLOW_STATE_TEARDOWN;
    if (c.rarely(8)) e.state |= FLOW_STATE_CLOSING;
    // Sometimes the reply direction of the flow before: state bits go to both.
    if (prev != FLOW_NONE && c.rarely(2)) {
      e.pair = prev;
      w.ft.entry(prev).pair = idx;
    }
    if (w.ft.publish(idx) != 0) {
      w.ft.discard(idx);
      continue;
    }
    fl.idx = idx;
    fl.installed_state = e.state;
    w.flows.push_back(fl);
    prev = idx;
  }
}

// The outer headers of an encapsulated packet: the template's bytes except the fields
// filled per packet, and those as Linux's ip6_tnl_xmit() and ip_tunnel_xmit() fill them,
// worked out here from the inner packet as it came in and the tunnel's settings.
void check_encap(const tunnel &t, const frame_in &f, const std::vector<uint8_t> &out, size_t i) {
  const uint8_t *ip_in = f.seen.data() + f.meta.l3_off;
  const bool inner4 = flow_l3_is_ipv4(f.key.l3proto);
  const uint8_t inner_tos = ip_tos(ip_in);
  const uint8_t tclass = (t.flags & TUNNEL_F_INHERIT_TCLASS) ? inner_tos : t.tclass;
  // RFC 6040 at the entry (normal mode): the inner ECN field, CE as ECT(0).
  const uint8_t inner_ecn = inner_tos & ECN_MASK;
  const uint8_t want_tos = static_cast<uint8_t>((tclass & ~ECN_MASK) | (inner_ecn == ECN_CE ? ECN_ECT_0 : inner_ecn));
  const uint8_t want_ttl = (t.flags & TUNNEL_F_INHERIT_HOPLIMIT) ? static_cast<uint8_t>(ip_in[inner4 ? 8 : 7] - 1) : t.hop_limit;
  const uint8_t *o = out.data() + ETH_HLEN;
  const uint16_t l3_len = f.meta.l3_len;
  if (t.outer_ipv4()) {
    // Per packet: TOS (1), total length (2-3), identification (4-5), DF when inherited (6),
    // TTL (8), checksum (10-11).
    const bool df_inherit = (t.flags & TUNNEL_F_DF_INHERIT) != 0;
    for (uint32_t b = 0; b < t.tmpl_len; b++) {
      const uint32_t h = b - ETH_HLEN;
      const bool per_packet = b >= ETH_HLEN && (h == 1 || h == 2 || h == 3 || h == 4 || h == 5 || h == 8 || h == 10 ||
                                                h == 11 || (h == 6 && df_inherit));
      if (!per_packet && out[b] != t.tmpl[b]) fail("packet %zu: outer IPv4 header byte %u differs from the template", i, b);
    }
    if (o[1] != want_tos) fail("packet %zu: outer TOS %#x, expected %#x", i, o[1], want_tos);
    const uint16_t total = static_cast<uint16_t>(o[2] << 8 | o[3]);
    if (total != l3_len + IP4_HLEN) fail("packet %zu: outer total length %u for an inner packet of %u", i, total, l3_len);
    if (df_inherit) {
      const uint8_t want_df = inner4 && (ip_in[6] & 0x40) ? 0x40 : 0;
      if (o[6] != want_df) fail("packet %zu: outer flags byte %#x, expected DF %s", i, o[6], want_df ? "from the inner packet" : "clear");
    }
    if (o[8] != want_ttl) fail("packet %zu: outer TTL %u, expected %u", i, o[8], want_ttl);
    if (!ip4_header_ok(o)) {
      hex("outer", o, IP4_HLEN);
      fail("packet %zu: outer IPv4 header checksum wrong", i);
    }
    return;
  }
  // Per packet: traffic class and flow label (IPv6 bytes 0-3), payload length (4-5), hop
  // limit (7).
  for (uint32_t b = 0; b < t.tmpl_len; b++) {
    const uint32_t h = b - ETH_HLEN;
    const bool per_packet = b >= ETH_HLEN && (h < 6 || h == 7);
    if (!per_packet && out[b] != t.tmpl[b]) fail("packet %zu: outer IPv6 header byte %u differs from the template", i, b);
  }
  const uint32_t vtc = static_cast<uint32_t>(o[0]) << 24 | o[1] << 16 | o[2] << 8 | o[3];
  const uint32_t want_label = (t.flags & TUNNEL_F_FLOWLABEL_HASH) ? flowlabel_of(f.key) : t.flowlabel;
  if (vtc >> 28 != 6 || ((vtc >> 20) & 0xff) != want_tos || (vtc & 0xfffff) != want_label)
    fail("packet %zu: outer version/class/label %08x, expected traffic class %#x and label %#x", i, vtc, want_tos, want_label);
  const uint16_t payload = static_cast<uint16_t>(o[4] << 8 | o[5]);
  if (payload != l3_len + t.tmpl_len - ETH_HLEN - IP6_HLEN)
    fail("packet %zu: outer payload length %u for an inner packet of %u", i, payload, l3_len);
  if (o[7] != want_ttl) fail("packet %zu: outer hop limit %u, expected %u", i, o[7], want_ttl);
}

// What a forwarded packet must look like, from its input frame and its flow.
void check_forwarded(const world &w, const frame_in &f, const rte_mbuf *m, uint16_t port, size_t i) {
  const installed_flow *fl = f.whole_verdict.is_ok() ? w.flow_of(f.key) : nullptr;
  if (fl == nullptr) fail("packet %zu forwarded to port %u without a flow for its key", i, port);
  // (A flow may be marked during the burst, by a SYN on a closing flow, after forwarding.)
  if (fl->installed_state & FLOW_STATE_TEARDOWN) fail("packet %zu forwarded by a flow marked for teardown", i);
  const port_conf &out_conf = w.snap->port[fl->out];
  const uint16_t ethdev = out_conf.n_tags != 0 ? out_conf.tx_port : fl->out;
  if (port != ethdev) fail("packet %zu forwarded to port %u, its flow's port is %u (ethdev %u)", i, port, fl->out, ethdev);
  // A decapsulation flow takes only its tunnel's packets: for ip6ip6 the key held only a
  // fold of the outer addresses, and a packet that shares it is not the flow's.
  if (fl->decap != nullptr && !frame_of_tunnel(f, *fl->decap))
    fail("packet %zu (mode %u) decapsulated by a flow of tunnel %ld (mode %u), whose packet it is not", i, frame_mode(f),
         static_cast<long>(fl->decap - w.snap->tun), fl->decap->mode);
  const uint16_t l3_len = f.meta.l3_len;
  const uint16_t mtu = fl->tun != nullptr ? fl->tun->effective_mtu : out_conf.mtu;
  if (l3_len > mtu) fail("packet %zu: %u bytes forwarded over an MTU of %u", i, l3_len, mtu);

  std::vector<uint8_t> out = packet_bytes(m);
  if (out_conf.n_tags != 0) {
    // The VLAN's tags after the MAC addresses, with the received PCP or the VLAN's.
    const size_t tags_len = VLAN_HLEN * out_conf.n_tags;
    if (out.size() < ETH_ADDRS_LEN + tags_len) fail("packet %zu: %zu bytes for a VLAN", i, out.size());
    const bool tagged = f.bytes.size() >= ETH_HLEN && is_vlan_tpid(detail::load_be16(f.bytes.data() + ETH_ADDRS_LEN));
    const uint8_t pcp = tagged ? static_cast<uint8_t>(f.bytes[14] >> 5) : out_conf.pcp;
    for (unsigned t = 0; t < out_conf.n_tags; t++) {
      const uint32_t want = out_conf.tags[t] | rte_cpu_to_be_32(uint32_t{pcp} << VLAN_PCP_SHIFT);
      if (memcmp(out.data() + ETH_ADDRS_LEN + VLAN_HLEN * t, &want, VLAN_HLEN) != 0) {
        hex("out", out.data(), std::min<size_t>(out.size(), 24));
        fail("packet %zu: tag %u is not VLAN %u's with PCP %u", i, t, fl->out, pcp);
      }
    }
    out.erase(out.begin() + ETH_ADDRS_LEN, out.begin() + ETH_ADDRS_LEN + static_cast<long>(tags_len));
  }
  const uint8_t *in = f.seen.data();
  const uint32_t hdr = fl->tun != nullptr ? fl->tun->tmpl_len : ETH_HLEN;
  if (out.size() != hdr + l3_len)
    fail("packet %zu: forwarded frame of %zu bytes, expected %u + %u", i, out.size(), hdr, l3_len);
  if (m->nb_segs > 1 && !w.snap->port[port].multiseg) fail("packet %zu: a chain sent by a port without multi-segment tx", i);
  // The (inner) IP packet's family: the key's.
  const bool v6 = !flow_l3_is_ipv4(f.key.l3proto);
  if (fl->tun != nullptr) {
    check_encap(*fl->tun, f, out, i);
  } else {
    if (memcmp(out.data(), fl->adj->dst_mac, 12) != 0) fail("packet %zu: Ethernet addresses not the flow's", i);
    const uint8_t want_type[2] = {static_cast<uint8_t>(v6 ? 0x86 : 0x08), static_cast<uint8_t>(v6 ? 0xdd : 0x00)};
    if (memcmp(out.data() + 12, want_type, 2) != 0) fail("packet %zu: wrong EtherType after forwarding", i);
  }

  // The (inner) IP packet, before and after.
  const uint8_t *ip_in = in + f.meta.l3_off;
  const uint8_t *ip_out = out.data() + hdr;
  const uint8_t proto = f.key.l4proto;
  // Byte 1 holds the ECN field, which only the tunnel exit changes.
  uint8_t want_byte1 = ip_in[1];
  if (fl->decap != nullptr) {
    bool ecn_drop;
    want_byte1 = ecn_exit_byte1(ip_in, ip_tos(in + ETH_HLEN), &ecn_drop);
    if (ecn_drop) fail("packet %zu: a not-ECT packet that arrived with CE was forwarded (RFC 6040: drop)", i);
  }
  if (ip_out[1] != want_byte1) fail("packet %zu: IP header byte 1 is %#x, expected %#x", i, ip_out[1], want_byte1);
  // The rest of the IP header is the input's, less the TTL (and the IPv4 checksum) and the
  // addresses that NAT rewrites.
  const uint32_t ip_hlen = v6 ? IP6_HLEN : IP4_HLEN;
  for (uint32_t b = 0; b < ip_hlen; b++) {
    const bool changes = b == 1 || (v6 ? b == 7 : (b == 8 || b == 10 || b == 11)) || (fl->nat && b >= (v6 ? 8u : 12u));
    if (!changes && ip_out[b] != ip_in[b]) fail("packet %zu: IP header byte %u changed from %#x to %#x", i, b, ip_in[b], ip_out[b]);
  }
  if (v6) {
    if (ip_out[7] != ip_in[7] - 1) fail("packet %zu: hop limit %u after %u", i, ip_out[7], ip_in[7]);
  } else {
    if (ip_out[8] != ip_in[8] - 1) fail("packet %zu: TTL %u after %u", i, ip_out[8], ip_in[8]);
    if (ip4_header_ok(ip_in) && !ip4_header_ok(ip_out)) {
      hex("in ", ip_in, IP4_HLEN);
      hex("out", ip_out, IP4_HLEN);
      fail("packet %zu: IPv4 header checksum broken by forwarding", i);
    }
  }
  if (l4_checksum_ok(ip_in, l3_len, v6, proto) && !l4_checksum_ok(ip_out, l3_len, v6, proto))
    fail("packet %zu: %s checksum broken by forwarding%s", i, proto == IPPROTO_TCP ? "TCP" : "UDP",
         fl->nat ? " with NAT" : "");
  if (!fl->nat) {
    // Without NAT the L4 header and payload are the input's.
    if (memcmp(ip_in + ip_hlen, ip_out + ip_hlen, l3_len - ip_hlen) != 0) fail("packet %zu: payload changed by forwarding", i);
  }
}

// Whether frame f is an ICMPv6 packet too big, which the fast path may answer with an
// ICMPv4 fragmentation needed into an ip4ip6 tunnel's TUN (tunnel_packet_too_big()).
bool packet_too_big(const frame_in &f) {
  const std::vector<uint8_t> &b = f.seen;
  return b.size() >= ETH_HLEN + IP6_HLEN + 8 && b[12] == 0x86 && b[13] == 0xdd && b[ETH_HLEN + 6] == IPPROTO_ICMPV6 &&
         b[ETH_HLEN + IP6_HLEN] == 2;
}

// A punted packet reaches the slow path as it came in, less what the slow path port does
// not take (the Ethernet header on a TUN, the tunnel headers on a tunnel's TUN).
void check_punted(const world &w, const frame_in &f, const rte_mbuf *m, uint16_t port, size_t i) {
  const snapshot &s = *w.snap;
  std::vector<uint8_t> out = packet_bytes(m);
  const std::vector<uint8_t> &in = f.seen;
  const uint16_t in_port = f.port;
  if (in_port == PORT_NONE) fail("packet %zu punted to port %u, though vlan_pop() drops it whole", i, port);
  if (port >= TUN_BASE && port < TUN_BASE + TUNNELS) {
    const uint16_t id = static_cast<uint16_t>(port - TUN_BASE);
    const tunnel &t = s.tun[id];
    if (packet_too_big(f) && t.mode == TUNNEL_IP4IP6 && out.size() >= IP4_HLEN + 8 && out[9] == IPPROTO_ICMP &&
        out[IP4_HLEN] == 3 && out[IP4_HLEN + 1] == 4)
      return;  // its ICMPv4 answer, built in its place
    if (!frame_of_tunnel(f, t))
      fail("packet %zu (mode %u) punted to the TUN of tunnel %u (mode %u), whose packet it is not", i, frame_mode(f), id,
           t.mode);
    // The inner packet, with only the RFC 6040 ECN fix-up at the tunnel exit.
    const uint32_t len = f.meta.l3_len;
    if (len == 0 || out.size() != len) fail("packet %zu: %zu bytes decapsulated to a TUN, expected %u", i, out.size(), len);
    const uint8_t *inner = in.data() + f.meta.l3_off;
    const bool v4 = (inner[0] >> 4) == 4;
    bool ecn_drop;
    const uint8_t want_byte1 = ecn_exit_byte1(inner, ip_tos(in.data() + ETH_HLEN), &ecn_drop);
    if (ecn_drop) fail("packet %zu: a not-ECT packet that arrived with CE went to the tunnel's TUN (RFC 6040: drop)", i);
    for (uint32_t b = 0; b < len; b++) {
      const uint8_t want = b == 1 ? want_byte1 : inner[b];
      if ((v4 && (b == 10 || b == 11)) || out[b] == want) continue;  // the checksum follows the TOS
      fail("packet %zu: byte %u changed from %#x to %#x on its way to a tunnel's TUN (expected %#x)", i, b, inner[b],
           out[b], want);
    }
    if (v4 && ip4_header_ok(inner) && !ip4_header_ok(out.data())) fail("packet %zu: checksum broken by decapsulation", i);
    return;
  }
  // A tunnel packet with a whole inner header goes to its tunnel's TUN, when the tunnel has
  // one (as the same frame unsegmented: a segmented one may not show its inner header).
  if (f.segments.empty() && f.meta.l3_len != 0)
    for (uint16_t id = 0; id < TUNNELS; id++)
      if (s.tun[id].slowpath_port != PORT_NONE && frame_of_tunnel(f, s.tun[id]))
        fail("packet %zu of tunnel %u (mode %u) punted to port %u, not to the tunnel's TUN", i, id, s.tun[id].mode, port);
  uint16_t sp = s.port[in_port].slowpath;
  if (port != sp) fail("packet %zu from port %u went to port %u, not its slow path %u", i, in_port, port, sp);
  uint32_t strip = s.port[sp].l3 ? ETH_HLEN : 0;
  if (out.size() + strip != in.size() || memcmp(out.data(), in.data() + strip, out.size()) != 0) {
    hex("in ", in.data(), in.size());
    hex("out", out.data(), out.size());
    fail("packet %zu modified on its way to the slow path (port %u)", i, port);
  }
}

// What a traced burst leaves in the trace ring: no more records than its budget or its
// packets, each taken once, each a decision with a reason of its kind and, forwarded, a
// flow and an output.
void check_trace_records(trace_session &ts, size_t packets) {
  const uint64_t taken = ts.count - static_cast<uint64_t>(ts.budget > 0 ? ts.budget : 0);
  if (taken > packets) fail("trace: %lu units of budget taken by a burst of %zu", static_cast<unsigned long>(taken), packets);
  if (ts.written != taken) fail("trace: %lu records written for %lu units taken", static_cast<unsigned long>(ts.written), static_cast<unsigned long>(taken));
  std::vector<bool> seqs(ts.count, false);
  trace_record r;
  uint64_t read = 0;
  while (rte_ring_sc_dequeue_elem(ts.ring, &r, sizeof(r)) == 0) {
    read++;
    if (r.seq >= ts.count || seqs[r.seq]) fail("trace: record seq %lu repeated or past the count %lu", static_cast<unsigned long>(r.seq), static_cast<unsigned long>(ts.count));
    seqs[r.seq] = true;
    if (ts.port != PORT_NONE && r.in_port != ts.port) fail("trace: a record of port %u in a trace of port %u", r.in_port, ts.port);
    if (r.rx_len > TRACE_BYTES || r.rx_len > r.wire_len) fail("trace: %u bytes kept of a %u-byte packet", r.rx_len, r.wire_len);
    switch (static_cast<trace_decision>(r.decision)) {
      case trace_decision::forward:
      case trace_decision::decap:
      case trace_decision::encap:
        if (r.flow == FLOW_NONE || r.out_port == PORT_NONE) fail("trace: forwarded without a flow (%u) or an output (%u)", r.flow, r.out_port);
        break;
      case trace_decision::punt:
        if (r.reason >= PUNT_REASON_COUNT) fail("trace: punt reason %u", r.reason);
        break;
      case trace_decision::drop:
        if (r.reason >= DROP_REASON_COUNT) fail("trace: drop reason %u", r.reason);
        break;
      default:
        fail("trace: decision %u", r.decision);
    }
  }
  if (read + ts.lost != taken) fail("trace: %lu records read and %lu lost for %lu taken", static_cast<unsigned long>(read), static_cast<unsigned long>(ts.lost), static_cast<unsigned long>(taken));
}

// FG_FUZZ_TRACE=1 in the environment: say what happened to every packet of each input run
// (for reading a reproducer: `pipeline_fuzz crash-file`).
const bool trace = getenv("FG_FUZZ_TRACE") != nullptr;

void print_outcome(const world &w, const std::vector<frame_in> &frames, uint16_t in_port) {
  const pipeline &pl = w.pl;
  fprintf(stderr, "burst of %zu on port %u, %zu flows:", frames.size(), in_port, w.flows.size());
  for (const installed_flow &f : w.flows) fprintf(stderr, " action %u -> port %u%s;", f.action, f.out, f.nat ? " NAT" : "");
  fprintf(stderr, "\n");
  for (uint16_t t = 0; t < TUNNELS; t++) {
    const tunnel &tun = w.snap->tun[t];
    if (!tun.active) continue;
    fprintf(stderr, "  tunnel %u: mode %u, port %u, TUN %d, ", t, tun.mode, tun.port,
            tun.slowpath_port == PORT_NONE ? -1 : tun.slowpath_port);
    hex("local, remote", tun.local(), 2u * tun.address_len());  // adjacent in both families
  }
  for (uint16_t v = 0; v < VLANS; v++) {
    const port_conf &vc = w.snap->port[MAX_ETHPORTS + v];
    if (vc.n_tags == 0) continue;
    fprintf(stderr, "  VLAN port %u: on port %u (ethdev %u), %s, MTU %u, PCP %u, TAP %d, ", MAX_ETHPORTS + v, vc.vlan_parent,
            vc.tx_port, vc.active ? "active" : "inactive", vc.mtu, vc.pcp, vc.slowpath == PORT_NONE ? -1 : vc.slowpath);
    hex("tags", vc.tags, VLAN_HLEN * vc.n_tags);
  }
  for (size_t i = 0; i < frames.size(); i++) {
    const char *where = "dropped";
    uint16_t port = PORT_NONE;
    for (unsigned d = 0; d < pl.n_dirty; d++)
      for (unsigned k = 0; k < pl.tx[pl.dirty[d]].n; k++)
        if (pl.tx[pl.dirty[d]].pkts[k] == frames[i].m) port = pl.dirty[d];
    if (port != PORT_NONE) where = port < FAST_PORTS ? "forwarded" : "punted";
    fprintf(stderr, "  packet %zu: %zu bytes on port %u, %zu segments: %s", i, frames[i].bytes.size(), frames[i].port,
            frames[i].segments.empty() ? 1 : frames[i].segments.size(), where);
    if (port != PORT_NONE) fprintf(stderr, " to port %u", port);
    fprintf(stderr, "\n");
  }
  for (unsigned r = 0; r < PUNT_REASON_COUNT; r++)
    if (pl.stats->punts[r] != 0) fprintf(stderr, "  punt %s: %lu\n", punt_reason_names[r], pl.stats->punts[r]);
  for (unsigned r = 0; r < DROP_REASON_COUNT; r++)
    if (pl.stats->drops[r] != 0) fprintf(stderr, "  drop %s: %lu\n", drop_reason_names[r], pl.stats->drops[r]);
}

int one_input(const uint8_t *data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  chooser c{fdp};
  std::vector<uint8_t> count = fdp.ConsumeBytes<uint8_t>(1);
  if (count.empty()) return -1;
  std::vector<frame_in> frames(count[0] % BURST_SIZE + 1u);
  for (frame_in &f : frames) {
    std::vector<uint8_t> len = fdp.ConsumeBytes<uint8_t>(2);
    size_t n = len.size() == 2 ? static_cast<size_t>(len[0] << 8 | len[1]) : 0;
    f.bytes = fdp.ConsumeBytes<uint8_t>(n);
  }
  // The burst's input port: 0 is the LAN side of the reference scenario, 1 the underlay.
  const uint16_t in_port = static_cast<uint16_t>(c.pick(FAST_PORTS));

  world w;
  if (w.ft.create(FLOW_CAPACITY, 1, nullptr, heap_mem, 0) != 0) fail("flowtable");
  w.snap.reset(static_cast<snapshot *>(heap_mem.alloc(sizeof(snapshot), CACHE_LINE, 0)));
  w.adj.reset(static_cast<adjacency *>(heap_mem.alloc(sizeof(adjacency) * FLOW_CAPACITY, CACHE_LINE, 0)));
  w.stats.reset(static_cast<worker_stats *>(heap_mem.alloc(sizeof(worker_stats), CACHE_LINE, 0)));

  static guarded_mbufs mbufs;  // kept across inputs for its mappings
  mbufs.reset();
  build_ports(w, c, in_port);
  // A burst with tagged frames (a VLAN seed, or a mutation) mostly gets the VLANs they are
  // for; any burst sometimes.
  bool tagged = false;
  for (const frame_in &f : frames) tagged = tagged || tags_len(f.bytes) != 0;
  const bool vlans = tagged ? !c.rarely(4) : c.rarely(3);
  if (vlans) build_vlans(w, c, in_port);
  for (frame_in &f : frames) {
    // Mostly to the input port's own MAC, as the kernel forwards only those; else as is.
    if (f.bytes.size() >= 6 && !c.rarely(8)) port_mac(in_port, f.bytes.data());
    // The checksums are fixed where the parser finds the header: before the tags go in.
    if (!c.rarely(8)) fix_ip4_checksums(f.bytes);
    if (vlans && tags_len(f.bytes) == 0) add_tags(c, f.bytes);
    // The frame in one segment: its key and meta for flows and expectations, on the port
    // that vlan_pop() finds.
    rte_mbuf *whole = mbufs.make(f.bytes.data(), f.bytes.size(), RTE_PKTMBUF_HEADROOM, {});
    f.port = in_port;
    if (vlans) {
      vlan_cache cache;
      drop_reason why = drop_reason::unknown_vlan;
      f.port = vlan_pop(*w.snap, in_port, whole, cache, &why);
      if (f.port == PORT_NONE) {
        // Dropped before parsing: no key, no meta (not a tunnel's, no flow's).
        f.whole_verdict = verdict::drop(why);
        f.seen = f.bytes;
        f.key = flow_key{};
        f.meta = pkt_meta{};
        continue;
      }
    }
    f.seen = packet_bytes(whole);
    const uint16_t mac_port = f.port < MAX_ETHPORTS ? f.port : w.snap->port[f.port].tx_port;
    check_parsers_agree(w.ft, whole, f.port, mac_port, "contiguous");
    const rx_context rx = rx_of(w.ft, f.port, mac_port);
    f.whole_verdict = parse_packet(whole, f.port, &rx.mac, &f.key, &f.meta);
  }
  build_tunnels(w, c, frames);
  install_flows(w, c, frames);

  std::vector<rte_mbuf *> burst;
  // The segments after each packet's first: the fast path may cut them off (trim_to) and
  // free them with the burst's drops.
  std::vector<std::pair<const rte_mbuf *, size_t>> tails;
  for (frame_in &f : frames) {
    f.headroom = choose_headroom(c);
    f.segments = choose_segments(c, static_cast<uint32_t>(f.bytes.size()));
    // Tags across segments go to the parent's slow path as they are (a unit test's case):
    // here the tags are in the first segment, so that the expectations above hold.
    if (vlans && !f.segments.empty() && f.segments[0] < ETH_HLEN + VLAN_MAX_TAGS * VLAN_HLEN + 2) f.segments.clear();
    f.m = mbufs.make(f.bytes.data(), f.bytes.size(), f.headroom, f.segments,
                     static_cast<uint16_t>(c.pick(4) * 16));
    for (const rte_mbuf *seg = f.m->next; seg != nullptr; seg = seg->next) tails.push_back({seg, burst.size()});
    if (!vlans) check_parsers_agree(w.ft, f.m, in_port, in_port, "as received");
    burst.push_back(f.m);
  }

  pipeline &pl = w.pl;
  pl.snap = w.snap.get();
  pl.ft = &w.ft;
  pl.counters = w.ft.worker_counters(0);
  pl.adj = w.adj.get();
  pl.stats = w.stats.get();
  pl.now_s = NOW_S;
  pl.now_tsc = NOW_TSC;
  if (c.pick(3) != 2) {
    // Sometimes a ring too small for the burst: records are lost, never packets.
    unsigned ring_size = c.rarely(4) ? 4 : 64;
    ssize_t bytes = rte_ring_get_memsize_elem(sizeof(observation), ring_size);
    w.ring.reset(static_cast<rte_ring *>(heap_mem.alloc(static_cast<size_t>(bytes), CACHE_LINE, 0)));
    rte_ring_init(w.ring.get(), "fuzz_obs", ring_size, RING_F_SP_ENQ | RING_F_SC_DEQ);
    pl.observations = w.ring.get();
  }

  // Sometimes a packet trace runs (native/dp/trace.h): the selected packets take the traced
  // path, which must forward, punt and drop exactly as the untraced one (the oracles below
  // are the same), and leave sound records.
  trace_session *published = nullptr;
  trace_session session;
  std::unique_ptr<rte_ring, heap_free> trace_ring;
  if (c.rarely(4)) {
    static const char *const FILTERS[] = {"", "udp", "ip6", "vlan", "tcp port 80", "not ip", "ip proto 41 or ip6 proto 4"};
    const char *expr = FILTERS[c.pick(sizeof(FILTERS) / sizeof(FILTERS[0]))];
    session.count = 1 + c.pick(static_cast<unsigned>(burst.size()) + 1);
    session.port = c.rarely(3) ? PORT_NONE : c.rarely(2) ? in_port : static_cast<uint16_t>(MAX_ETHPORTS + c.pick(VLANS));
    session.frame_filter = compile_pcap_filter(expr, filter_link::ethernet);
    try {
      session.ip_filter = compile_pcap_filter(expr, filter_link::raw_ip);
    } catch (const dp_error &) {
      session.ip_filter_valid = false;  // as dataplane::trace_start(): "vlan" means nothing to a TUN
    }
    // Sometimes a ring too small for the burst: records are lost, never packets.
    const unsigned ring_size = c.rarely(4) ? 2 : 64;
    const ssize_t bytes = rte_ring_get_memsize_elem(sizeof(trace_record), ring_size);
    trace_ring.reset(static_cast<rte_ring *>(heap_mem.alloc(static_cast<size_t>(bytes), CACHE_LINE, 0)));
    rte_ring_init(trace_ring.get(), "fuzz_trace", ring_size, RING_F_SC_DEQ);
    session.ring = trace_ring.get();
    session.slot = &published;
    session.budget = static_cast<int64_t>(session.count);
    published = &session;
    pl.trace = published;
  }

  process_burst(pl, in_port, burst.data(), static_cast<uint16_t>(burst.size()));
  if (pl.trace != nullptr) check_trace_records(session, burst.size());

  // Every packet exactly once: sent by an active port, or dropped.
  std::vector<int> seen(frames.size(), 0);
  auto index_of = [&](const rte_mbuf *m) {
    for (size_t i = 0; i < frames.size(); i++)
      if (frames[i].m == m) return i;
    fail("an mbuf that was not in the burst came out");
  };
  for (unsigned d = 0; d < pl.n_dirty; d++) {
    uint16_t port = pl.dirty[d];
    if (port >= MAX_PORTS || !w.snap->port[port].active) fail("packets sent to inactive port %u", port);
    const tx_buffer &b = pl.tx[port];
    for (unsigned k = 0; k < b.n; k++) {
      size_t i = index_of(b.pkts[k]);
      checking = &frames[i];
      checking_index = i;
      seen[i]++;
      check_chain(b.pkts[k], i);
      if (port < FAST_PORTS)
        check_forwarded(w, frames[i], b.pkts[k], port, i);
      else
        check_punted(w, frames[i], b.pkts[k], port, i);
    }
  }
  checking = nullptr;
  for (unsigned k = 0; k < pl.n_drops; k++) {
    const rte_mbuf *m = pl.drops[k];
    bool cut = false;
    for (const auto &[seg, i] : tails)
      if (seg == m) {
        // A tail cut off packet i: no longer part of what i sends.
        for (const rte_mbuf *s = frames[i].m; s != nullptr; s = s->next)
          if (s == m) fail("packet %zu: a segment still in its chain was freed", i);
        cut = true;
      }
    if (!cut) seen[index_of(m)]++;
  }
  if (trace) print_outcome(w, frames, in_port);
  for (size_t i = 0; i < frames.size(); i++)
    if (seen[i] != 1) {
      checking = &frames[i];
      checking_index = i;
      fail("packet %zu came out %d times", i, seen[i]);
    }
  std::string where;
  if (!mbufs.front_intact(&where)) fail("write in front of a packet's data: %s", where.c_str());
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return one_input(data, size); }
