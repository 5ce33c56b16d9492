// Test-only exports: the fast path's packet code run without EAL, on mbufs built by hand.
// Each packet's data ends at a page boundary followed by an inaccessible guard page
// (testing/guarded_mbufs.h), so a parser that reads one byte past the end of a packet
// crashes the test instead of passing.
#include <napi.h>

#include <array>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "addon/convert.h"
#include "addon/flow_record.h"
#include "dp/flowtable.h"
#include "dp/memory.h"
#include "dp/observation.h"
#include "dp/packet.h"
#include "dp/pipeline.h"
#include "dp/reasons.h"
#include "dp/snapshot.h"
#include "dp/tunnel.h"
#include "dp/vlan.h"
#include "stress/stress.h"
#include "testing/guarded_mbufs.h"

namespace fg::addon {
namespace {

using fg::testing::guarded_mbufs;

std::vector<uint32_t> segments_of(const Napi::Object &o) {
  std::vector<uint32_t> lens;
  Napi::Value v = o.Get("segments");
  if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value len = a.Get(i);
      if (!len.IsNumber() || !is_integer_in(len.As<Napi::Number>().DoubleValue(), 0, UINT16_MAX))
        throw dp_error(ERR_INVALID_ARGUMENT, "segments[]: expected an integer 0..65535");
      lens.push_back(static_cast<uint32_t>(len.As<Napi::Number>().DoubleValue()));
    }
  }
  return lens;
}

Napi::Buffer<uint8_t> read_packet(Napi::Env env, const rte_mbuf *m) {
  std::vector<uint8_t> out;
  for (const rte_mbuf *s = m; s != nullptr; s = s->next) {
    const uint8_t *p = rte_pktmbuf_mtod(s, const uint8_t *);
    out.insert(out.end(), p, p + s->data_len);
  }
  return bytes_to_js(env, out.data(), out.size());
}

// The data length of each segment of a packet, and a check that the head's nb_segs and
// pkt_len describe the chain (a chain that lies about itself is the pipeline's bug).
Napi::Array segment_lengths(Napi::Env env, const rte_mbuf *m) {
  Napi::Array a = Napi::Array::New(env);
  uint32_t total = 0, n = 0;
  for (const rte_mbuf *s = m; s != nullptr; s = s->next, n++) {
    a.Set(n, s->data_len);
    total += s->data_len;
  }
  if (n != m->nb_segs || total != m->pkt_len)
    throw dp_error(ERR_STATE, "output chain of " + std::to_string(n) + " segments, " + std::to_string(total) +
                                  " bytes, says nb_segs " + std::to_string(m->nb_segs) + ", pkt_len " +
                                  std::to_string(m->pkt_len));
  return a;
}

Napi::Object key_to_js(Napi::Env env, const flow_key &k) {
  flow_spec f;
  f.key = k;
  f.action = FLOW_ACT_NONE;
  Napi::Object o = flow_spec_to_js(env, f);
  o.Delete("action");
  o.Delete("outPort");
  o.Delete("dstMac");
  o.Delete("srcMac");
  return o;
}

const char *reason_name(const verdict &v) {
  if (v.kind == verdict::PUNT) return punt_reason_names[v.reason];
  if (v.kind == verdict::DROP) return drop_reason_names[v.reason];
  return "ok";
}

// parse(frame, inPort, { headroom?, segments?, mac? }) -> { verdict, reason, key, meta }
//   mac: the receiving port's address, checked against the frame's destination; without
//   it, none is (as for frames from the kernel).
Napi::Value Parse(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsBuffer()) throw dp_error(ERR_INVALID_ARGUMENT, "parse(frame: Buffer, inPort)");
    auto frame = info[0].As<Napi::Buffer<uint8_t>>();
    uint16_t in_port = to_port(info[1], "inPort");
    Napi::Object opts = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
    guarded_mbufs mbufs;
    rte_mbuf *m = mbufs.make(frame.Data(), frame.Length(), RTE_PKTMBUF_HEADROOM, segments_of(opts));
    uint8_t mac[6];
    uint64_t port_mac = 0;
    bool check_mac = get_bytes(opts, "mac", "options", 6, mac, false);
    if (check_mac) port_mac = port_mac_word(mac);
    flow_key key;
    pkt_meta meta;
    verdict v = parse_packet(m, in_port, check_mac ? &port_mac : nullptr, &key, &meta);
    Napi::Object r = Napi::Object::New(env);
    r.Set("verdict", v.kind == verdict::OK ? "ok" : v.kind == verdict::PUNT ? "punt" : "drop");
    r.Set("reason", reason_name(v));
    r.Set("key", key_to_js(env, key));
    r.Set("keyBytes", bytes_to_js(env, reinterpret_cast<const uint8_t *>(&key), sizeof(key)));
    Napi::Object mo = Napi::Object::New(env);
    mo.Set("l3Off", meta.l3_off);
    mo.Set("l3Len", meta.l3_len);
    mo.Set("outerLen", meta.outer_len);
    mo.Set("tcpFlags", meta.tcp_flags);
    r.Set("meta", mo);
    return r;
  });
}

