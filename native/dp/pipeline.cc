#include "pipeline.h"

#include <rte_prefetch.h>
#ifdef FG_STAGE_CYCLES
#include <rte_cycles.h>
#endif

#include "observation.h"
#include "packet.h"
#include "tunnel.h"

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

// A tunnel whose punted packets go decapsulated to its own slow-path port (the kernel's
// TUN device for it), matched by outer source = remote and outer destination = local.
uint16_t slowpath_tunnel(const snapshot *s, const rte_ipv6_hdr *outer) {
  for (uint16_t id = 0; id < MAX_TUNNELS; id++) {
    const tunnel &t = s->tun[id];
    if (t.slowpath_port != PORT_NONE && tunnel_matches(t, outer->src_addr, outer->dst_addr)) return id;
  }
  return TUNNEL_NONE;
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
  const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *, meta.l3_off);
  observation o;
  memset(&o, 0, sizeof(o));
  o.tsc = pl.now_tsc;
  o.key = *key;
  o.kind = OBS_PUNT;
  o.reason = static_cast<uint8_t>(r);
  if (key->l4proto == IPPROTO_TCP) o.tcp_flags = l3[(key->l3proto == FLOW_L3_IPV4 ? IP4_HLEN : IP6_HLEN) + 13];
  o.port = in_port;
  o.tunnel = tunnel;
  o.fingerprint = packet_fingerprint(l3, meta.l3_len, *key);
  o.l3_len = meta.l3_len;
  if (rte_ring_sp_enqueue_elem(pl.observations, &o, sizeof(o)) != 0) pl.stats->observations_lost++;
}

// Hand a packet to the slow path. key: the packet's flow key when it has a complete one
// (misses and TCP flag exceptions), for the learner; else null. Uses: meta.outer_len/l3_len
// of tunnelled packets.
void punt(pipeline &pl, rte_mbuf *m, uint16_t in_port, punt_reason r, const pkt_meta &meta,
          const flow_key *key = nullptr) {
  if (!punt_allowed(pl, in_port)) return drop(pl, m, drop_reason::punt_policed);
  pl.stats->punts[static_cast<unsigned>(r)]++;
  const snapshot *s = pl.snap;
  // l3_len != 0: parsing validated the inner IPv4 header, so it can be read and decapsulated.
  if (meta.outer_len != 0 && meta.l3_len != 0) {
    auto *outer = rte_pktmbuf_mtod_offset(m, const rte_ipv6_hdr *, ETH_HLEN);
    uint16_t tid = slowpath_tunnel(s, outer);
    if (tid != TUNNEL_NONE) {
      auto *inner = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr *, meta.l3_off);
      if (!ecn_decapsulate(ip6_traffic_class(outer), inner)) return drop(pl, m, drop_reason::ecn);
      observe_punt(pl, m, in_port, r, meta, key, tid);
      rte_pktmbuf_adj(m, meta.l3_off);
      trim_to(m, meta.l3_len);
      return tx_enqueue(pl, s->tun[tid].slowpath_port, m);
    }
  }
  uint16_t sp = s->port[in_port].slowpath;
  if (sp == PORT_NONE || !s->port[sp].active) return drop(pl, m, drop_reason::no_slowpath);
  if (s->port[sp].l3) {
    // A TUN takes IP packets only.
    if (r == punt_reason::non_ip) return drop(pl, m, drop_reason::no_slowpath);
    observe_punt(pl, m, in_port, r, meta, key, TUNNEL_NONE);
    rte_pktmbuf_adj(m, ETH_HLEN);
  } else {
    observe_punt(pl, m, in_port, r, meta, key, TUNNEL_NONE);
  }
  tx_enqueue(pl, sp, m);
}

// Set state bits on a flow, both directions at once, as on the kernel's one flow object for
// both tuples. The pair is freed in the same grace period as e, so it is live here.
inline void flow_mark(pipeline &pl, flow_entry &e, uint8_t bits) {
  __atomic_fetch_or(&e.state, bits, __ATOMIC_RELAXED);
  if (e.pair != FLOW_NONE) __atomic_fetch_or(&pl.ft->entry(e.pair).state, bits, __ATOMIC_RELAXED);
}

