// Micro-benchmark of process_burst() alone: no NIC, no EAL, no mbuf pool. Packets are
// hand-built mbufs restored before each burst (outside the timed region), so the figure is
// the pipeline's own cost per packet: parse, bulk lookup, act, tx buffering. The I/O floor
// (rx + tx of a PMD) comes on top of it in `flowgate bench`.
//
//   make -C bench/micro && bench/micro/pipeline fwd4 1000 [rounds]
//
// bench/micro/pipeline-stages prints the same with the cycles split into parse, lookup and
// act (rewrite and tx buffering); its total is a few cycles higher for the timing itself.
// NAT=1 in the environment gives every flow a source NAT (address and port).
// fwd4-vlan: fwd4 in on 802.1Q VLAN 100 of port 0, out on VLAN 200 of port 1, tagged both
// sides (a 64-byte frame in, with its tag).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <rte_cycles.h>

#include "dp/flowtable.h"
#include "dp/memory.h"
#include "dp/pipeline.h"
#include "dp/tunnel.h"
#include "dp/vlan.h"

using namespace fg;

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }

static uint16_t csum(const uint8_t *p, size_t n) {
  uint32_t s = 0;
  for (size_t i = 0; i + 1 < n; i += 2) s += (p[i] << 8) | p[i + 1];
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}

// The receiving port's address, to which every frame is sent.
static const uint8_t PORT_MAC[6] = {2, 0, 0, 0, 1, 0};

// Ethernet + IPv4 + UDP, 64 bytes on the wire without FCS: 60.
static std::vector<uint8_t> udp4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport) {
  std::vector<uint8_t> f(60, 0);
  memcpy(&f[0], PORT_MAC, 6);
  put16(&f[12], 0x0800);
  uint8_t *ip = &f[14];
  ip[0] = 0x45;
  put16(ip + 2, 46);
  ip[8] = 64;
  ip[9] = 17;
  memcpy(ip + 12, &src, 4);
  memcpy(ip + 16, &dst, 4);
  put16(ip + 10, csum(ip, 20));
  uint8_t *udp = ip + 20;
  put16(udp, sport);
  put16(udp + 2, dport);
  put16(udp + 4, 26);
  return f;
}

// The frame with an 802.1Q tag after its MAC addresses.
static std::vector<uint8_t> tagged(const std::vector<uint8_t> &frame, uint16_t vid) {
  std::vector<uint8_t> f(frame.size() + 4);
  memcpy(&f[0], &frame[0], 12);
  put16(&f[12], 0x8100);
  put16(&f[14], vid);
  memcpy(&f[16], &frame[12], frame.size() - 12);
  return f;
}

// Ethernet + IPv6 + UDP: 62 bytes, the smallest such frame.
static std::vector<uint8_t> udp6(uint32_t src_low, uint16_t sport, uint16_t dport) {
  std::vector<uint8_t> f(62, 0);
  memcpy(&f[0], PORT_MAC, 6);
  put16(&f[12], 0x86dd);
  uint8_t *ip6 = &f[14];
  ip6[0] = 0x60;
  put16(ip6 + 4, 8);
  ip6[6] = 17;
  ip6[7] = 64;
  const uint8_t prefix[4] = {0x20, 0x01, 0x0d, 0xb8};
  memcpy(ip6 + 8, prefix, 4);
  memcpy(ip6 + 20, &src_low, 4);
  memcpy(ip6 + 24, prefix, 4);
  ip6[39] = 1;
  put16(ip6 + 40, sport);
  put16(ip6 + 42, dport);
  put16(ip6 + 44, 8);
  return f;
}

// The inner frame's IP packet behind an outer IPv6 header (and the encapsulation limit
// option), next header by the inner family.
static std::vector<uint8_t> tunnelled6(const std::vector<uint8_t> &inner_frame, const uint8_t *src6, const uint8_t *dst6, bool option) {
  size_t inner_len = inner_frame.size() - 14;
  size_t opt = option ? 8 : 0;
  const uint8_t next = inner_frame[14] >> 4 == 4 ? 4 : 41;
  std::vector<uint8_t> f(14 + 40 + opt + inner_len, 0);
  memcpy(&f[0], PORT_MAC, 6);
  put16(&f[12], 0x86dd);
  uint8_t *ip6 = &f[14];
  ip6[0] = 0x60;
  put16(ip6 + 4, static_cast<uint16_t>(opt + inner_len));
  ip6[6] = option ? 60 : next;
  ip6[7] = 64;
  memcpy(ip6 + 8, src6, 16);
  memcpy(ip6 + 24, dst6, 16);
  if (option) {
    uint8_t o[8] = {next, 0, 4, 1, 4, 1, 1, 0};
    memcpy(ip6 + 40, o, 8);
  }
  memcpy(ip6 + 40 + opt, &inner_frame[14], inner_len);
  return f;
}