struct heap_deleter {
  void operator()(void *p) const { free(p); }
};

// A fast path with no EAL: a heap flowtable, a snapshot and adjacencies built from setup.
struct harness {
  flowtable ft;
  std::unique_ptr<snapshot, heap_deleter> snap;
  std::unique_ptr<adjacency, heap_deleter> adj;
  std::unique_ptr<worker_stats, heap_deleter> stats;
  std::unique_ptr<pipeline> pl;
  std::unique_ptr<rte_ring, heap_deleter> observations;
  uint32_t n_adj = 0;
  uint32_t pl_now = 0;
  std::array<uint16_t, MAX_TUNNELS> path_mtu_reports{};
  std::vector<std::pair<uint32_t, uint32_t>> flows;  // orig, reply (FLOW_NONE)

  explicit harness(const Napi::Object &setup) {
    uint32_t capacity = get_uint_or(setup, "capacity", "setup", 1, MAX_FLOWS, 1024);
    bool fixed_seed = setup.Has("hashSeed");
    uint32_t hash_seed = get_uint_or(setup, "hashSeed", "setup", 0, UINT32_MAX, 0);
    if (ft.create(capacity, 1, nullptr, heap_mem, 0, 0, fixed_seed ? &hash_seed : nullptr) != 0)
      throw dp_error(ERR_NO_MEMORY, "flowtable");
    snap.reset(static_cast<snapshot *>(heap_mem.alloc(sizeof(snapshot), CACHE_LINE, 0)));
    adj.reset(static_cast<adjacency *>(heap_mem.alloc(sizeof(adjacency) * 1024, CACHE_LINE, 0)));
    stats.reset(static_cast<worker_stats *>(heap_mem.alloc(sizeof(worker_stats), CACHE_LINE, 0)));
    for (auto &p : snap->port) p.slowpath = PORT_NONE;
    for (auto &t : snap->tun) t.slowpath_port = PORT_NONE;
    pl_now = get_uint_or(setup, "now", "setup", 0, UINT32_MAX, 1);
    snap->count_flows = get_bool_or(setup, "counters", "setup", true) ? 1 : 0;

    Napi::Value ports = setup.Get("ports");
    if (ports.IsArray()) {
      Napi::Array a = ports.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Object p = as_object(a.Get(i), "setup.ports[]");
        uint16_t id = to_port(p.Get("id"), "setup.ports[].id");
        port_conf &pc = snap->port[id];
        pc.mtu = static_cast<uint16_t>(get_uint_or(p, "mtu", "setup.ports[]", 68, 65535, 1500));
        pc.slowpath = to_port(p.Get("slowpath"), "setup.ports[].slowpath");
        pc.l3 = get_bool_or(p, "l3", "setup.ports[]", false);
        pc.multiseg = get_bool_or(p, "multiseg", "setup.ports[]", true);
        uint8_t mac[6] = {};
        get_bytes(p, "mac", "setup.ports[]", 6, mac, false);
        pc.mac = port_mac_word(mac);
        pc.active = 1;
        // Raw policer parameters in TSC cycles: the tests fix the clock (setup.nowTsc).
        pc.punt_cost = get_uint_or(p, "puntCost", "setup.ports[]", 0, UINT32_MAX, 0);
        pc.punt_burst = get_uint_or(p, "puntBurst", "setup.ports[]", 0, UINT32_MAX, 0);
      }
    }
    // VLAN sub-interfaces by port id (MAX_ETHPORTS..), after their parents.
    Napi::Value vlans = setup.Get("vlans");
    if (vlans.IsArray()) {
      Napi::Array a = vlans.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Object v = as_object(a.Get(i), "setup.vlans[]");
        uint16_t id = to_port(v.Get("id"), "setup.vlans[].id");
        uint16_t parent = to_port(v.Get("parent"), "setup.vlans[].parent");
        if (id < MAX_ETHPORTS || parent == PORT_NONE || !snap->port[parent].active)
          throw dp_error(ERR_INVALID_ARGUMENT, "setup.vlans[]: id from " + std::to_string(MAX_ETHPORTS) + " on an earlier port");
        uint8_t mac[6] = {};
        uint64_t mac_word = get_bytes(v, "mac", "setup.vlans[]", 6, mac, false) ? port_mac_word(mac) : snap->port[parent].mac;
        vlan_conf_build(snap->port[id], *snap, parent, static_cast<uint16_t>(get_uint(v, "vid", "setup.vlans[]", 1, 4094)),
                        get_bool_or(v, "ad", "setup.vlans[]", false),
                        static_cast<uint8_t>(get_uint_or(v, "pcp", "setup.vlans[]", 0, 7, 0)),
                        static_cast<uint16_t>(get_uint_or(v, "mtu", "setup.vlans[]", 68, 65535, 0)), mac_word);
        snap->port[id].slowpath = to_port(v.Get("slowpath"), "setup.vlans[].slowpath");
      }
    }
    derive_vlans(*snap);  // as dataplane::derive() does
    Napi::Value tunnels = setup.Get("tunnels");
    if (tunnels.IsArray()) {
      Napi::Array a = tunnels.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Object t = as_object(a.Get(i), "setup.tunnels[]");
        uint32_t id = get_uint(t, "id", "setup.tunnels[]", 0, MAX_TUNNELS - 1);
        tunnel_build(&snap->tun[id], tunnel_params_from(t));
        snap->tun[id].path_mtu = static_cast<uint16_t>(get_uint_or(t, "pathMtu", "setup.tunnels[]", 0, 65535, 0));
      }
    }
    derive_tunnel_mtus(*snap);  // as dataplane::derive() does for every published snapshot
    Napi::Value fl = setup.Get("flows");
    if (fl.IsArray()) {
      Napi::Array a = fl.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Object f = as_object(a.Get(i), "setup.flows[]");
        uint32_t io = install(flow_spec_from(as_object(f.Get("orig"), "orig"), "orig"));
        uint32_t ir = FLOW_NONE;
        if (f.Get("reply").IsObject()) ir = install(flow_spec_from(f.Get("reply").As<Napi::Object>(), "reply"));
        ft.entry(io).pair = ir;
        if (ir != FLOW_NONE) ft.entry(ir).pair = io;
        if (get_bool_or(f, "teardown", "setup.flows[]", false)) ft.entry(io).state |= FLOW_STATE_TEARDOWN;
        if (get_bool_or(f, "closing", "setup.flows[]", false)) {
          ft.entry(io).state |= FLOW_STATE_CLOSING;
          if (ir != FLOW_NONE) ft.entry(ir).state |= FLOW_STATE_CLOSING;
        }
        if (ft.publish(io) != 0 || (ir != FLOW_NONE && ft.publish(ir) != 0))
          throw dp_error(ERR_FLOW_EXISTS, "setup.flows[" + std::to_string(i) + "]: duplicate key or full bucket");
        flows.push_back({io, ir});
      }
    }
    pl = std::make_unique<pipeline>();
    pl->snap = snap.get();
    pl->ft = &ft;
    pl->counters = ft.worker_counters(0);
    pl->adj = adj.get();
    pl->stats = stats.get();
    pl->path_mtu_reports = path_mtu_reports.data();
    pl->now_s = pl_now;
    pl->now_tsc = get_uint_or(setup, "nowTsc", "setup", 0, UINT32_MAX, 1000000000);
    if (get_bool_or(setup, "observe", "setup", false)) {
      // A ring in plain memory: rte_ring_init needs no EAL, and the element size is given
      // per call, as the workers give it.
      ssize_t size = rte_ring_get_memsize_elem(sizeof(observation), 1024);
      observations.reset(static_cast<rte_ring *>(heap_mem.alloc(static_cast<size_t>(size), CACHE_LINE, 0)));
      rte_ring_init(observations.get(), "test_obs", 1024, RING_F_SP_ENQ | RING_F_SC_DEQ);
      pl->observations = observations.get();
    }
  }

  uint32_t install(const flow_spec &f) {
    uint32_t idx = ft.alloc();
    if (idx == FLOW_NONE) throw dp_error(ERR_FLOWTABLE_FULL, "setup flows exceed the capacity");
    flow_entry &e = ft.entry(idx);
    flow_key key = f.key;
    // As dataplane::resolve_flow(): a decap flow's key has its tunnel's outer part.
    if (f.action == FLOW_ACT_DECAP) {
      if (f.tunnel >= MAX_TUNNELS || !snap->tun[f.tunnel].active) throw dp_error(ERR_NOT_FOUND, "setup flow: no such tunnel");
      tunnel_key_outer(snap->tun[f.tunnel], &key);
    }
    flow_entry_init(e, key, f.action, FLOW_NONE, pl_now);
    ft.set_nat(idx, f.nat);
    if (f.action == FLOW_ACT_DECAP) e.tunnel = f.tunnel;
    if (f.action == FLOW_ACT_ENCAP) {
      e.target = f.tunnel;
    } else {
      if (n_adj == 1024) throw dp_error(ERR_LIMIT, "too many test adjacencies");
      adjacency &a = adj.get()[n_adj];
      memcpy(a.dst_mac, f.dst_mac, 6);
      memcpy(a.src_mac, f.src_mac, 6);
      a.port = f.out_port;
      e.target = static_cast<uint16_t>(n_adj++);
    }
    return idx;
  }
};

