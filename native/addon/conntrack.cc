// The N-API binding of fg::ct::conntrack (native/ct): a Conntrack class whose requests
// return promises and whose events arrive in batches, all as packed records decoded by
// lib/conntrack.ts. The conntrack thread never touches JavaScript: results and event
// batches cross through thread-safe functions and are turned into values on the JS thread.
#include <napi.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "addon/convert.h"
#include "addon/promises.h"
#include "addon/thread_binding.h"
#include "ct/conntrack.h"

namespace fg::addon {

namespace {

using ct::ct_record;
using ct::ct_tuple;
using ct::ct_update;

// Event batches queued to JavaScript at most; beyond this the conntrack thread drops the
// batch and resynchronises (the consumer then gets the whole table).
constexpr size_t EVENT_QUEUE_BATCHES = 64;

// Packed fixed-size items from a Buffer, copied before they cross to the thread.
template <typename T>
std::vector<T> items_from(const Napi::Value &v, const char *what) {
  if (!v.IsBuffer())
    throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": expected a Buffer of packed " + std::to_string(sizeof(T)) + "-byte records");
  auto b = v.As<Napi::Buffer<uint8_t>>();
  if (b.Length() % sizeof(T) != 0)
    throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": expected a multiple of " + std::to_string(sizeof(T)) +
                                              " bytes, received " + std::to_string(b.Length()));
  std::vector<T> out(b.Length() / sizeof(T));
  if (!out.empty()) memcpy(out.data(), b.Data(), b.Length());
  return out;
}

void check_tuple(const ct_tuple &t, size_t i, const char *what) {
  if ((t.family != 4 && t.family != 6) || (t.l4proto != 6 && t.l4proto != 17))
    throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(i) +
                                              "]: expected family 4 or 6 and protocol 6 (TCP) or 17 (UDP)");
}

