// The N-API binding: a thin layer over fg::dataplane. Every function is synchronous and
// runs on the JavaScript thread, which is the dataplane's one control thread. The whole
// surface is declared in TypeScript in lib/native.ts; change both together.
#include <napi.h>

#include <atomic>
#include <memory>

#include "addon/convert.h"
#include "addon/flow_record.h"
#include "dp/dataplane.h"
#include "dp/observation.h"

#include <rte_cycles.h>

namespace fg::addon {

Napi::Object testing_exports(Napi::Env env);
Napi::Function conntrack_class(Napi::Env env);
Napi::Function rtnl_class(Napi::Env env);
trace_options trace_options_from(const Napi::Object &o);
Napi::Object trace_record_to_js(Napi::Env env, const dataplane &dp, const trace_record &r);

namespace {

struct addon_state {
  dataplane dp;
  // Delivers observation batches from the slow-path thread to the JavaScript callback.
  Napi::ThreadSafeFunction observations;

  ~addon_state() { shutdown(); }
  void shutdown() {
    dp.shutdown();  // joins the slow-path thread: nothing calls the function after this
    if (observations) {
      observations.Release();
      observations = Napi::ThreadSafeFunction();
    }
  }
};

// Batches queued to JavaScript at most (a bound the thread-safe function enforces), and
// how many the slow-path thread lets be in flight before it gathers records instead.
constexpr size_t OBSERVATION_QUEUE_BATCHES = 64;
constexpr int OBSERVATION_BATCHES_IN_FLIGHT = 2;

dataplane &dp_of(const Napi::CallbackInfo &info) { return info.Env().GetInstanceData<addon_state>()->dp; }

Napi::Value arg(const Napi::CallbackInfo &info, size_t i) { return i < info.Length() ? info[i] : info.Env().Undefined(); }

Napi::Value Init(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).init(init_options_from(as_object(arg(info, 0), "init options")));
    return info.Env().Undefined();
  });
}

Napi::Value Shutdown(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    info.Env().GetInstanceData<addon_state>()->shutdown();
    return info.Env().Undefined();
  });
}

// onObservations(callback(records: Buffer)): packed observation records, in batches, on
// the JavaScript thread. Set before start(). The callback does not keep the loop alive.
Napi::Value OnObservations(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction())
      throw dp_error(ERR_INVALID_ARGUMENT, "onObservations: expected a function");
    addon_state *st = env.GetInstanceData<addon_state>();
    if (st->observations) throw dp_error(ERR_STATE, "onObservations: a callback is set already");
    st->observations = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "flowgate observations",
                                                     OBSERVATION_QUEUE_BATCHES, 1);
    st->observations.Unref(env);
    Napi::ThreadSafeFunction tsfn = st->observations;
    // Batches handed to JavaScript and not yet processed: while a few are, records wait on
    // the slow-path thread and gather into a larger batch instead of queueing many small ones.
    auto in_flight = std::make_shared<std::atomic<int>>(0);
    observation_sink sink;
    sink.ready = [in_flight] { return in_flight->load(std::memory_order_acquire) < OBSERVATION_BATCHES_IN_FLIGHT; };
    sink.deliver = [tsfn, in_flight](std::unique_ptr<std::vector<observation>> batch) mutable {
      std::vector<observation> *raw = batch.release();
      in_flight->fetch_add(1, std::memory_order_acq_rel);
      napi_status status =
          tsfn.NonBlockingCall(raw, [in_flight](Napi::Env env, Napi::Function cb, std::vector<observation> *b) {
            auto buf = Napi::Buffer<uint8_t>::New(
                env, reinterpret_cast<uint8_t *>(b->data()), b->size() * sizeof(observation),
                [](Napi::Env, uint8_t *, std::vector<observation> *owner) { delete owner; }, b);
            // Counted until the callback returns (or throws): processing is what it is busy with.
            struct done {
              std::atomic<int> &n;
              ~done() { n.fetch_sub(1, std::memory_order_acq_rel); }
            } guard{*in_flight};
            cb.Call({buf});
          });
      if (status != napi_ok) {
        in_flight->fetch_sub(1, std::memory_order_acq_rel);
        delete raw;
        return false;
      }
      return true;
    };
    st->dp.set_observation_sink(std::move(sink));
    return env.Undefined();
  });
}