Napi::Object counts_delta(Napi::Env env, const worker_stats &before, const worker_stats &after, std::string *single) {
  Napi::Object o = Napi::Object::New(env);
  for (unsigned r = 0; r < PUNT_REASON_COUNT; r++)
    if (after.punts[r] != before.punts[r]) *single = punt_reason_names[r];
  for (unsigned r = 0; r < DROP_REASON_COUNT; r++)
    if (after.drops[r] != before.drops[r]) *single = drop_reason_names[r];
  if (after.fast_packets != before.fast_packets) *single = "forward";
  return o;
}

// process(setup, packets: {port, frame, headroom?, segments?}[], { burst? })
//   -> { results: {port|null, frame|null, reason?}[], stats, flows }
Napi::Value Process(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    harness h(as_object(info.Length() > 0 ? info[0] : env.Undefined(), "setup"));
    if (info.Length() < 2 || !info[1].IsArray()) throw dp_error(ERR_INVALID_ARGUMENT, "process(setup, packets[])");
    Napi::Array pkts = info[1].As<Napi::Array>();
    Napi::Object opts = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
    uint32_t burst = get_uint_or(opts, "burst", "options", 1, BURST_SIZE, BURST_SIZE);
    // The time of processing, after the flows were installed at setup.now.
    h.pl->now_s = get_uint_or(opts, "now", "options", 0, UINT32_MAX, h.pl->now_s);

    guarded_mbufs mbufs;
    std::vector<rte_mbuf *> in;
    std::vector<uint16_t> in_port;
    for (uint32_t i = 0; i < pkts.Length(); i++) {
      Napi::Object p = as_object(pkts.Get(i), "packets[]");
      Napi::Value fv = p.Get("frame");
      if (!fv.IsBuffer()) throw dp_error(ERR_INVALID_ARGUMENT, "packets[].frame: expected a Buffer");
      auto frame = fv.As<Napi::Buffer<uint8_t>>();
      uint16_t headroom = static_cast<uint16_t>(get_uint_or(p, "headroom", "packets[]", 0, 4096, RTE_PKTMBUF_HEADROOM));
      in.push_back(mbufs.make(frame.Data(), frame.Length(), headroom, segments_of(p)));
      in_port.push_back(to_port(p.Get("port"), "packets[].port"));
    }

    Napi::Array results = Napi::Array::New(env, in.size());
    pipeline &pl = *h.pl;
    for (size_t start = 0; start < in.size();) {
      size_t end = start + 1;
      while (end < in.size() && end - start < burst && in_port[end] == in_port[start]) end++;
      worker_stats before = *h.stats;
      process_burst(pl, in_port[start], &in[start], static_cast<uint16_t>(end - start));
      std::string single;
      counts_delta(env, before, *h.stats, &single);

      for (size_t i = start; i < end; i++) {
        Napi::Object r = Napi::Object::New(env);
        r.Set("port", env.Null());
        r.Set("frame", env.Null());
        for (unsigned d = 0; d < pl.n_dirty; d++) {
          tx_buffer &b = pl.tx[pl.dirty[d]];
          for (unsigned k = 0; k < b.n; k++)
            if (b.pkts[k] == in[i]) {
              r.Set("port", pl.dirty[d]);
              r.Set("frame", read_packet(env, in[i]));
              r.Set("segments", segment_lengths(env, in[i]));
            }
        }
        if (end - start == 1) r.Set("reason", single);
        results.Set(static_cast<uint32_t>(i), r);
      }
      for (unsigned d = 0; d < pl.n_dirty; d++) pl.tx[pl.dirty[d]].n = 0;
      pl.n_dirty = 0;
      pl.n_drops = 0;
      start = end;
    }

    const worker_stats &st = *h.stats;
    Napi::Object so = Napi::Object::New(env);
    so.Set("rxPackets", Napi::Number::New(env, static_cast<double>(st.rx_packets)));
    so.Set("fastPackets", Napi::Number::New(env, static_cast<double>(st.fast_packets)));
    so.Set("fastBytes", Napi::Number::New(env, static_cast<double>(st.fast_bytes)));
    Napi::Object punts = Napi::Object::New(env), drops = Napi::Object::New(env);
    for (unsigned r = 0; r < PUNT_REASON_COUNT; r++) punts.Set(punt_reason_names[r], Napi::Number::New(env, static_cast<double>(st.punts[r])));
    for (unsigned r = 0; r < DROP_REASON_COUNT; r++) drops.Set(drop_reason_names[r], Napi::Number::New(env, static_cast<double>(st.drops[r])));
    so.Set("punts", punts);
    so.Set("drops", drops);

    Napi::Array flows = Napi::Array::New(env, h.flows.size());
    for (size_t i = 0; i < h.flows.size(); i++) {
      auto [io, ir] = h.flows[i];
      Napi::Object fo = Napi::Object::New(env);
      auto dir = [&](uint32_t idx) {
        Napi::Object d = Napi::Object::New(env);
        flow_counter c = h.ft.counter(idx);
        d.Set("packets", Napi::Number::New(env, static_cast<double>(c.packets)));
        d.Set("bytes", Napi::Number::New(env, static_cast<double>(c.bytes)));
        d.Set("teardown", (h.ft.entry(idx).state & FLOW_STATE_TEARDOWN) != 0);
        d.Set("closing", (h.ft.entry(idx).state & FLOW_STATE_CLOSING) != 0);
        d.Set("lastSeen", h.ft.entry(idx).last_seen);
        return d;
      };
      fo.Set("orig", dir(io));
      fo.Set("reply", ir == FLOW_NONE ? Napi::Value(env.Null()) : Napi::Value(dir(ir)));
      flows.Set(static_cast<uint32_t>(i), fo);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("results", results);
    out.Set("stats", so);
    out.Set("flows", flows);
    Napi::Array reports = Napi::Array::New(env);
    for (uint16_t id = 0; id < MAX_TUNNELS; id++) {
      if (h.path_mtu_reports[id] == 0) continue;
      Napi::Object r = Napi::Object::New(env);
      r.Set("tunnel", id);
      r.Set("mtu", h.path_mtu_reports[id]);
      reports.Set(reports.Length(), r);
    }
    out.Set("pathMtuReports", reports);
    if (h.observations != nullptr) {
      std::vector<observation> recs(rte_ring_count(h.observations.get()));
      unsigned n = rte_ring_sc_dequeue_burst_elem(h.observations.get(), recs.data(), sizeof(observation),
                                                  static_cast<unsigned>(recs.size()), nullptr);
      out.Set("observations", bytes_to_js(env, reinterpret_cast<const uint8_t *>(recs.data()), n * sizeof(observation)));
    }
    return out;
  });
}

