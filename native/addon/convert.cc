#include "convert.h"

#include <cmath>
#include <cstring>

#include "dp/reasons.h"

namespace fg::addon {
namespace {

const char *const action_names[] = {"none", "fwd4", "fwd6", "decap", "encap"};
constexpr unsigned ACTION_COUNT = sizeof(action_names) / sizeof(action_names[0]);

std::string describe(const Napi::Value &v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBuffer()) return "a Buffer of " + std::to_string(v.As<Napi::Buffer<uint8_t>>().Length()) + " bytes";
  if (v.IsNumber()) return "the number " + v.ToString().Utf8Value();
  if (v.IsString()) return "the string '" + v.As<Napi::String>().Utf8Value() + "'";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsArray()) return "an array";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

[[noreturn]] void invalid(const char *ctx, const char *field, const std::string &expected, const Napi::Value &got) {
  throw dp_error(ERR_INVALID_ARGUMENT,
                 std::string(ctx) + "." + field + ": expected " + expected + ", received " + describe(got));
}

void set_u64(Napi::Object &o, const char *k, uint64_t v) { o.Set(k, Napi::Number::New(o.Env(), static_cast<double>(v))); }

}  // namespace

void throw_js(Napi::Env env, const dp_error &e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, e.code));
  if (e.err != 0) err.Set("errno", Napi::Number::New(env, e.err));
  throw err;
}

bool is_integer_in(double d, double min, double max) {
  return std::isfinite(d) && d >= min && d <= max && std::trunc(d) == d;
}

Napi::Object as_object(const Napi::Value &v, const char *what) {
  if (!v.IsObject() || v.IsArray())
    throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": expected an object, received " + describe(v));
  return v.As<Napi::Object>();
}

uint32_t get_uint(const Napi::Object &o, const char *field, const char *ctx, uint32_t min, uint32_t max) {
  Napi::Value v = o.Get(field);
  std::string range = "an integer " + std::to_string(min) + ".." + std::to_string(max);
  if (!v.IsNumber()) invalid(ctx, field, range, v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!is_integer_in(d, min, max)) invalid(ctx, field, range, v);
  return static_cast<uint32_t>(d);
}

uint32_t get_uint_or(const Napi::Object &o, const char *field, const char *ctx, uint32_t min, uint32_t max,
                     uint32_t fallback) {
  Napi::Value v = o.Get(field);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  return get_uint(o, field, ctx, min, max);
}

bool get_bool_or(const Napi::Object &o, const char *field, const char *ctx, bool fallback) {
  Napi::Value v = o.Get(field);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) invalid(ctx, field, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

std::string get_string(const Napi::Object &o, const char *field, const char *ctx) {
  Napi::Value v = o.Get(field);
  if (!v.IsString()) invalid(ctx, field, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

bool get_bytes(const Napi::Object &o, const char *field, const char *ctx, size_t len, uint8_t *out, bool required) {
  Napi::Value v = o.Get(field);
  if (!required && (v.IsUndefined() || v.IsNull())) return false;
  if (!v.IsBuffer() || v.As<Napi::Buffer<uint8_t>>().Length() != len)
    invalid(ctx, field, "a Buffer of " + std::to_string(len) + " bytes", v);
  memcpy(out, v.As<Napi::Buffer<uint8_t>>().Data(), len);
  return true;
}

uint16_t to_port(const Napi::Value &v, const char *what) {
  if (v.IsNull() || v.IsUndefined()) return PORT_NONE;
  if (!v.IsNumber()) throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": expected a port id, received " + describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!is_integer_in(d, 0, MAX_PORTS - 1))
    throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": expected a port id 0.." + std::to_string(MAX_PORTS - 1) +
                                             ", received " + describe(v));
  return static_cast<uint16_t>(d);
}

init_options init_options_from(const Napi::Object &o) {
  const char *ctx = "init options";
  init_options opts;
  Napi::Value args = o.Get("ealArgs");
  if (!args.IsArray()) invalid(ctx, "ealArgs", "an array of strings", args);
  Napi::Array arr = args.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value a = arr.Get(i);
    if (!a.IsString()) invalid(ctx, "ealArgs[]", "a string", a);
    opts.eal_args.push_back(a.As<Napi::String>().Utf8Value());
  }
  opts.flow_capacity = get_uint_or(o, "flowCapacity", ctx, 1, MAX_FLOWS, opts.flow_capacity);
  opts.mbufs = get_uint_or(o, "mbufs", ctx, 1023, 1u << 26, opts.mbufs);
  opts.mbuf_data_room = static_cast<uint16_t>(get_uint_or(o, "mbufDataRoom", ctx, 128, 65535 - RTE_PKTMBUF_HEADROOM,
                                                          opts.mbuf_data_room));
  opts.rx_desc = static_cast<uint16_t>(get_uint_or(o, "rxDesc", ctx, 64, 32768, opts.rx_desc));
  opts.tx_desc = static_cast<uint16_t>(get_uint_or(o, "txDesc", ctx, 64, 32768, opts.tx_desc));
  Napi::Value idle = o.Get("idle");
  if (!idle.IsUndefined()) {
    std::string mode = idle.IsString() ? idle.As<Napi::String>().Utf8Value() : "";
    if (mode == "busy")
      opts.idle = idle_mode::busy;
    else if (mode == "adaptive")
      opts.idle = idle_mode::adaptive;
    else
      invalid(ctx, "idle", "'busy' or 'adaptive'", idle);
  }
  return opts;
}