Napi::Value SetPuntPolicer(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Object o = as_object(arg(info, 1), "policer");
    dp_of(info).set_punt_policer(to_port(arg(info, 0), "port"), get_uint(o, "rate", "policer", 0, UINT32_MAX),
                                 get_uint(o, "burst", "policer", 1, UINT32_MAX));
    return info.Env().Undefined();
  });
}

Napi::Value SetFlowCounters(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Value v = arg(info, 0);
    if (!v.IsBoolean()) throw dp_error(ERR_INVALID_ARGUMENT, "setFlowCounters: expected a boolean");
    dp_of(info).set_flow_counters(v.As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

Napi::Value AddPort(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    return Napi::Number::New(info.Env(), dp_of(info).add_port(port_spec_from(as_object(arg(info, 0), "port"))));
  });
}

Napi::Value RemovePort(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).remove_port(to_port(arg(info, 0), "port"));
    return info.Env().Undefined();
  });
}

Napi::Value AddVlan(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    return Napi::Number::New(info.Env(), dp_of(info).add_vlan(vlan_spec_from(as_object(arg(info, 0), "vlan"))));
  });
}

Napi::Value RemoveVlan(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).remove_vlan(to_port(arg(info, 0), "vlan"));
    return info.Env().Undefined();
  });
}

Napi::Value SetPortSlowpath(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).set_port_slowpath(to_port(arg(info, 0), "port"), to_port(arg(info, 1), "slowpath"));
    return info.Env().Undefined();
  });
}

Napi::Value SetPortMtu(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("mtu", arg(info, 1));
    dp_of(info).set_port_mtu(to_port(arg(info, 0), "port"),
                             static_cast<uint16_t>(get_uint(o, "mtu", "setPortMtu", 68, 65535)));
    return info.Env().Undefined();
  });
}

Napi::Value PortInfo(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return port_info_to_js(info.Env(), dp_of(info).get_port_info(to_port(arg(info, 0), "port"))); });
}

Napi::Value PortCounters(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    return port_counters_to_js(info.Env(), dp_of(info).get_port_counters(to_port(arg(info, 0), "port")));
  });
}

// portXstats(port): { name: value } of the NIC's extended statistics, in the driver's order.
Napi::Value PortXstats(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    std::vector<port_xstat> xstats = dp_of(info).get_port_xstats(to_port(arg(info, 0), "port"));
    Napi::Object o = Napi::Object::New(info.Env());
    // Above 2^53 a value loses its last bits, as every counter crossing into JavaScript.
    for (const port_xstat &x : xstats) o.Set(x.name, Napi::Number::New(info.Env(), static_cast<double>(x.value)));
    return o;
  });
}

Napi::Value Ports(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    std::vector<uint16_t> ids = dp_of(info).ports();
    Napi::Array a = Napi::Array::New(info.Env(), ids.size());
    for (size_t i = 0; i < ids.size(); i++) a.Set(static_cast<uint32_t>(i), ids[i]);
    return a;
  });
}

Napi::Value Start(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).start();
    return info.Env().Undefined();
  });
}

Napi::Value Stop(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).stop();
    return info.Env().Undefined();
  });
}

Napi::Value Running(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), dp_of(info).running()); }

Napi::Value AddTunnel(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    return Napi::Number::New(info.Env(), dp_of(info).add_tunnel(tunnel_params_from(as_object(arg(info, 0), "tunnel"))));
  });
}

uint16_t tunnel_id(const Napi::CallbackInfo &info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", arg(info, 0));
  return static_cast<uint16_t>(get_uint(o, "id", "tunnel", 0, MAX_TUNNELS - 1));
}

Napi::Value UpdateTunnel(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).update_tunnel(tunnel_id(info), tunnel_params_from(as_object(arg(info, 1), "tunnel")));
    return info.Env().Undefined();
  });
}

Napi::Value RemoveTunnel(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).remove_tunnel(tunnel_id(info));
    return info.Env().Undefined();
  });
}

Napi::Object tunnel_mtu_to_js(Napi::Env env, const tunnel_mtu_info &t) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", t.id);
  o.Set("mtu", t.mtu);
  o.Set("pathMtu", t.path_mtu == 0 ? env.Null() : Napi::Number::New(env, t.path_mtu));
  o.Set("effectiveMtu", t.effective_mtu);
  return o;
}

