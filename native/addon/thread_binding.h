// What a wrapper of a core that owns a native thread (Conntrack, Rtnl) holds besides its
// requests: the core, the thread-safe function its events cross by, the environment's
// cleanup hook, and the stats the core had when it was closed.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "addon/promises.h"
#include "dp/error.h"

namespace fg::addon {

template <typename Core, typename Stats>
class thread_binding {
 public:
  thread_binding() = default;
  thread_binding(const thread_binding &) = delete;
  thread_binding &operator=(const thread_binding &) = delete;
  ~thread_binding() { close(); }

  // Event batches to `on_events`, at most `batches` queued, never keeping the process alive;
  // and the completions of the requests of `owner`.
  void open(Napi::Env env, Napi::Function on_events, const char *name, size_t batches, Napi::Reference<Napi::Object> *owner) {
    events_ = Napi::ThreadSafeFunction::New(env, on_events, std::string(name) + " events", batches, 1);
    events_.Unref(env);
    completions.open(env, (std::string(name) + " completions").c_str(), owner);
  }

  // A sender for the core's thread: queues a payload for `call(env, on_events, payload)` on
  // the JavaScript thread, which is skipped once the binding is closed. Returns false when
  // the queue is full, so that the core resynchronises instead.
  template <typename T, typename Call>
  std::function<bool(T &&)> sender(Call call) {
    Napi::ThreadSafeFunction tsfn = events_;
    auto closed = closed_;
    return [tsfn, closed, call](T &&payload) mutable {
      auto *raw = new T(std::move(payload));
      napi_status st = tsfn.NonBlockingCall(raw, [closed, call](Napi::Env env, Napi::Function cb, T *p) {
        std::unique_ptr<T> owned(p);
        if (!*closed) call(env, cb, *owned);
      });
      if (st != napi_ok) delete raw;
      return st == napi_ok;
    };
  }

  // Keeps the core that make() starts (letting go of the thread-safe functions if it
  // throws), and closes it when the environment goes away.
  template <typename Make>
  void start(Napi::Env env, Make &&make) {
    try {
      core_ = make();
    } catch (...) {
      release();
      throw;
    }
    env_ = env;
    napi_add_env_cleanup_hook(env, &thread_binding::cleanup_hook, this);
    hooked_ = true;
  }

  // The core, or an error with `closed_code` naming `what` once closed.
  Core &core(const char *closed_code, const std::string &what) {
    if (!core_) throw dp_error(closed_code, what + ": closed");
    return *core_;
  }

  Stats stats() const { return core_ ? core_->stats() : last_stats_; }

  // Joins the thread (its callbacks have all been queued by then), then lets go of the
  // thread-safe functions; results still queued are delivered, events are not. Idempotent.
  void close() {
    if (hooked_) {
      napi_remove_env_cleanup_hook(env_, &thread_binding::cleanup_hook, this);
      hooked_ = false;
    }
    shutdown();
  }

  addon::completions completions;

 private:
  static void cleanup_hook(void *arg) {
    auto *self = static_cast<thread_binding *>(arg);
    self->hooked_ = false;
    self->shutdown();
  }

  void shutdown() {
    *closed_ = true;
    if (core_) {
      last_stats_ = core_->stats();
      core_->close();
      core_.reset();
    }
    release();
  }

  void release() {
    if (events_) {
      events_.Release();
      events_ = Napi::ThreadSafeFunction();
    }
    completions.release();
  }

  std::unique_ptr<Core> core_;
  Napi::ThreadSafeFunction events_;
  std::shared_ptr<std::atomic<bool>> closed_ = std::make_shared<std::atomic<bool>>(false);
  napi_env env_ = nullptr;
  bool hooked_ = false;
  Stats last_stats_;
};

}  // namespace fg::addon