port_spec port_spec_from(const Napi::Object &o) {
  const char *ctx = "port";
  port_spec s;
  s.name = get_string(o, "name", ctx);
  s.device = get_string(o, "device", ctx);
  s.mtu = static_cast<uint16_t>(get_uint_or(o, "mtu", ctx, 68, 65535, 0));
  s.has_mac = get_bytes(o, "mac", ctx, 6, s.mac, false);
  s.promiscuous = get_bool_or(o, "promiscuous", ctx, false);
  s.poll = get_bool_or(o, "poll", ctx, true);
  Napi::Value l3 = o.Get("l3");
  if (!l3.IsUndefined() && !l3.IsNull()) s.l3 = get_bool_or(o, "l3", ctx, false) ? 1 : 0;
  return s;
}

namespace {

struct tunnel_mode_name {
  uint8_t mode;
  const char *name;
};
constexpr tunnel_mode_name tunnel_mode_names[] = {
    {TUNNEL_IP4IP6, "ip4ip6"}, {TUNNEL_IP6IP6, "ip6ip6"}, {TUNNEL_IPIP, "ipip"}, {TUNNEL_SIT, "sit"}};

const char *tunnel_mode_to_name(uint8_t mode) {
  for (const auto &m : tunnel_mode_names)
    if (m.mode == mode) return m.name;
  return "unknown";
}

}  // namespace

vlan_spec vlan_spec_from(const Napi::Object &o) {
  const char *ctx = "vlan";
  vlan_spec s;
  s.name = get_string(o, "name", ctx);
  s.parent = to_port(o.Get("parent"), "vlan.parent");
  if (s.parent == PORT_NONE) invalid(ctx, "parent", "a port id", o.Get("parent"));
  s.vid = static_cast<uint16_t>(get_uint(o, "id", ctx, 1, 4094));
  s.ad = get_bool_or(o, "ad", ctx, false);
  s.mtu = static_cast<uint16_t>(get_uint_or(o, "mtu", ctx, 68, 65535, 0));
  s.has_mac = get_bytes(o, "mac", ctx, 6, s.mac, false);
  s.pcp = static_cast<uint8_t>(get_uint_or(o, "pcp", ctx, 0, 7, 0));
  return s;
}

tunnel_params tunnel_params_from(const Napi::Object &o) {
  const char *ctx = "tunnel";
  tunnel_params p{};
  p.mode = TUNNEL_IP4IP6;
  if (!o.Get("mode").IsUndefined()) {
    std::string mode = get_string(o, "mode", ctx);
    p.mode = 0;
    for (const auto &m : tunnel_mode_names)
      if (mode == m.name) p.mode = m.mode;
    if (p.mode == 0) invalid(ctx, "mode", "'ip4ip6', 'ip6ip6', 'ipip' or 'sit'", o.Get("mode"));
  }
  const size_t alen = tunnel_outer_family(p.mode) == 4 ? 4 : 16;
  get_bytes(o, "local", ctx, alen, p.local, true);
  get_bytes(o, "remote", ctx, alen, p.remote, true);
  Napi::Value limit = o.Get("encapLimit");
  p.encap_limit = limit.IsNull() || limit.IsUndefined() ? -1 : static_cast<int16_t>(get_uint(o, "encapLimit", ctx, 0, 255));
  p.hop_limit = static_cast<uint8_t>(get_uint(o, "hopLimit", ctx, 0, 255));
  Napi::Value tclass = o.Get("tclass");
  p.tclass = tclass.IsNull() ? -1 : static_cast<int16_t>(get_uint(o, "tclass", ctx, 0, 255));
  p.flowlabel = get_uint_or(o, "flowLabel", ctx, 0, 0xfffff, 0);
  p.flowlabel_hash = get_bool_or(o, "flowLabelHash", ctx, false);
  p.pmtudisc = get_bool_or(o, "pmtudisc", ctx, true);
  p.mtu = static_cast<uint16_t>(get_uint(o, "mtu", ctx, 68, 65535));
  p.port = to_port(o.Get("port"), "tunnel.port");
  if (p.port == PORT_NONE) invalid(ctx, "port", "a port id", o.Get("port"));
  get_bytes(o, "dstMac", ctx, 6, p.dst_mac, true);
  get_bytes(o, "srcMac", ctx, 6, p.src_mac, true);
  p.slowpath_port = to_port(o.Get("slowpathPort"), "tunnel.slowpathPort");
  return p;
}