inline void write_eth_addrs(uint8_t *frame, const adjacency &a) {
  memcpy(frame, a.dst_mac, 12);  // destination and source MAC, adjacent in both
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

// Act on a packet whose flow was found. Uses: meta. Sets: the packet's headers for its
// output port, or nothing when it punts (packets reach the slow path unmodified). Returns
// the output port, or PORT_NONE when the packet was punted or dropped instead.
inline uint16_t forward(pipeline &pl, burst_state &b, rte_mbuf *m, uint16_t in_port, const pkt_meta &meta,
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
  const adjacency *a = nullptr;
  const tunnel *t = nullptr;
  uint16_t out;
  uint16_t mtu;
  if (action == FLOW_ACT_ENCAP4IN6) {
    t = &s->tun[target];
    out = t->port;
    mtu = t->active ? t->mtu : 0;
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

  uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
  // NAT before the TTL decrement and encapsulation, on the (inner) IP packet: the kernel's
  // nf_flow_nat_ip() before ip_decrease_ttl().
  if (e.flags & FLOW_F_NAT) nat_apply(frame + meta.l3_off, key.l3proto, key.l4proto, b.nat[idx]);
  switch (action) {
    case FLOW_ACT_FWD4:
      ip4_dec_ttl(reinterpret_cast<rte_ipv4_hdr *>(frame + ETH_HLEN));
      trim_to(m, ETH_HLEN + meta.l3_len);
      write_eth_addrs(frame, *a);
      break;
    case FLOW_ACT_FWD6:
      ip6_dec_hop_limit(reinterpret_cast<rte_ipv6_hdr *>(frame + ETH_HLEN));
      trim_to(m, ETH_HLEN + meta.l3_len);
      write_eth_addrs(frame, *a);
      break;
    case FLOW_ACT_DECAP4IN6: {
      auto *outer = reinterpret_cast<const rte_ipv6_hdr *>(frame + ETH_HLEN);
      auto *inner = reinterpret_cast<rte_ipv4_hdr *>(frame + meta.l3_off);
      if (!ecn_decapsulate(ip6_traffic_class(outer), inner)) {
        drop(pl, m, drop_reason::ecn);
        return PORT_NONE;
      }
      ip4_dec_ttl(inner);
      frame = reinterpret_cast<uint8_t *>(rte_pktmbuf_adj(m, meta.outer_len));
      trim_to(m, ETH_HLEN + meta.l3_len);
      write_eth_addrs(frame, *a);
      const rte_be16_t ipv4 = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
      memcpy(frame + 12, &ipv4, 2);
      break;
    }
    case FLOW_ACT_ENCAP4IN6:
      ip4_dec_ttl(reinterpret_cast<rte_ipv4_hdr *>(frame + ETH_HLEN));
      if (!encap_ip4in6(m, *t, meta.l3_len, (t->flags & TUNNEL_F_FLOWLABEL_HASH) ? flowlabel_of(key) : 0)) {
        drop(pl, m, drop_reason::no_headroom);
        return PORT_NONE;
      }
      break;
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

void process_burst(pipeline &pl, uint16_t in_port, rte_mbuf **pkts, uint16_t n) {
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

  pl.stats->rx_packets += n;
  for (unsigned i = 0; i < n && i < PREFETCH_OFFSET; i++) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
  for (unsigned i = 0; i < n; i++) {
    if (i + PREFETCH_OFFSET < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + PREFETCH_OFFSET], void *));
    if (likely(parse_fast(pkts[i], in_port, &keys[i], &meta[i], &hashes[i]))) {
      pl.ft->prefetch_bucket(hashes[i]);
      parsed |= uint64_t{1} << i;
      continue;
    }
    verdicts[i] = parse_packet(pkts[i], in_port, &keys[i], &meta[i]);
    if (verdicts[i].is_ok()) {
      hashes[i] = flow_key_hash(&keys[i]);
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
    if (likely((parsed >> i) & 1)) {
      if (unlikely(idx[i] == FLOW_NONE)) {
        punt(pl, pkts[i], in_port, punt_reason::miss, meta[i], &keys[i]);
        continue;
      }
      uint16_t port = forward(pl, b, pkts[i], in_port, meta[i], keys[i], idx[i]);
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
      tx_buffer &tb = pl.tx[out_port[0]];
      if (tb.n == 0) pl.dirty[pl.n_dirty++] = out_port[0];
      memcpy(&tb.pkts[tb.n], out, n_out * sizeof(out[0]));
      tb.n = static_cast<uint16_t>(tb.n + n_out);
    } else {
      for (unsigned i = 0; i < n_out; i++) tx_enqueue(pl, out_port[i], out[i]);
    }
  }
  STAGE_END(act);
}

#undef STAGE_END

}  // namespace fg