Napi::Value TunnelMtu(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return tunnel_mtu_to_js(info.Env(), dp_of(info).tunnel_mtu(tunnel_id(info))); });
}

Napi::Value ApplyPathMtuReports(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    Napi::Object o = arg(info, 0).IsObject() ? arg(info, 0).As<Napi::Object>() : Napi::Object::New(env);
    std::vector<tunnel_mtu_info> changed =
        dp_of(info).apply_path_mtu_reports(get_uint_or(o, "expiresSeconds", "applyPathMtuReports", 1, UINT32_MAX, 600));
    Napi::Array a = Napi::Array::New(env, changed.size());
    for (size_t i = 0; i < changed.size(); i++) a.Set(static_cast<uint32_t>(i), tunnel_mtu_to_js(env, changed[i]));
    return a;
  });
}

uint64_t handle_arg(const Napi::CallbackInfo &info) {
  Napi::Value v = arg(info, 0);
  // Handles are below 2^53 (exact in JavaScript).
  if (!v.IsNumber() || !is_integer_in(v.As<Napi::Number>().DoubleValue(), 0, 9007199254740991.0))
    throw dp_error(ERR_INVALID_ARGUMENT, "flow handle: expected an integer 0..2^53-1");
  double d = v.As<Napi::Number>().DoubleValue();
  return static_cast<uint64_t>(d);
}

Napi::Value AddFlowPair(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    flow_spec orig = flow_spec_from(as_object(arg(info, 0), "orig"), "orig");
    Napi::Value r = arg(info, 1);
    if (r.IsNull() || r.IsUndefined())
      return Napi::Number::New(info.Env(), static_cast<double>(dp_of(info).add_flow_pair(orig, nullptr)));
    flow_spec reply = flow_spec_from(as_object(r, "reply"), "reply");
    return Napi::Number::New(info.Env(), static_cast<double>(dp_of(info).add_flow_pair(orig, &reply)));
  });
}

Napi::Value RemoveFlow(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return Napi::Boolean::New(info.Env(), dp_of(info).remove_flow(handle_arg(info))); });
}

// n flows as one Buffer of packed flow_records; fill(i, record) writes record i (zeroed).
template <typename Fill>
Napi::Buffer<uint8_t> flow_records(Napi::Env env, size_t n, Fill &&fill) {
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(env, n * sizeof(flow_record));
  auto *records = reinterpret_cast<flow_record *>(buf.Data());
  memset(records, 0, n * sizeof(flow_record));
  for (size_t i = 0; i < n; i++) fill(i, &records[i]);
  return buf;
}

Napi::Value GetFlow(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    flow_info f;
    if (!dp_of(info).get_flow(handle_arg(info), &f)) return info.Env().Null();
    return flow_records(info.Env(), 1, [&](size_t, flow_record *r) { flow_record_fill(r, f, 0); });
  });
}

// listFlows({ from, max }): { records, next } (see dataplane::list_flows).
Napi::Value ListFlows(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Object o = as_object(arg(info, 0), "list options");
    uint32_t from = get_uint(o, "from", "list options", 0, UINT32_MAX);
    uint32_t max = get_uint(o, "max", "list options", 1, UINT32_MAX);
    uint32_t next = 0;
    std::vector<flow_info> flows = dp_of(info).list_flows(from, max, &next);
    Napi::Object page = Napi::Object::New(info.Env());
    page.Set("records", flow_records(info.Env(), flows.size(), [&](size_t i, flow_record *r) { flow_record_fill(r, flows[i], 0); }));
    page.Set("next", next);
    return page;
  });
}

Napi::Value Reap(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Object o = as_object(arg(info, 0), "reap options");
    uint32_t tcp = get_uint(o, "tcpTimeout", "reap options", 0, UINT32_MAX);
    uint32_t udp = get_uint(o, "udpTimeout", "reap options", 0, UINT32_MAX);
    std::vector<reaped_flow> reaped = dp_of(info).reap(tcp, udp);
    return flow_records(info.Env(), reaped.size(), [&](size_t i, flow_record *r) {
      flow_record_fill(r, reaped[i].info, static_cast<uint8_t>(1 + static_cast<unsigned>(reaped[i].reason)));
    });
  });
}

Napi::Value FlushFlows(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return Napi::Number::New(info.Env(), dp_of(info).flush_flows()); });
}