class ConntrackWrap : public Napi::ObjectWrap<ConntrackWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Conntrack",
                       {
                           InstanceMethod<&ConntrackWrap::Get>("get"),
                           InstanceMethod<&ConntrackWrap::Update>("update"),
                           InstanceMethod<&ConntrackWrap::Dump>("dump"),
                           InstanceMethod<&ConntrackWrap::Stats>("stats"),
                           InstanceMethod<&ConntrackWrap::Close>("close"),
                           StaticMethod<&ConntrackWrap::Layout>("layout"),
                       });
  }

  explicit ConntrackWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<ConntrackWrap>(info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      Napi::Object o = as_object(info.Length() > 0 ? info[0] : env.Undefined(), "Conntrack options");
      ct::options opts;
      Napi::Value events = o.Get("events");
      if (!events.IsArray()) throw dp_error(ERR_INVALID_ARGUMENT, "Conntrack options.events: expected an array of 'new', 'update', 'destroy'");
      Napi::Array a = events.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value e = a.Get(i);
        std::string s = e.IsString() ? e.As<Napi::String>().Utf8Value() : "";
        if (s == "new") opts.ev_new = true;
        else if (s == "update") opts.ev_update = true;
        else if (s == "destroy") opts.ev_destroy = true;
        else throw dp_error(ERR_INVALID_ARGUMENT, "Conntrack options.events[" + std::to_string(i) + "]: expected 'new', 'update' or 'destroy'");
      }
      opts.rcvbuf = get_uint_or(o, "rcvbuf", "Conntrack options", 0, 1u << 30, 0);
      Napi::Value ns = o.Get("netns");
      if (!ns.IsUndefined() && !ns.IsNull()) opts.netns = get_string(o, "netns", "Conntrack options");
      Napi::Value cb = o.Get("onEvents");
      if (!cb.IsFunction()) throw dp_error(ERR_INVALID_ARGUMENT, "Conntrack options.onEvents: expected a function");

      binding_.open(env, cb.As<Napi::Function>(), "flowgate conntrack", EVENT_QUEUE_BATCHES, this);
      using batch = std::pair<std::vector<ct_record>, ct::batch_kind>;
      auto send = binding_.sender<batch>([](Napi::Env env, Napi::Function cb, batch &b) {
        auto *records = new std::vector<ct_record>(std::move(b.first));
        cb.Call({records_buffer(env, records), Napi::String::New(env, b.second == ct::batch_kind::resync ? "resync" : "events")});
      });
      opts.deliver = [send](std::vector<ct_record> &&records, ct::batch_kind kind) mutable { return send({std::move(records), kind}); };
      binding_.start(env, [&] { return std::make_unique<ct::conntrack>(std::move(opts)); });
      return 0;
    });
  }

 private:
  ct::conntrack &core(const char *what) { return binding_.core(ct::ERR_CONNTRACK_CLOSED, std::string("Conntrack.") + what); }

  // The callback of a request answered with records: settles p with them as one Buffer.
  ct::conntrack::records_done resolve_records(completions::completion *p) {
    return [this, p](std::vector<ct_record> &&out, ct::failure f) {
      auto *records = new std::vector<ct_record>(std::move(out));
      binding_.completions.finish(p, [records, f](Napi::Env env, Napi::Promise::Deferred &d) {
        if (f) {
          delete records;
          completions::reject(env, d, f.code, f.message, f.err);
        } else {
          d.Resolve(records_buffer(env, records));
        }
      });
    };
  }

  Napi::Value Get(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      std::vector<ct_tuple> tuples = items_from<ct_tuple>(info.Length() > 0 ? info[0] : env.Undefined(), "Conntrack.get tuples");
      for (size_t i = 0; i < tuples.size(); i++) check_tuple(tuples[i], i, "Conntrack.get tuples");
      ct::conntrack &c = core("get");
      auto *p = binding_.completions.begin(env);
      Napi::Promise promise = p->deferred.Promise();
      c.get(std::move(tuples), resolve_records(p));
      return promise;
    });
  }

  Napi::Value Update(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      std::vector<ct_update> updates = items_from<ct_update>(info.Length() > 0 ? info[0] : env.Undefined(), "Conntrack.update updates");
      for (size_t i = 0; i < updates.size(); i++) check_tuple(updates[i].orig, i, "Conntrack.update updates");
      ct::conntrack &c = core("update");
      auto *p = binding_.completions.begin(env);
      Napi::Promise promise = p->deferred.Promise();
      c.update(std::move(updates), [this, p](ct::ct_update_result r, ct::failure f) {
        binding_.completions.finish(p, [r, f](Napi::Env env, Napi::Promise::Deferred &d) {
          if (f) return completions::reject(env, d, f.code, f.message, f.err);
          Napi::Object o = Napi::Object::New(env);
          o.Set("ok", r.ok);
          o.Set("notFound", r.not_found);
          o.Set("failed", r.failed);
          d.Resolve(o);
        });
      });
      return promise;
    });
  }

  Napi::Value Dump(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      ct::conntrack &c = core("dump");
      auto *p = binding_.completions.begin(env);
      Napi::Promise promise = p->deferred.Promise();
      c.dump(resolve_records(p));
      return promise;
    });
  }

  Napi::Value Stats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    ct::ct_stats s = binding_.stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("events", static_cast<double>(s.events));
    o.Set("enobufs", static_cast<double>(s.enobufs));
    o.Set("resyncs", static_cast<double>(s.resyncs));
    o.Set("gets", static_cast<double>(s.gets));
    o.Set("updates", static_cast<double>(s.updates));
    o.Set("errors", static_cast<double>(s.errors));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    binding_.close();
    return info.Env().Undefined();
  }

  // The packed layouts, for lib/conntrack.ts to check its constants against.
  static Napi::Value Layout(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Object record = Napi::Object::New(env);
#define FIELD(obj, T, name, js) obj.Set(js, static_cast<double>(offsetof(T, name)))
    record.Set("size", static_cast<double>(sizeof(ct_record)));
    FIELD(record, ct_record, id, "id");
    FIELD(record, ct_record, status, "status");
    FIELD(record, ct_record, timeout, "timeout");
    FIELD(record, ct_record, mark, "mark");
    FIELD(record, ct_record, zone, "zone");
    FIELD(record, ct_record, family, "family");
    FIELD(record, ct_record, l4proto, "l4proto");
    FIELD(record, ct_record, tcp_state, "tcpState");
    FIELD(record, ct_record, event, "event");
    FIELD(record, ct_record, tcp_flags_orig, "tcpFlagsOrig");
    FIELD(record, ct_record, tcp_flags_reply, "tcpFlagsReply");
    FIELD(record, ct_record, orig, "orig");
    FIELD(record, ct_record, reply, "reply");
    FIELD(record, ct_record, helper, "helper");
    FIELD(record, ct_record, found, "found");
    FIELD(record, ct_record, has_helper, "hasHelper");
    FIELD(record, ct_record, error, "error");
    Napi::Object rtuple = Napi::Object::New(env);
    rtuple.Set("size", static_cast<double>(sizeof(ct::ct_record_tuple)));
    FIELD(rtuple, ct::ct_record_tuple, src, "src");
    FIELD(rtuple, ct::ct_record_tuple, dst, "dst");
    FIELD(rtuple, ct::ct_record_tuple, sport, "sport");
    FIELD(rtuple, ct::ct_record_tuple, dport, "dport");
    Napi::Object tuple = Napi::Object::New(env);
    tuple.Set("size", static_cast<double>(sizeof(ct_tuple)));
    FIELD(tuple, ct_tuple, family, "family");
    FIELD(tuple, ct_tuple, l4proto, "l4proto");
    FIELD(tuple, ct_tuple, zone, "zone");
    FIELD(tuple, ct_tuple, sport, "sport");
    FIELD(tuple, ct_tuple, dport, "dport");
    FIELD(tuple, ct_tuple, src, "src");
    FIELD(tuple, ct_tuple, dst, "dst");
    Napi::Object update = Napi::Object::New(env);
    update.Set("size", static_cast<double>(sizeof(ct_update)));
    FIELD(update, ct_update, orig, "orig");
    FIELD(update, ct_update, timeout, "timeout");
    FIELD(update, ct_update, flags, "flags");
    FIELD(update, ct_update, tcp_state, "tcpState");
#undef FIELD
    Napi::Object o = Napi::Object::New(env);
    o.Set("record", record);
    o.Set("recordTuple", rtuple);
    o.Set("tuple", tuple);
    o.Set("update", update);
    return o;
  }

  thread_binding<ct::conntrack, ct::ct_stats> binding_;
};

}  // namespace

Napi::Function conntrack_class(Napi::Env env) { return ConntrackWrap::Define(env); }

}  // namespace fg::addon