flow_spec flow_spec_from(const Napi::Object &o, const char *ctx) {
  flow_spec f;
  flow_key_zero(&f.key);
  flow_key &k = f.key;
  k.in_port = to_port(o.Get("inPort"), "flow.inPort");
  if (k.in_port == PORT_NONE) invalid(ctx, "inPort", "a port id", o.Get("inPort"));
  uint32_t l3 = get_uint(o, "l3", ctx, 4, 6);
  if (l3 != 4 && l3 != 6) invalid(ctx, "l3", "4 or 6", o.Get("l3"));
  k.l3proto = static_cast<uint8_t>(l3);
  k.l4proto = static_cast<uint8_t>(get_uint(o, "l4", ctx, 0, 255));
  // A decap flow's key is the inner packet's here: the dataplane adds its tunnel's outer part.
  if (l3 == 4) {
    get_bytes(o, "src", ctx, 4, reinterpret_cast<uint8_t *>(&k.ip4.src), true);
    get_bytes(o, "dst", ctx, 4, reinterpret_cast<uint8_t *>(&k.ip4.dst), true);
  } else {
    get_bytes(o, "src", ctx, 16, k.ip6.src, true);
    get_bytes(o, "dst", ctx, 16, k.ip6.dst, true);
  }
  k.sport = rte_cpu_to_be_16(static_cast<uint16_t>(get_uint(o, "sport", ctx, 0, 65535)));
  k.dport = rte_cpu_to_be_16(static_cast<uint16_t>(get_uint(o, "dport", ctx, 0, 65535)));

  std::string action = get_string(o, "action", ctx);
  for (unsigned a = 1; a < ACTION_COUNT; a++)
    if (action == action_names[a]) f.action = static_cast<uint8_t>(a);
  if (f.action == FLOW_ACT_NONE) invalid(ctx, "action", "'fwd4', 'fwd6', 'decap' or 'encap'", o.Get("action"));
  if (f.action == FLOW_ACT_ENCAP || f.action == FLOW_ACT_DECAP)
    f.tunnel = static_cast<uint16_t>(get_uint(o, "tunnel", ctx, 0, MAX_TUNNELS - 1));
  if (f.action != FLOW_ACT_ENCAP) {
    f.out_port = to_port(o.Get("outPort"), "flow.outPort");
    if (f.out_port == PORT_NONE) invalid(ctx, "outPort", "a port id", o.Get("outPort"));
    get_bytes(o, "dstMac", ctx, 6, f.dst_mac, true);
    f.has_src_mac = get_bytes(o, "srcMac", ctx, 6, f.src_mac, false);
  }
  Napi::Value nat = o.Get("nat");
  if (!nat.IsUndefined() && !nat.IsNull()) {
    std::string nctx = std::string(ctx) + ".nat";
    Napi::Object n = as_object(nat, nctx.c_str());
    size_t alen = l3 == 4 ? 4 : 16;
    flow_nat_spec &s = f.nat;
    if (get_bytes(n, "src", nctx.c_str(), alen, s.src, false)) s.flags |= NAT_F_SRC;
    if (get_bytes(n, "dst", nctx.c_str(), alen, s.dst, false)) s.flags |= NAT_F_DST;
    if (!n.Get("sport").IsUndefined()) {
      s.sport = rte_cpu_to_be_16(static_cast<uint16_t>(get_uint(n, "sport", nctx.c_str(), 1, 65535)));
      s.flags |= NAT_F_SPORT;
    }
    if (!n.Get("dport").IsUndefined()) {
      s.dport = rte_cpu_to_be_16(static_cast<uint16_t>(get_uint(n, "dport", nctx.c_str(), 1, 65535)));
      s.flags |= NAT_F_DPORT;
    }
  }
  return f;
}