// flowtableExercise({ capacity, count, seed }): insert count random keys, look them all up
// one by one and in bulk, remove every other one, look up again. Returns what it saw.
Napi::Value FlowtableExercise(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    Napi::Object o = as_object(info.Length() > 0 ? info[0] : env.Undefined(), "options");
    uint32_t capacity = get_uint(o, "capacity", "options", 1, MAX_FLOWS);
    uint32_t count = get_uint(o, "count", "options", 0, MAX_FLOWS);
    uint32_t seed = get_uint_or(o, "seed", "options", 0, UINT32_MAX, 1);
    // Keys that differ only in a counter (consecutive addresses), as real traffic has them.
    bool sequential = get_bool_or(o, "sequential", "options", false);
    flowtable ft;
    if (ft.create(capacity, 1, nullptr, heap_mem, 0) != 0) throw dp_error(ERR_NO_MEMORY, "flowtable");
    std::mt19937 rng(seed);
    std::vector<flow_key> keys(count);
    std::vector<uint32_t> idx(count, FLOW_NONE);
    uint32_t inserted = 0, full = 0, duplicate = 0;
    for (uint32_t i = 0; i < count; i++) {
      flow_key &k = keys[i];
      flow_key_zero(&k);
      k.l3proto = FLOW_L3_IPV4;
      k.l4proto = IPPROTO_UDP;
      if (sequential) {
        k.ip4.src = rte_cpu_to_be_32(0x0a000000u + i);
        k.ip4.dst = rte_cpu_to_be_32(0xc0a80001u);
        k.sport = rte_cpu_to_be_16(1000);
        k.dport = rte_cpu_to_be_16(2000);
      } else {
        k.ip4.src = rng();
        k.ip4.dst = rng();
        k.sport = static_cast<uint16_t>(rng());
        k.dport = static_cast<uint16_t>(rng());
      }
      uint32_t e = ft.alloc();
      if (e == FLOW_NONE) {
        full++;
        continue;
      }
      ft.entry(e).key = k;
      int rc = ft.publish(e);
      if (rc == 0) {
        idx[i] = e;
        inserted++;
      } else {
        ft.discard(e);
        (rc == -EEXIST ? duplicate : full)++;
      }
    }
    auto count_found = [&](bool bulk) {
      uint32_t found = 0, wrong = 0;
      for (uint32_t base = 0; base < count; base += flowtable::MAX_LOOKUP) {
        unsigned n = std::min<uint32_t>(flowtable::MAX_LOOKUP, count - base);
        uint32_t out[flowtable::MAX_LOOKUP];
        if (bulk)
          ft.lookup_bulk(&keys[base], n, out);
        else
          for (unsigned j = 0; j < n; j++) out[j] = ft.find(keys[base + j]);
        for (unsigned j = 0; j < n; j++) {
          if (out[j] == FLOW_NONE) continue;
          if (out[j] == idx[base + j])
            found++;
          else
            wrong++;
        }
      }
      return std::make_pair(found, wrong);
    };
    auto [found_single, wrong_single] = count_found(false);
    auto [found_bulk, wrong_bulk] = count_found(true);
    uint32_t spilled = ft.spilled();
    uint32_t removed = 0;
    for (uint32_t i = 0; i < count; i += 2)
      if (idx[i] != FLOW_NONE) {
        ft.remove(idx[i]);
        idx[i] = FLOW_NONE;
        removed++;
      }
    auto [found_after, wrong_after] = count_found(true);
    Napi::Object r = Napi::Object::New(env);
    r.Set("inserted", inserted);
    r.Set("full", full);
    r.Set("duplicate", duplicate);
    r.Set("spilled", spilled);
    r.Set("buckets", ft.bucket_count());
    r.Set("foundSingle", found_single);
    r.Set("foundBulk", found_bulk);
    r.Set("wrong", wrong_single + wrong_bulk + wrong_after);
    r.Set("removed", removed);
    r.Set("foundAfterRemove", found_after);
    r.Set("activeAfterRemove", ft.active());
    return r;
  });
}