// rewriteNextHop(port, { family, from, to }): how many adjacencies of that family now carry
// MAC `to` instead of `from`.
Napi::Value RewriteNextHop(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    uint16_t port = to_port(arg(info, 0), "port");
    Napi::Object o = as_object(arg(info, 1), "next hop");
    uint8_t from[6], to[6];
    get_bytes(o, "from", "next hop", 6, from, true);
    get_bytes(o, "to", "next hop", 6, to, true);
    uint8_t family = static_cast<uint8_t>(get_uint(o, "family", "next hop", 4, 6));
    if (family != 4 && family != 6) throw dp_error(ERR_INVALID_ARGUMENT, "next hop.family: expected 4 or 6");
    return Napi::Number::New(info.Env(), dp_of(info).rewrite_next_hop(port, family, from, to));
  });
}

// startCapture({ port, direction, snaplen, count, filter, fd }): the capture's id; the
// descriptor is duplicated (see dataplane::start_capture).
Napi::Value StartCapture(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Object o = as_object(arg(info, 0), "capture");
    capture_options c;
    c.port = to_port(o.Get("port"), "capture.port");
    c.direction = static_cast<uint8_t>(get_uint(o, "direction", "capture", CAPTURE_RX, CAPTURE_BOTH));
    c.snaplen = get_uint_or(o, "snaplen", "capture", 64, CAPTURE_DEFAULT_SNAPLEN, CAPTURE_DEFAULT_SNAPLEN);
    c.count = get_uint_or(o, "count", "capture", 0, UINT32_MAX, 0);
    c.filter = o.Has("filter") ? get_string(o, "filter", "capture") : std::string();
    c.fd = static_cast<int>(get_uint(o, "fd", "capture", 0, INT32_MAX));
    return Napi::Number::New(info.Env(), static_cast<double>(dp_of(info).start_capture(c)));
  });
}

Napi::Object capture_stats_to_js(Napi::Env env, const capture_stats &s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("written", static_cast<double>(s.written));
  o.Set("matched", static_cast<double>(s.matched));
  o.Set("lost", static_cast<double>(s.lost));
  o.Set("bytes", static_cast<double>(s.bytes));
  o.Set("end", capture_end_name(s.end));
  o.Set("jit", s.jit);
  return o;
}

uint64_t capture_id(const Napi::CallbackInfo &info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", arg(info, 0));
  return get_uint(o, "id", "capture", 1, UINT32_MAX);
}

Napi::Value CaptureStats(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return capture_stats_to_js(info.Env(), dp_of(info).capture_stats_of(capture_id(info))); });
}

Napi::Value StopCapture(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return capture_stats_to_js(info.Env(), dp_of(info).stop_capture(capture_id(info))); });
}

Napi::Value Stats(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] { return stats_to_js(info.Env(), dp_of(info).stats()); });
}

Napi::Value Reasons(const Napi::CallbackInfo &info) { return reasons_to_js(info.Env()); }

// The TSC now: observation records carry TSC times, and this is how JavaScript compares.
Napi::Value Tsc(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), static_cast<double>(rte_rdtsc())); }

// traceStart({ count, port?, filter? }): the next `count` packets are traced (dp/trace.h).
Napi::Value TraceStart(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).trace_start(trace_options_from(as_object(arg(info, 0), "trace options")));
    return info.Env().Undefined();
  });
}

// traceRead(max): { records, running, remaining, lost }: the records traced since the last
// read, at most max.
Napi::Value TraceRead(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("max", arg(info, 0));
    const unsigned max = get_uint(o, "max", "traceRead", 1, UINT32_MAX);
    trace_status st;
    dataplane &dp = dp_of(info);
    std::vector<trace_record> records = dp.trace_read(max, &st);
    Napi::Array a = Napi::Array::New(env, records.size());
    for (size_t i = 0; i < records.size(); i++) a.Set(static_cast<uint32_t>(i), trace_record_to_js(env, dp, records[i]));
    Napi::Object page = Napi::Object::New(env);
    page.Set("records", a);
    page.Set("running", st.running);
    page.Set("remaining", static_cast<double>(st.remaining));
    page.Set("lost", static_cast<double>(st.lost));
    return page;
  });
}

Napi::Value TraceStop(const Napi::CallbackInfo &info) {
  return guard(info.Env(), [&] {
    dp_of(info).trace_stop();
    return info.Env().Undefined();
  });
}