Napi::Buffer<uint8_t> bytes_to_js(Napi::Env env, const uint8_t *p, size_t len) {
  return Napi::Buffer<uint8_t>::Copy(env, p, len);
}

Napi::Object port_info_to_js(Napi::Env env, const port_info &p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", p.id);
  o.Set("name", p.name);
  o.Set("device", p.device);
  o.Set("driver", p.driver);
  o.Set("mac", bytes_to_js(env, p.mac, 6));
  o.Set("mtu", p.mtu);
  o.Set("rxQueues", p.rx_queues);
  o.Set("txQueues", p.tx_queues);
  o.Set("linkUp", p.link_up);
  o.Set("linkSpeedMbps", p.link_speed_mbps);
  o.Set("l3", p.l3);
  o.Set("poll", p.poll);
  o.Set("slowpath", p.slowpath == PORT_NONE ? env.Null() : Napi::Number::New(env, p.slowpath));
  if (p.vlan_parent == PORT_NONE) {
    o.Set("vlan", env.Null());
  } else {
    Napi::Object v = Napi::Object::New(env);
    v.Set("parent", p.vlan_parent);
    v.Set("id", p.vlan_id);
    v.Set("ad", p.vlan_ad);
    v.Set("pcp", p.vlan_pcp);
    o.Set("vlan", v);
  }
  return o;
}

Napi::Object port_counters_to_js(Napi::Env env, const port_counters &c) {
  Napi::Object o = Napi::Object::New(env);
  set_u64(o, "rxPackets", c.rx_packets);
  set_u64(o, "rxBytes", c.rx_bytes);
  set_u64(o, "rxMissed", c.rx_missed);
  set_u64(o, "rxErrors", c.rx_errors);
  set_u64(o, "rxNombuf", c.rx_nombuf);
  set_u64(o, "txPackets", c.tx_packets);
  set_u64(o, "txBytes", c.tx_bytes);
  set_u64(o, "txErrors", c.tx_errors);
  set_u64(o, "txDropped", c.tx_dropped);
  return o;
}

Napi::Object flow_spec_to_js(Napi::Env env, const flow_spec &f) {
  Napi::Object o = Napi::Object::New(env);
  const flow_key &k = f.key;
  o.Set("inPort", k.in_port);
  // JavaScript says the inner family for tunnelled keys too, with the mode beside it.
  o.Set("l3", flow_l3_is_ipv4(k.l3proto) ? 4 : 6);
  o.Set("l4", k.l4proto);
  if (flow_l3_is_ipv4(k.l3proto)) {
    o.Set("src", bytes_to_js(env, reinterpret_cast<const uint8_t *>(&k.ip4.src), 4));
    o.Set("dst", bytes_to_js(env, reinterpret_cast<const uint8_t *>(&k.ip4.dst), 4));
  } else {
    o.Set("src", bytes_to_js(env, k.ip6.src, 16));
    o.Set("dst", bytes_to_js(env, k.ip6.dst, 16));
  }
  if (flow_key_is_tunnelled(k)) {
    o.Set("tunnelMode", tunnel_mode_to_name(k.l3proto));
    switch (k.l3proto) {
      case FLOW_L3_IPV4_IN_IPV6:
        o.Set("outerSrc", bytes_to_js(env, k.ip4.outer_src, 16));
        o.Set("outerDst", bytes_to_js(env, k.ip4.outer_dst, 16));
        break;
      case FLOW_L3_IPV4_IN_IPV4:
        o.Set("outerSrc", bytes_to_js(env, k.ip4.outer_src, 4));
        o.Set("outerDst", bytes_to_js(env, k.ip4.outer_src + 4, 4));
        break;
      case FLOW_L3_IPV6_IN_IPV4:
        o.Set("outerSrc", bytes_to_js(env, k.ip6.outer, 4));
        o.Set("outerDst", bytes_to_js(env, k.ip6.outer + 4, 4));
        break;
      default:  // IPv6 in IPv6: the key holds only their fold
        o.Set("outerFold", bytes_to_js(env, k.ip6.outer, 8));
        break;
    }
  }
  o.Set("sport", rte_be_to_cpu_16(k.sport));
  o.Set("dport", rte_be_to_cpu_16(k.dport));
  o.Set("action", action_names[f.action < ACTION_COUNT ? f.action : 0]);
  if (f.action == FLOW_ACT_ENCAP || f.action == FLOW_ACT_DECAP) o.Set("tunnel", f.tunnel);
  if (f.action != FLOW_ACT_ENCAP) {
    o.Set("outPort", f.out_port);
    o.Set("dstMac", bytes_to_js(env, f.dst_mac, 6));
    o.Set("srcMac", bytes_to_js(env, f.src_mac, 6));
  }
  if (f.nat.flags != 0) {
    Napi::Object n = Napi::Object::New(env);
    size_t alen = flow_l3_is_ipv4(k.l3proto) ? 4 : 16;
    if (f.nat.flags & NAT_F_SRC) n.Set("src", bytes_to_js(env, f.nat.src, alen));
    if (f.nat.flags & NAT_F_DST) n.Set("dst", bytes_to_js(env, f.nat.dst, alen));
    if (f.nat.flags & NAT_F_SPORT) n.Set("sport", rte_be_to_cpu_16(f.nat.sport));
    if (f.nat.flags & NAT_F_DPORT) n.Set("dport", rte_be_to_cpu_16(f.nat.dport));
    o.Set("nat", n);
  }
  return o;
}

