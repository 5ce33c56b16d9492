// JavaScript <-> C++ conversions for the binding. TypeScript validates and normalises
// everything first (lib/dataplane.ts); these checks are the last line, and their messages
// still name the parameter, what was expected and what was received.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

#include "dp/dataplane.h"
#include "dp/tunnel.h"

namespace fg::addon {

// Throw a JavaScript Error carrying `code` (and `errno` when known) from a dp_error.
[[noreturn]] void throw_js(Napi::Env env, const dp_error &e);

// Run a binding body, turning dp_error and std::exception into JavaScript errors.
template <typename F>
auto guard(Napi::Env env, F &&body) -> decltype(body()) {
  try {
    return body();
  } catch (const dp_error &e) {
    throw_js(env, e);
  } catch (const Napi::Error &) {
    throw;
  } catch (const std::exception &e) {
    throw_js(env, dp_error("ERR_FLOWGATE_INTERNAL", e.what()));
  }
}

// Whether d is an integer in [min, max]. Checked on the double, before any cast: casting
// NaN, an infinity or an out-of-range double to an integer type is undefined behaviour.
bool is_integer_in(double d, double min, double max);

Napi::Object as_object(const Napi::Value &v, const char *what);
uint32_t get_uint(const Napi::Object &o, const char *field, const char *ctx, uint32_t min, uint32_t max);
uint32_t get_uint_or(const Napi::Object &o, const char *field, const char *ctx, uint32_t min, uint32_t max,
                     uint32_t fallback);
bool get_bool_or(const Napi::Object &o, const char *field, const char *ctx, bool fallback);
std::string get_string(const Napi::Object &o, const char *field, const char *ctx);
// A Buffer of exactly len bytes, copied to out; returns false when the field is absent.
bool get_bytes(const Napi::Object &o, const char *field, const char *ctx, size_t len, uint8_t *out, bool required);
uint16_t to_port(const Napi::Value &v, const char *what);

init_options init_options_from(const Napi::Object &o);
port_spec port_spec_from(const Napi::Object &o);
vlan_spec vlan_spec_from(const Napi::Object &o);
tunnel_params tunnel_params_from(const Napi::Object &o);
flow_spec flow_spec_from(const Napi::Object &o, const char *ctx);

Napi::Object port_info_to_js(Napi::Env env, const port_info &p);
Napi::Object port_counters_to_js(Napi::Env env, const port_counters &c);
Napi::Object flow_spec_to_js(Napi::Env env, const flow_spec &f);
Napi::Object stats_to_js(Napi::Env env, const dataplane_stats &s);
Napi::Object reasons_to_js(Napi::Env env);
Napi::Buffer<uint8_t> bytes_to_js(Napi::Env env, const uint8_t *p, size_t len);

}  // namespace fg::addon
