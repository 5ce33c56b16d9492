// The N-API binding of fg::rt::rtnl (native/rt): an Rtnl class whose dumps and lookups
// return promises and whose events arrive in batches, as plain objects of the shapes that
// lib/slowpath/monitor.ts declares (small: only the fields of their kind). The rtnl thread
// never touches JavaScript: results and batches cross through thread-safe functions and
// are turned into values on the JavaScript thread.
#include <napi.h>

#include <cstdio>
#include <memory>
#include <string>

#include "addon/convert.h"
#include "addon/promises.h"
#include "addon/thread_binding.h"
#include "rt/rtnl.h"

namespace fg::addon {

namespace {

using rt::record;
using rt::record_kind;

// Event batches queued to JavaScript at most; beyond this the rtnl thread drops the batch
// and resynchronises (the consumer then gets a resync).
constexpr size_t EVENT_QUEUE_BATCHES = 64;

Napi::Value ip_or_null(Napi::Env env, bool has, uint8_t family, const uint8_t *bytes) {
  if (!has) return env.Null();
  return Napi::String::New(env, rt::format_ip(family, bytes));
}

Napi::Value string_or_null(Napi::Env env, const std::string &s) {
  return s.empty() ? env.Null() : Napi::String::New(env, s);
}

Napi::Value mac_or_null(Napi::Env env, bool has, const uint8_t *m) {
  if (!has) return env.Null();
  char text[18];
  snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return Napi::String::New(env, text);
}

std::string prefix_text(uint8_t family, const uint8_t *addr, uint8_t len) {
  return rt::format_ip(family, addr) + "/" + std::to_string(len);
}

// Indexed by record_kind.
constexpr const char *RECORD_KIND_NAMES[] = {"link", "addr", "neigh", "route", "rule", "nexthop"};

Napi::Object record_to_js(Napi::Env env, const record &r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", RECORD_KIND_NAMES[static_cast<size_t>(r.kind)]);
  o.Set("deleted", r.deleted);
  auto family = [&] { return Napi::Number::New(env, r.family); };
  switch (r.kind) {
    case record_kind::link:
      o.Set("index", r.ifindex);
      o.Set("dev", r.dev);
      o.Set("mtu", r.mtu);
      o.Set("up", r.up);
      o.Set("carrier", r.carrier);
      o.Set("mac", mac_or_null(env, r.has_mac, r.mac));
      o.Set("linkKind", string_or_null(env, r.link_kind));
      break;
    case record_kind::addr:
      o.Set("dev", r.dev);
      o.Set("family", family());
      o.Set("address", prefix_text(r.family, r.dst, r.dst_len));
      break;
    case record_kind::neigh:
      o.Set("dev", r.dev);
      o.Set("family", family());
      o.Set("address", rt::format_ip(r.family, r.dst));
      o.Set("mac", mac_or_null(env, r.has_mac, r.mac));
      o.Set("state", rt::nud_state_name(r.state));
      break;
    case record_kind::route:
      o.Set("family", family());
      o.Set("type", rt::route_type_name(r.type));
      o.Set("table", rt::table_name(r.table));
      o.Set("to", prefix_text(r.family, r.dst, r.dst_len));
      o.Set("via", ip_or_null(env, r.has_gateway && !r.multipath, r.family, r.gateway));
      o.Set("dev", r.multipath ? env.Null() : string_or_null(env, r.dev));
      o.Set("metric", r.priority);
      o.Set("protocol", rt::protocol_name(r.protocol));
      o.Set("nhid", r.nhid == 0 ? env.Null() : Napi::Number::New(env, r.nhid));
      o.Set("multipath", r.multipath);
      o.Set("source", ip_or_null(env, r.has_prefsrc, r.family, r.prefsrc));
      break;
    case record_kind::rule:
      o.Set("family", family());
      o.Set("priority", r.priority);
      o.Set("action", rt::rule_action_name(r.type));
      o.Set("table", r.table == 0 ? env.Null() : Napi::String::New(env, rt::table_name(r.table)));
      o.Set("src", r.has_src ? Napi::String::New(env, prefix_text(r.family, r.src, r.src_len)) : env.Null());
      o.Set("dst", r.has_dst ? Napi::String::New(env, prefix_text(r.family, r.dst, r.dst_len)) : env.Null());
      o.Set("iif", string_or_null(env, r.iif));
      o.Set("oif", string_or_null(env, r.oif));
      o.Set("fwmark", r.fwmask == 0 ? env.Null() : Napi::Number::New(env, r.fwmark));
      o.Set("fwmask", r.fwmask == 0 ? env.Null() : Napi::Number::New(env, r.fwmask));
      break;
    case record_kind::nexthop: {
      o.Set("family", r.family == 0 ? env.Null() : family());
      o.Set("id", r.nhid);
      o.Set("dev", string_or_null(env, r.dev));
      o.Set("via", ip_or_null(env, r.has_gateway, r.family, r.gateway));
      Napi::Array group = Napi::Array::New(env, r.group.size());
      for (size_t i = 0; i < r.group.size(); i++) group.Set(static_cast<uint32_t>(i), r.group[i]);
      o.Set("group", group);
      o.Set("blackhole", r.blackhole);
      break;
    }
  }
  return o;
}

Napi::Array records_to_js(Napi::Env env, const std::vector<record> &records) {
  Napi::Array a = Napi::Array::New(env, records.size());
  for (size_t i = 0; i < records.size(); i++) a.Set(static_cast<uint32_t>(i), record_to_js(env, records[i]));
  return a;
}

// {ipv4, ipv6, tables: {main: {ipv4, ipv6}, ...}}
Napi::Object counts_to_js(Napi::Env env, const rt::route_counts &c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ipv4", static_cast<double>(c.ipv4));
  o.Set("ipv6", static_cast<double>(c.ipv6));
  Napi::Object tables = Napi::Object::New(env);
  auto add = [&](const std::map<uint32_t, uint64_t> &per_table, const char *family) {
    for (const auto &[table, n] : per_table) {
      std::string name = rt::table_name(table);
      Napi::Value t = tables.Get(name);
      if (!t.IsObject()) {
        Napi::Object fresh = Napi::Object::New(env);
        fresh.Set("ipv4", 0.0);
        fresh.Set("ipv6", 0.0);
        tables.Set(name, fresh);
        t = fresh;
      }
      t.As<Napi::Object>().Set(family, static_cast<double>(n));
    }
  };
  add(c.tables4, "ipv4");
  add(c.tables6, "ipv6");
  o.Set("tables", tables);
  return o;
}

// A table or protocol given by name or number (lib/slowpath/rtnl.ts has checked it).
int64_t number_or_name(const Napi::Object &o, const char *field, int64_t (*number_of)(const std::string &), uint32_t max) {
  Napi::Value v = o.Get(field);
  if (v.IsUndefined() || v.IsNull()) return 0;
  int64_t n = -1;
  if (v.IsString()) n = number_of(v.As<Napi::String>().Utf8Value());
  else if (v.IsNumber() && is_integer_in(v.As<Napi::Number>().DoubleValue(), 0, max)) n = static_cast<int64_t>(v.As<Napi::Number>().DoubleValue());
  if (n < 0) throw dp_error(ERR_INVALID_ARGUMENT, std::string("Rtnl.routes filter.") + field + ": expected a name or a number 0.." + std::to_string(max));
  return n;
}

class RtnlWrap : public Napi::ObjectWrap<RtnlWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Rtnl",
                       {
                           InstanceMethod<&RtnlWrap::Links>("links"),
                           InstanceMethod<&RtnlWrap::Addresses>("addresses"),
                           InstanceMethod<&RtnlWrap::Neighbors>("neighbors"),
                           InstanceMethod<&RtnlWrap::Neighbor>("neighbor"),
                           InstanceMethod<&RtnlWrap::Routes>("routes"),
                           InstanceMethod<&RtnlWrap::Rules>("rules"),
                           InstanceMethod<&RtnlWrap::Nexthops>("nexthops"),
                           InstanceMethod<&RtnlWrap::RouteGet>("routeGet"),
                           InstanceMethod<&RtnlWrap::CountRoutes>("countRoutes"),
                           InstanceMethod<&RtnlWrap::Stats>("stats"),
                           InstanceMethod<&RtnlWrap::Close>("close"),
                       });
  }

  explicit RtnlWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<RtnlWrap>(info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      Napi::Object o = as_object(info.Length() > 0 ? info[0] : env.Undefined(), "Rtnl options");
      rt::options opts;
      opts.rcvbuf = get_uint_or(o, "rcvbuf", "Rtnl options", 0, 1u << 30, 0);
      Napi::Value ns = o.Get("netns");
      if (!ns.IsUndefined() && !ns.IsNull()) opts.netns = get_string(o, "netns", "Rtnl options");
      Napi::Value cb = o.Get("onEvents");
      if (!cb.IsFunction()) throw dp_error(ERR_INVALID_ARGUMENT, "Rtnl options.onEvents: expected a function");

      binding_.open(env, cb.As<Napi::Function>(), "flowgate rtnl", EVENT_QUEUE_BATCHES, this);
      auto in_flight = std::make_shared<std::atomic<int>>(0);
      opts.events_in_flight = in_flight;
      opts.deliver_events = binding_.sender<std::vector<record>>([in_flight](Napi::Env env, Napi::Function cb, std::vector<record> &batch) {
        // Consumed once the callback has run: the next batch may come.
        struct done {
          std::atomic<int> &n;
          ~done() { n.fetch_sub(1, std::memory_order_acq_rel); }
        } consumed{*in_flight};
        cb.Call({records_to_js(env, batch), Napi::String::New(env, "events")});
      });
      opts.deliver_resync = binding_.sender<rt::resync>([](Napi::Env env, Napi::Function cb, rt::resync &r) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("enobufs", static_cast<double>(r.enobufs));
        o.Set("links", records_to_js(env, r.links));
        o.Set("neighbors", records_to_js(env, r.neighbours));
        o.Set("routes", counts_to_js(env, r.routes));
        cb.Call({o, Napi::String::New(env, "resync")});
      });
      binding_.start(env, [&] { return std::make_unique<rt::rtnl>(std::move(opts)); });
      return 0;
    });
  }

 private:
  rt::rtnl &core(const char *what) { return binding_.core(rt::ERR_RTNL_CLOSED, std::string("Rtnl.") + what); }

  // A request answered with records: a promise of an array of them.
  template <typename Submit>
  Napi::Value records_request(const Napi::CallbackInfo &info, const char *what, Submit &&submit) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      rt::rtnl &c = core(what);
      auto *p = binding_.completions.begin(env);
      Napi::Promise promise = p->deferred.Promise();
      submit(c, [this, p](std::vector<record> &&out, rt::failure f) {
        auto *records = new std::vector<record>(std::move(out));
        binding_.completions.finish(p, [records, f](Napi::Env env, Napi::Promise::Deferred &d) {
          std::unique_ptr<std::vector<record>> owned(records);
          if (f) return completions::reject(env, d, f.code, f.message, f.err);
          d.Resolve(records_to_js(env, *owned));
        });
      });
      return promise;
    });
  }

  Napi::Value Links(const Napi::CallbackInfo &info) {
    return records_request(info, "links", [](rt::rtnl &c, rt::rtnl::records_done done) { c.links(std::move(done)); });
  }
  Napi::Value Addresses(const Napi::CallbackInfo &info) {
    return records_request(info, "addresses", [](rt::rtnl &c, rt::rtnl::records_done done) { c.addresses(std::move(done)); });
  }
  Napi::Value Neighbors(const Napi::CallbackInfo &info) {
    return records_request(info, "neighbors", [](rt::rtnl &c, rt::rtnl::records_done done) { c.neighbours(std::move(done)); });
  }
  Napi::Value Rules(const Napi::CallbackInfo &info) {
    return records_request(info, "rules", [](rt::rtnl &c, rt::rtnl::records_done done) { c.rules(std::move(done)); });
  }
  Napi::Value Nexthops(const Napi::CallbackInfo &info) {
    return records_request(info, "nexthops", [](rt::rtnl &c, rt::rtnl::records_done done) { c.nexthops(std::move(done)); });
  }

  Napi::Value Routes(const Napi::CallbackInfo &info) {
    rt::route_filter filter;
    guard(info.Env(), [&] {
      Napi::Object o = as_object(info.Length() > 0 ? info[0] : info.Env().Undefined(), "Rtnl.routes filter");
      uint32_t family = get_uint(o, "family", "Rtnl.routes filter", 4, 6);
      if (family == 5) throw dp_error(ERR_INVALID_ARGUMENT, "Rtnl.routes filter.family: expected 4 or 6, received 5");
      filter.family = static_cast<uint8_t>(family);
      filter.table = static_cast<uint32_t>(number_or_name(o, "table", rt::table_number, UINT32_MAX));
      filter.protocol = static_cast<uint8_t>(number_or_name(o, "protocol", rt::protocol_number, 255));
      return 0;
    });
    return records_request(info, "routes", [filter](rt::rtnl &c, rt::rtnl::records_done done) { c.routes(filter, std::move(done)); });
  }

  // An address argument: a Buffer of 4 (IPv4) or 16 (IPv6) bytes.
  static std::pair<uint8_t, const uint8_t *> address_arg(const Napi::Value &v, const char *what) {
    if (!v.IsBuffer() || (v.As<Napi::Buffer<uint8_t>>().Length() != 4 && v.As<Napi::Buffer<uint8_t>>().Length() != 16))
      throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": expected a Buffer of 4 (IPv4) or 16 (IPv6) bytes");
    auto b = v.As<Napi::Buffer<uint8_t>>();
    return {static_cast<uint8_t>(b.Length() == 16 ? 6 : 4), b.Data()};
  }

  // A request answered with at most one record: a promise of it, or of null.
  template <typename Submit>
  Napi::Value one_record(Napi::Env env, Submit &&submit) {
    auto *p = binding_.completions.begin(env);
    Napi::Promise promise = p->deferred.Promise();
    submit([this, p](std::vector<record> &&out, rt::failure f) {
      auto *records = new std::vector<record>(std::move(out));
      binding_.completions.finish(p, [records, f](Napi::Env env, Napi::Promise::Deferred &d) {
        std::unique_ptr<std::vector<record>> owned(records);
        if (f) return completions::reject(env, d, f.code, f.message, f.err);
        d.Resolve(owned->empty() ? env.Null() : Napi::Value(record_to_js(env, owned->front())));
      });
    });
    return promise;
  }

  // routeGet(address: Buffer of 4 or 16 bytes): the route record, or null.
  Napi::Value RouteGet(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto [family, bytes] = address_arg(info.Length() > 0 ? info[0] : env.Undefined(), "Rtnl.routeGet address");
      rt::rtnl &c = core("routeGet");
      return one_record(env, [&](rt::rtnl::records_done done) { c.route_get(family, bytes, std::move(done)); });
    });
  }

  // neighbor(dev: string, address: Buffer of 4 or 16 bytes): the entry, or null.
  Napi::Value Neighbor(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      if (info.Length() < 1 || !info[0].IsString()) throw dp_error(ERR_INVALID_ARGUMENT, "Rtnl.neighbor dev: expected an interface name");
      std::string dev = info[0].As<Napi::String>().Utf8Value();
      auto [family, bytes] = address_arg(info.Length() > 1 ? info[1] : env.Undefined(), "Rtnl.neighbor address");
      rt::rtnl &c = core("neighbor");
      return one_record(env, [&](rt::rtnl::records_done done) { c.neighbour(family, bytes, std::move(dev), std::move(done)); });
    });
  }

  Napi::Value CountRoutes(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      rt::rtnl &c = core("countRoutes");
      auto *p = binding_.completions.begin(env);
      Napi::Promise promise = p->deferred.Promise();
      c.count_routes([this, p](rt::route_counts counts, rt::failure f) {
        binding_.completions.finish(p, [counts = std::move(counts), f](Napi::Env env, Napi::Promise::Deferred &d) {
          if (f) return completions::reject(env, d, f.code, f.message, f.err);
          d.Resolve(counts_to_js(env, counts));
        });
      });
      return promise;
    });
  }

  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    rt::rt_stats s = binding_.stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("events", static_cast<double>(s.events));
    o.Set("enobufs", static_cast<double>(s.enobufs));
    o.Set("resyncs", static_cast<double>(s.resyncs));
    o.Set("errors", static_cast<double>(s.errors));
    o.Set("routes", counts_to_js(env, s.routes));
    o.Set("routesSynced", s.routes_synced);
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    binding_.close();
    return info.Env().Undefined();
  }

  thread_binding<rt::rtnl, rt::rt_stats> binding_;
};

}  // namespace

Napi::Function rtnl_class(Napi::Env env) { return RtnlWrap::Define(env); }

}  // namespace fg::addon