// flowtableCollide({ capacity, craftSeed, hashSeed? }): the attack a known hash seed allows.
// Keys are crafted (by search) whose hashes under craftSeed share a victim key's primary and
// secondary bucket, sixteen of them to fill both; they and then the victim go into a table
// hashed with hashSeed (random when absent). Returns whether the victim found a place.
Napi::Value FlowtableCollide(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    Napi::Object o = as_object(info.Length() > 0 ? info[0] : env.Undefined(), "options");
    uint32_t capacity = get_uint(o, "capacity", "options", 1, 4096);
    uint32_t craft_seed = get_uint(o, "craftSeed", "options", 0, UINT32_MAX);
    bool fixed = o.Has("hashSeed");
    uint32_t hash_seed = get_uint_or(o, "hashSeed", "options", 0, UINT32_MAX, 0);
    flowtable crafted, attacked;
    if (crafted.create(capacity, 1, nullptr, heap_mem, 0, 0, &craft_seed) != 0 ||
        attacked.create(capacity, 1, nullptr, heap_mem, 0, 0, fixed ? &hash_seed : nullptr) != 0)
      throw dp_error(ERR_NO_MEMORY, "flowtable");
    auto key_of = [](uint32_t n) {
      flow_key k;
      flow_key_zero(&k);
      k.l3proto = FLOW_L3_IPV4;
      k.l4proto = IPPROTO_UDP;
      k.ip4.src = rte_cpu_to_be_32(0x0a000001u);
      k.ip4.dst = rte_cpu_to_be_32(0xc0a80000u + (n >> 16));
      k.sport = rte_cpu_to_be_16(static_cast<uint16_t>(n));
      k.dport = rte_cpu_to_be_16(53);
      return k;
    };
    const flow_key victim = key_of(0);
    const auto target = crafted.buckets_of(crafted.hash(victim));
    std::vector<flow_key> keys;
    for (uint32_t n = 1; keys.size() < 16 && n < (1u << 28); n++) {
      flow_key k = key_of(n);
      if (crafted.buckets_of(crafted.hash(k)) == target) keys.push_back(k);
    }
    if (keys.size() < 16) throw dp_error(ERR_LIMIT, "no colliding keys found");
    keys.push_back(victim);
    uint32_t placed = 0;
    bool victim_placed = false;
    for (size_t i = 0; i < keys.size(); i++) {
      uint32_t e = attacked.alloc();
      if (e == FLOW_NONE) break;
      attacked.entry(e).key = keys[i];
      if (attacked.publish(e) != 0) {
        attacked.discard(e);
        continue;
      }
      placed++;
      if (i == keys.size() - 1) victim_placed = true;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("placed", placed);
    r.Set("victimPlaced", victim_placed);
    r.Set("seed", attacked.seed());
    return r;
  });
}

