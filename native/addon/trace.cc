// The packet trace's side of the binding: options in, records out (lib/native.ts
// NativeTraceRecord). Records are few (a trace's count) and read as they come, so plain
// objects rather than a packed buffer.
#include <napi.h>

#include "addon/convert.h"
#include "dp/dataplane.h"
#include "dp/reasons.h"
#include "dp/trace.h"

namespace fg::addon {

namespace {

const char *decision_name(uint8_t d) {
  switch (static_cast<trace_decision>(d)) {
    case trace_decision::forward: return "forward";
    case trace_decision::decap: return "decap";
    case trace_decision::encap: return "encap";
    case trace_decision::punt: return "punt";
    case trace_decision::drop:
    case trace_decision::kernel_drop: return "drop";
  }
  return "unknown";
}

Napi::Value reason_name(Napi::Env env, uint8_t decision, uint8_t reason) {
  if (reason == TRACE_NO_REASON) return env.Null();
  switch (static_cast<trace_decision>(decision)) {
    case trace_decision::punt:
      if (reason < PUNT_REASON_COUNT) return Napi::String::New(env, punt_reason_names[reason]);
      break;
    case trace_decision::drop:
      if (reason < DROP_REASON_COUNT) return Napi::String::New(env, drop_reason_names[reason]);
      break;
    case trace_decision::kernel_drop:
      if (reason < KERNEL_DROP_REASON_COUNT) return Napi::String::New(env, kernel_drop_reason_names[reason]);
      break;
    default: break;
  }
  return env.Null();
}

Napi::Value port_or_null(Napi::Env env, uint16_t port) {
  return port == PORT_NONE ? env.Null() : Napi::Number::New(env, port);
}

}  // namespace

trace_options trace_options_from(const Napi::Object &o) {
  trace_options t;
  Napi::Value count = o.Get("count");
  if (!count.IsNumber() || !is_integer_in(count.As<Napi::Number>().DoubleValue(), 1, 9007199254740991.0))
    throw dp_error(ERR_INVALID_ARGUMENT, "trace options.count: expected an integer of at least 1");
  t.count = static_cast<uint64_t>(count.As<Napi::Number>().DoubleValue());
  Napi::Value port = o.Get("port");
  if (!port.IsUndefined() && !port.IsNull()) t.port = to_port(port, "trace options.port");
  Napi::Value filter = o.Get("filter");
  if (!filter.IsUndefined() && !filter.IsNull()) t.filter = get_string(o, "filter", "trace options");
  return t;
}

Napi::Object trace_record_to_js(Napi::Env env, const dataplane &dp, const trace_record &r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("seq", static_cast<double>(r.seq));
  o.Set("tsc", static_cast<double>(r.tsc));
  o.Set("worker", r.worker == TRACE_SLOWPATH ? env.Null() : Napi::Number::New(env, r.worker));
  o.Set("inPort", r.in_port);
  o.Set("outPort", port_or_null(env, r.out_port));
  o.Set("decision", decision_name(r.decision));
  o.Set("reason", reason_name(env, r.decision, r.reason));
  // A punt that ended as a drop (no slow-path port, ECN...) says why it was punted too.
  o.Set("puntReason", r.punt_reason < PUNT_REASON_COUNT ? Napi::String::New(env, punt_reason_names[r.punt_reason])
                                                         : env.Null());
  uint64_t handle = 0;
  bool reply = false;
  // The entry may have been removed (and even reused) since: a flow id that no longer
  // names the connection is left out rather than guessed.
  if (r.flow != FLOW_NONE && dp.flow_of_entry(r.flow, &handle, &reply)) {
    o.Set("flow", static_cast<double>(handle));
    o.Set("flowReply", reply);
  } else {
    o.Set("flow", env.Null());
    o.Set("flowReply", false);
  }
  o.Set("wireLength", r.wire_len);
  o.Set("rxLink", (r.flags & TRACE_F_RX_L3) ? "ip" : "ethernet");
  o.Set("rx", bytes_to_js(env, r.rx, r.rx_len));
  if (r.flags & TRACE_F_TX) {
    o.Set("txLength", r.tx_len);
    o.Set("txLink", (r.flags & TRACE_F_TX_L3) ? "ip" : "ethernet");
    o.Set("tx", bytes_to_js(env, r.tx, r.tx_caplen));
  } else {
    o.Set("txLength", env.Null());
    o.Set("txLink", env.Null());
    o.Set("tx", env.Null());
  }
  return o;
}

}  // namespace fg::addon