static Napi::Object reason_counts(Napi::Env env, const uint64_t *counts, const char *const *names, unsigned n) {
  Napi::Object o = Napi::Object::New(env);
  for (unsigned i = 0; i < n; i++) set_u64(o, names[i], counts[i]);
  return o;
}

Napi::Object stats_to_js(Napi::Env env, const dataplane_stats &s) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array workers = Napi::Array::New(env, s.workers.size());
  for (size_t i = 0; i < s.workers.size(); i++) {
    const worker_info &w = s.workers[i];
    Napi::Object wo = Napi::Object::New(env);
    wo.Set("index", w.index);
    wo.Set("lcore", w.lcore);
    set_u64(wo, "rxPackets", w.stats.rx_packets);
    set_u64(wo, "fastPackets", w.stats.fast_packets);
    set_u64(wo, "busyCycles", w.stats.busy_cycles);
    set_u64(wo, "idleCycles", w.stats.idle_cycles);
    set_u64(wo, "sleeps", w.stats.sleeps);
    workers.Set(static_cast<uint32_t>(i), wo);
  }
  o.Set("workers", workers);
  set_u64(o, "rxPackets", s.rx_packets);
  set_u64(o, "fastPackets", s.fast_packets);
  set_u64(o, "fastBytes", s.fast_bytes);
  o.Set("punts", reason_counts(env, s.punts, punt_reason_names, PUNT_REASON_COUNT));
  o.Set("drops", reason_counts(env, s.drops, drop_reason_names, DROP_REASON_COUNT));
  Napi::Object flows = Napi::Object::New(env);
  flows.Set("active", s.flows_active);
  flows.Set("entries", s.flow_entries);
  flows.Set("capacity", s.flows_capacity);
  flows.Set("spilled", s.flows_spilled);
  set_u64(flows, "added", s.flows_added);
  set_u64(flows, "removed", s.flows_removed);
  set_u64(flows, "insertFailed", s.flows_insert_failed);
  o.Set("flows", flows);
  o.Set("adjacencies", s.adjacencies);
  Napi::Object mbufs = Napi::Object::New(env);
  mbufs.Set("inUse", s.mbufs_in_use);
  mbufs.Set("total", s.mbufs_total);
  o.Set("mbufs", mbufs);
  set_u64(o, "observationsLost", s.observations_lost);
  Napi::Object sp = Napi::Object::New(env);
  set_u64(sp, "kernelRxPackets", s.slowpath.kernel_rx_packets);
  set_u64(sp, "kernelTxDropped", s.slowpath.kernel_tx_dropped);
  set_u64(sp, "tunWrongFamily", s.slowpath.tun_wrong_family);
  set_u64(sp, "noHeadroom", s.slowpath.no_headroom);
  set_u64(sp, "observations", s.slowpath.observations);
  set_u64(sp, "observationsLost", s.slowpath.observations_lost);
  o.Set("slowpath", sp);
  set_u64(o, "tscHz", s.tsc_hz);
  o.Set("nowSeconds", s.now_s);
  return o;
}

Napi::Object reasons_to_js(Napi::Env env) {
  auto list = [&](const char *const *names, const char *const *texts, unsigned n) {
    Napi::Array a = Napi::Array::New(env, n);
    for (unsigned i = 0; i < n; i++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("name", names[i]);
      r.Set("description", texts[i]);
      a.Set(i, r);
    }
    return a;
  };
  Napi::Object o = Napi::Object::New(env);
  o.Set("punt", list(punt_reason_names, punt_reason_texts, PUNT_REASON_COUNT));
  o.Set("drop", list(drop_reason_names, drop_reason_texts, DROP_REASON_COUNT));
  return o;
}

}  // namespace fg::addon