// flowtableConcurrency({ capacity, stable, churn, rounds, readers, buckets? }): see
// stress::flowtable_concurrency.
Napi::Value FlowtableConcurrency(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    Napi::Object o = as_object(info.Length() > 0 ? info[0] : env.Undefined(), "options");
    stress::flowtable_options opts;
    opts.capacity = get_uint(o, "capacity", "options", 2, MAX_FLOWS);
    opts.stable = get_uint(o, "stable", "options", 1, MAX_FLOWS);
    opts.churn = get_uint(o, "churn", "options", 1, MAX_FLOWS);
    opts.rounds = get_uint(o, "rounds", "options", 1, 1u << 20);
    opts.readers = get_uint(o, "readers", "options", 1, 8);
    opts.buckets = get_uint_or(o, "buckets", "options", 0, MAX_FLOWS, 0);
    stress::flowtable_result r = stress::flowtable_concurrency(opts);
    Napi::Object res = Napi::Object::New(env);
    res.Set("stableMisses", Napi::Number::New(env, static_cast<double>(r.stable_misses)));
    res.Set("reused", Napi::Number::New(env, static_cast<double>(r.reused)));
    res.Set("lookups", Napi::Number::New(env, static_cast<double>(r.lookups)));
    res.Set("churnHits", Napi::Number::New(env, static_cast<double>(r.churn_hits)));
    res.Set("insertFailures", r.insert_failures);
    res.Set("maxSpilled", r.max_spilled);
    return res;
  });
}