// The same behind an outer IPv4 header (ipip or sit), DF set as Linux's pmtudisc default.
static std::vector<uint8_t> tunnelled4(const std::vector<uint8_t> &inner_frame, const uint8_t *src4, const uint8_t *dst4) {
  size_t inner_len = inner_frame.size() - 14;
  std::vector<uint8_t> f(14 + 20 + inner_len, 0);
  memcpy(&f[0], PORT_MAC, 6);
  put16(&f[12], 0x0800);
  uint8_t *ip = &f[14];
  ip[0] = 0x45;
  put16(ip + 2, static_cast<uint16_t>(20 + inner_len));
  put16(ip + 6, 0x4000);
  ip[8] = 64;
  ip[9] = inner_frame[14] >> 4 == 4 ? 4 : 41;
  memcpy(ip + 12, src4, 4);
  memcpy(ip + 16, dst4, 4);
  put16(ip + 10, csum(ip, 20));
  memcpy(ip + 20, &inner_frame[14], inner_len);
  return f;
}

int main(int argc, char **argv) {
  std::string scenario = argc > 1 ? argv[1] : "fwd4";
  uint32_t flows = argc > 2 ? static_cast<uint32_t>(atoi(argv[2])) : 1000;
  unsigned rounds = argc > 3 ? static_cast<unsigned>(atoi(argv[3])) : 3000;
  const uint32_t capacity = 1u << 20 > flows ? 1u << 20 : flows;

  flowtable ft;
  if (ft.create(capacity, 1, nullptr, heap_mem, 0) != 0) return 1;
  auto *snap = static_cast<snapshot *>(heap_mem.alloc(sizeof(snapshot), 64, 0));
  auto *adj = static_cast<adjacency *>(heap_mem.alloc(sizeof(adjacency) * 16, 64, 0));
  auto *stats = static_cast<worker_stats *>(heap_mem.alloc(sizeof(worker_stats), 64, 0));
  for (auto &p : snap->port) p.slowpath = PORT_NONE;
  for (uint16_t p = 0; p < 2; p++) {
    port_conf &pc = snap->port[p];
    pc = port_conf{};
    pc.mtu = 1500;
    pc.slowpath = PORT_NONE;
    pc.active = 1;
    pc.kernel_egress_port = PORT_NONE;
    pc.kernel_egress_tunnel = TUNNEL_NONE;
  }
  snap->port[0].mac = port_mac_word(PORT_MAC);
  const bool vlan = scenario == "fwd4-vlan";
  const uint16_t in_port = vlan ? MAX_ETHPORTS : 0;
  const uint16_t out_port = vlan ? MAX_ETHPORTS + 1 : 1;
  if (vlan) {
    vlan_conf_build(snap->port[in_port], *snap, 0, 100, false, 0, 0, snap->port[0].mac);
    vlan_conf_build(snap->port[out_port], *snap, 1, 200, false, 0, 0, snap->port[1].mac);
    derive_vlans(*snap);
  }
  adj[0] = adjacency{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, out_port, 0};
  // Scenarios: fwd4, fwd4-vlan, and decap or encap with a mode: ip4ip6 (no suffix, or -nolimit),
  // -ip6ip6, -ipip, -sit.
  const bool decap = scenario.rfind("decap", 0) == 0;
  const bool encap = scenario.rfind("encap", 0) == 0;
  uint8_t mode = TUNNEL_IP4IP6;
  if (scenario.find("-ip6ip6") != std::string::npos) mode = TUNNEL_IP6IP6;
  if (scenario.find("-ipip") != std::string::npos) mode = TUNNEL_IPIP;
  if (scenario.find("-sit") != std::string::npos) mode = TUNNEL_SIT;
  const bool nolimit = scenario.find("-nolimit") != std::string::npos;
  const bool outer4 = tunnel_outer_family(mode) == 4;
  const bool inner6 = (decap || encap) && tunnel_inner_family(mode) == 6;
  uint8_t local[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t remote[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  if (outer4) {
    const uint8_t local4[16] = {198, 51, 100, 1}, remote4[16] = {198, 51, 100, 2};
    memcpy(local, local4, 16);
    memcpy(remote, remote4, 16);
  }
  tunnel_params tp{};
  tp.mode = mode;
  memcpy(tp.local, local, 16);
  memcpy(tp.remote, remote, 16);
  tp.encap_limit = outer4 || nolimit ? -1 : 4;
  tp.pmtudisc = true;
  tp.hop_limit = 64;
  tp.mtu = 1452;
  tp.port = 1;
  tp.slowpath_port = PORT_NONE;
  tunnel_build(&snap->tun[0], tp);
  snap->count_flows = getenv("NO_COUNTERS") == nullptr;

  // One packet per flow (at least 1024 packets), flows spread evenly.
  uint32_t n_packets = flows < 1024 ? 1024 : flows;
  std::vector<std::vector<uint8_t>> frames;
  frames.reserve(n_packets);
  for (uint32_t i = 0; i < n_packets; i++) {
    uint32_t f = i % flows;
    uint32_t src = htonl(0x0a000000u | f), dst = htonl(0xc0a80001u);
    auto inner = inner6 ? udp6(src, 1000, 2000) : udp4(src, dst, 1000, 2000);
    if (decap) inner = outer4 ? tunnelled4(inner, remote, local) : tunnelled6(inner, remote, local, !nolimit);
    frames.push_back(vlan ? tagged(inner, 100) : inner);
  }
  for (uint32_t f = 0; f < flows; f++) {
    uint32_t e = ft.alloc();
    flow_entry &en = ft.entry(e);
    pkt_meta meta;
    rte_mbuf m{};
    std::vector<uint8_t> buf(2048);
    memcpy(buf.data() + 128, frames[f].data(), frames[f].size());
    m.buf_addr = buf.data();
    m.data_off = 128;
    m.data_len = static_cast<uint16_t>(frames[f].size());
    m.pkt_len = m.data_len;
    m.nb_segs = 1;
    flow_key key;
    if (vlan) {
      vlan_cache c;
      drop_reason why;
      vlan_pop(*snap, 0, &m, c, &why);
    }
    parse_packet(&m, in_port, nullptr, &key, &meta);
    uint8_t action = decap ? FLOW_ACT_DECAP : encap ? FLOW_ACT_ENCAP : FLOW_ACT_FWD4;
    flow_entry_init(en, key, action, FLOW_NONE, 1);  // now_s 1 as the pipeline's below
    en.target = 0;
    if (decap) en.tunnel = 0;
    if (getenv("NAT") != nullptr) {
      // Masquerade: a new source address and port, as SNAT to the uplink's address.
      flow_nat_spec nat;
      nat.flags = NAT_F_SRC | NAT_F_SPORT;
      uint32_t to = htonl(0xcb007101u);
      memcpy(nat.src, &to, 4);
      nat.sport = htons(static_cast<uint16_t>(10000 + f % 50000));
      ft.set_nat(e, nat);
    }
    if (int rc = ft.publish(e); rc != 0) { fprintf(stderr, "publish flow %u: %d\n", f, rc); return 2; }
  }

  // mbufs with room, restored before each burst.
  std::vector<rte_mbuf> mbufs(n_packets);
  std::vector<uint8_t> arena(static_cast<size_t>(n_packets) * 256);
  for (uint32_t i = 0; i < n_packets; i++) {
    mbufs[i] = rte_mbuf{};
    mbufs[i].buf_addr = &arena[static_cast<size_t>(i) * 256];
    mbufs[i].buf_len = 256;
    mbufs[i].nb_segs = 1;
  }
  pipeline pl;
  pl.snap = snap;
  pl.ft = &ft;
  pl.counters = ft.worker_counters(0);
  pl.adj = adj;
  pl.stats = stats;
  pl.now_s = 1;

  uint64_t cycles = 0, packets = 0;
  uint32_t next = 0;
  for (unsigned r = 0; r < rounds; r++) {
    for (uint32_t b = 0; b < n_packets / BURST_SIZE; b++) {
      rte_mbuf *burst[BURST_SIZE];
      for (unsigned i = 0; i < BURST_SIZE; i++) {
        rte_mbuf &m = mbufs[next];
        const auto &fr = frames[next];
        m.data_off = 64;
        m.data_len = static_cast<uint16_t>(fr.size());
        m.pkt_len = m.data_len;
        memcpy(static_cast<uint8_t *>(m.buf_addr) + 64, fr.data(), fr.size());
        burst[i] = &m;
        next = next + 1 == n_packets ? 0 : next + 1;
      }
      uint64_t t0 = rte_rdtsc_precise();
      process_burst(pl, 0, burst, BURST_SIZE);
      uint64_t t1 = rte_rdtsc_precise();
      cycles += t1 - t0;
      packets += BURST_SIZE;
      for (unsigned d = 0; d < pl.n_dirty; d++) pl.tx[pl.dirty[d]].n = 0;
      pl.n_dirty = 0;
      pl.n_drops = 0;
    }
  }
  printf("%s flows=%u cycles/packet=%.1f fast=%lu punts_miss=%lu", scenario.c_str(), flows, double(cycles) / packets,
         (unsigned long)stats->fast_packets, (unsigned long)stats->punts[0]);
#ifdef FG_STAGE_CYCLES
  printf(" parse=%.1f lookup=%.1f act=%.1f", double(pl.stages.parse) / packets, double(pl.stages.lookup) / packets,
         double(pl.stages.act) / packets);
#endif
  printf("\n");
  return 0;
}
