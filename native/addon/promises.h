// Promises settled on the JavaScript thread with what a native thread hands back, for the
// bindings whose requests a thread of their own answers (Conntrack, Rtnl).
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fg::addon {

inline Napi::Error make_error(Napi::Env env, const char *code, const std::string &message, int err) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (err != 0) e.Set("errno", Napi::Number::New(env, err));
  return e;
}

// A Buffer over the vector's bytes, which it then owns.
template <typename T>
Napi::Buffer<uint8_t> records_buffer(Napi::Env env, std::vector<T> *v) {
  if (v->empty()) {
    delete v;
    return Napi::Buffer<uint8_t>::New(env, 0);
  }
  return Napi::Buffer<uint8_t>::New(
      env, reinterpret_cast<uint8_t *>(v->data()), v->size() * sizeof(T),
      [](Napi::Env, uint8_t *, std::vector<T> *owner) { delete owner; }, v);
}

// The pending requests of one wrapper object: while any is pending, the wrapper stays
// referenced and the thread-safe function keeps the event loop alive; otherwise neither
// holds the process. Used on the JavaScript thread only, but finish(), from any thread.
class completions {
 public:
  using settle_fn = std::function<void(Napi::Env, Napi::Promise::Deferred &)>;
  struct completion {
    Napi::Promise::Deferred deferred;
    settle_fn settle;
  };

  // An unlimited queue: a request's result is never dropped.
  void open(Napi::Env env, const char *name, Napi::Reference<Napi::Object> *owner) {
    owner_ = owner;
    tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo &) {}), name, 0, 1);
    tsfn_.Unref(env);
  }

  // Lets go of the thread-safe function; results still queued are delivered.
  void release() {
    if (tsfn_) {
      tsfn_.Release();
      tsfn_ = Napi::ThreadSafeFunction();
    }
  }

  completion *begin(Napi::Env env) {
    auto *c = new completion{Napi::Promise::Deferred::New(env), {}};
    if (pending_++ == 0) {
      tsfn_.Ref(env);
      owner_->Ref();
    }
    return c;
  }

  // Queues the settling of c to the JavaScript thread.
  void finish(completion *c, settle_fn settle) {
    c->settle = std::move(settle);
    Napi::ThreadSafeFunction tsfn = tsfn_;
    napi_status st = tsfn.NonBlockingCall(c, [this](Napi::Env env, Napi::Function, completion *done) {
      std::unique_ptr<completion> owned(done);
      Napi::HandleScope scope(env);
      try {
        owned->settle(env, owned->deferred);
      } catch (const Napi::Error &e) {
        owned->deferred.Reject(e.Value());
      }
      if (--pending_ == 0) {
        if (tsfn_) tsfn_.Unref(env);
        owner_->Unref();
      }
    });
    if (st != napi_ok) delete c;  // the environment is going away
  }

  static void reject(Napi::Env env, Napi::Promise::Deferred &d, const char *code, const std::string &message, int err) {
    d.Reject(make_error(env, code, message, err).Value());
  }

 private:
  Napi::ThreadSafeFunction tsfn_;
  Napi::Reference<Napi::Object> *owner_ = nullptr;
  size_t pending_ = 0;  // JS thread only
};

}  // namespace fg::addon