// flowChurn({ flows, rounds, seed? }): see stress::flow_churn.
Napi::Value FlowChurn(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    Napi::Object o = as_object(info.Length() > 0 ? info[0] : env.Undefined(), "options");
    stress::churn_options opts;
    opts.flows = get_uint(o, "flows", "options", 2, 4096);
    opts.rounds = get_uint(o, "rounds", "options", 1, 1u << 24);
    opts.seed = get_uint_or(o, "seed", "options", 0, UINT32_MAX, 1);
    stress::churn_result r = stress::flow_churn(opts);
    Napi::Object res = Napi::Object::New(env);
    res.Set("bursts", Napi::Number::New(env, static_cast<double>(r.bursts)));
    res.Set("forwarded", Napi::Number::New(env, static_cast<double>(r.forwarded)));
    res.Set("wrongMac", Napi::Number::New(env, static_cast<double>(r.wrong_mac)));
    res.Set("removed", Napi::Number::New(env, static_cast<double>(r.removed)));
    res.Set("added", Napi::Number::New(env, static_cast<double>(r.added)));
    res.Set("clashes", Napi::Number::New(env, static_cast<double>(r.clashes)));
    res.Set("reaped", Napi::Number::New(env, static_cast<double>(r.reaped)));
    return res;
  });
}