Napi::Object ModuleInit(Napi::Env env, Napi::Object exports) {
  // Freed when the environment is torn down (process exit, worker exit): the finaliser stops
  // the workers and cleans up EAL, so pcap output files are flushed and no lcore outlives us.
  env.SetInstanceData<addon_state>(new addon_state());
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("addPort", Napi::Function::New(env, AddPort, "addPort"));
  exports.Set("removePort", Napi::Function::New(env, RemovePort, "removePort"));
  exports.Set("addVlan", Napi::Function::New(env, AddVlan, "addVlan"));
  exports.Set("removeVlan", Napi::Function::New(env, RemoveVlan, "removeVlan"));
  exports.Set("setPortSlowpath", Napi::Function::New(env, SetPortSlowpath, "setPortSlowpath"));
  exports.Set("setPortMtu", Napi::Function::New(env, SetPortMtu, "setPortMtu"));
  exports.Set("setPuntPolicer", Napi::Function::New(env, SetPuntPolicer, "setPuntPolicer"));
  exports.Set("setFlowCounters", Napi::Function::New(env, SetFlowCounters, "setFlowCounters"));
  exports.Set("onObservations", Napi::Function::New(env, OnObservations, "onObservations"));
  exports.Set("portInfo", Napi::Function::New(env, PortInfo, "portInfo"));
  exports.Set("portCounters", Napi::Function::New(env, PortCounters, "portCounters"));
  exports.Set("portXstats", Napi::Function::New(env, PortXstats, "portXstats"));
  exports.Set("ports", Napi::Function::New(env, Ports, "ports"));
  exports.Set("start", Napi::Function::New(env, Start, "start"));
  exports.Set("stop", Napi::Function::New(env, Stop, "stop"));
  exports.Set("running", Napi::Function::New(env, Running, "running"));
  exports.Set("addTunnel", Napi::Function::New(env, AddTunnel, "addTunnel"));
  exports.Set("updateTunnel", Napi::Function::New(env, UpdateTunnel, "updateTunnel"));
  exports.Set("removeTunnel", Napi::Function::New(env, RemoveTunnel, "removeTunnel"));
  exports.Set("tunnelMtu", Napi::Function::New(env, TunnelMtu, "tunnelMtu"));
  exports.Set("applyPathMtuReports", Napi::Function::New(env, ApplyPathMtuReports, "applyPathMtuReports"));
  exports.Set("addFlowPair", Napi::Function::New(env, AddFlowPair, "addFlowPair"));
  exports.Set("removeFlow", Napi::Function::New(env, RemoveFlow, "removeFlow"));
  exports.Set("getFlow", Napi::Function::New(env, GetFlow, "getFlow"));
  exports.Set("listFlows", Napi::Function::New(env, ListFlows, "listFlows"));
  exports.Set("reap", Napi::Function::New(env, Reap, "reap"));
  exports.Set("rewriteNextHop", Napi::Function::New(env, RewriteNextHop, "rewriteNextHop"));
  exports.Set("flushFlows", Napi::Function::New(env, FlushFlows, "flushFlows"));
  exports.Set("stats", Napi::Function::New(env, Stats, "stats"));
  exports.Set("reasons", Napi::Function::New(env, Reasons, "reasons"));
  exports.Set("tsc", Napi::Function::New(env, Tsc, "tsc"));
  exports.Set("traceStart", Napi::Function::New(env, TraceStart, "traceStart"));
  exports.Set("traceRead", Napi::Function::New(env, TraceRead, "traceRead"));
  exports.Set("traceStop", Napi::Function::New(env, TraceStop, "traceStop"));
  exports.Set("startCapture", Napi::Function::New(env, StartCapture, "startCapture"));
  exports.Set("captureStats", Napi::Function::New(env, CaptureStats, "captureStats"));
  exports.Set("stopCapture", Napi::Function::New(env, StopCapture, "stopCapture"));
  exports.Set("Conntrack", conntrack_class(env));
  exports.Set("Rtnl", rtnl_class(env));
  exports.Set("testing", testing_exports(env));
  return exports;
}

}  // namespace
}  // namespace fg::addon

static Napi::Object InitFlowgate(Napi::Env env, Napi::Object exports) { return fg::addon::ModuleInit(env, exports); }

NODE_API_MODULE(flowgate, InitFlowgate)