// Offsets of the observation record fields, for lib/slowpath/observations.ts's decoder test.
Napi::Value ObservationLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", static_cast<uint32_t>(sizeof(observation)));
#define FG_OFFSET(field) o.Set(#field, static_cast<uint32_t>(offsetof(observation, field)))
  FG_OFFSET(tsc);
  FG_OFFSET(key);
  FG_OFFSET(kind);
  FG_OFFSET(reason);
  FG_OFFSET(tcp_flags);
  FG_OFFSET(port);
  FG_OFFSET(tunnel);
  FG_OFFSET(dst_mac);
  FG_OFFSET(src_mac);
  FG_OFFSET(fingerprint);
  FG_OFFSET(l3_len);
#undef FG_OFFSET
  o.Set("keyIp4Src", static_cast<uint32_t>(offsetof(flow_key, ip4.src)));
  o.Set("keyIp4OuterSrc", static_cast<uint32_t>(offsetof(flow_key, ip4.outer_src)));
  o.Set("keyIp6Outer", static_cast<uint32_t>(offsetof(flow_key, ip6.outer)));
  o.Set("keySport", static_cast<uint32_t>(offsetof(flow_key, sport)));
  o.Set("keyInPort", static_cast<uint32_t>(offsetof(flow_key, in_port)));
  o.Set("keyL3", static_cast<uint32_t>(offsetof(flow_key, l3proto)));
  o.Set("keyL4", static_cast<uint32_t>(offsetof(flow_key, l4proto)));
  return o;
}

// Offsets of the flow record fields, for lib/flow-records.ts's decoder test.
Napi::Value FlowRecordLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", static_cast<uint32_t>(sizeof(flow_record)));
  o.Set("directionSize", static_cast<uint32_t>(sizeof(flow_record_direction)));
#define FG_OFFSET(type, field) o.Set(#type "." #field, static_cast<uint32_t>(offsetof(type, field)))
  FG_OFFSET(flow_record, handle);
  FG_OFFSET(flow_record, idle_s);
  FG_OFFSET(flow_record, teardown);
  FG_OFFSET(flow_record, has_reply);
  FG_OFFSET(flow_record, reap_reason);
  FG_OFFSET(flow_record, closing);
  FG_OFFSET(flow_record, orig);
  FG_OFFSET(flow_record, reply);
  FG_OFFSET(flow_record_direction, key);
  FG_OFFSET(flow_record_direction, packets);
  FG_OFFSET(flow_record_direction, bytes);
  FG_OFFSET(flow_record_direction, action);
  FG_OFFSET(flow_record_direction, out_port);
  FG_OFFSET(flow_record_direction, tunnel);
  FG_OFFSET(flow_record_direction, dst_mac);
  FG_OFFSET(flow_record_direction, src_mac);
  FG_OFFSET(flow_record_direction, nat_flags);
  FG_OFFSET(flow_record_direction, nat_sport);
  FG_OFFSET(flow_record_direction, nat_dport);
  FG_OFFSET(flow_record_direction, nat_src);
  FG_OFFSET(flow_record_direction, nat_dst);
#undef FG_OFFSET
  return o;
}

// The key layout, so that TypeScript tests can check the bytes that are hashed.
Napi::Value KeyLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", static_cast<uint32_t>(sizeof(flow_key)));
  o.Set("entrySize", static_cast<uint32_t>(sizeof(flow_entry)));
  return o;
}

}  // namespace

Napi::Object testing_exports(Napi::Env env) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("parse", Napi::Function::New(env, Parse, "parse"));
  t.Set("process", Napi::Function::New(env, Process, "process"));
  t.Set("flowtableExercise", Napi::Function::New(env, FlowtableExercise, "flowtableExercise"));
  t.Set("flowtableConcurrency", Napi::Function::New(env, FlowtableConcurrency, "flowtableConcurrency"));
  t.Set("flowtableCollide", Napi::Function::New(env, FlowtableCollide, "flowtableCollide"));
  t.Set("flowChurn", Napi::Function::New(env, FlowChurn, "flowChurn"));
  t.Set("keyLayout", Napi::Function::New(env, KeyLayout, "keyLayout"));
  t.Set("observationLayout", Napi::Function::New(env, ObservationLayout, "observationLayout"));
  t.Set("flowRecordLayout", Napi::Function::New(env, FlowRecordLayout, "flowRecordLayout"));
  return t;
}

}  // namespace fg::addon
