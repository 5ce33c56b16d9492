// The thread of a netlink binding (fg::ct::conntrack, fg::rt::rtnl) and the queue of
// requests it answers: callers queue requests from any thread and wake the thread through
// an eventfd, which its poll() loop watches beside its sockets.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dp/error.h"

namespace fg::nl {

template <typename Request>
class request_thread {
 public:
  using queue = std::deque<std::unique_ptr<Request>>;

  // `what` and `code` name the owner in the error of a failed eventfd().
  request_thread(const char *what, const char *code) {
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) throw dp_error(code, std::string(what) + ": eventfd: " + strerror(errno), errno);
  }
  ~request_thread() {
    stop();
    ::close(wake_fd_);
  }
  request_thread(const request_thread &) = delete;
  request_thread &operator=(const request_thread &) = delete;

  // Runs body(started) on the thread and returns once it set `started`; rethrows what it
  // set instead (the thread has then ended).
  template <typename Body>
  void start(Body &&body) {
    auto started = std::make_shared<std::promise<void>>();
    std::future<void> ready = started->get_future();
    thread_ = std::thread([body = std::forward<Body>(body), started]() mutable { body(started); });
    try {
      ready.get();
    } catch (...) {
      thread_.join();
      stopped_ = true;
      throw;
    }
  }

  // Queues r and wakes the thread; hands r back once stop() was called.
  std::unique_ptr<Request> submit(std::unique_ptr<Request> r) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return r;
    queue_.push_back(std::move(r));
    wake();
    return nullptr;
  }

  // On the thread, after its poll(): clears the wake-up and takes the requests queued so
  // far; false once stop() was called (the thread then returns).
  bool take(queue &work) {
    uint64_t n;
    ssize_t ignored = read(wake_fd_, &n, sizeof(n));
    (void)ignored;
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    work.swap(queue_);
    return true;
  }

  int wake_fd() const { return wake_fd_; }

  // Stops and joins the thread; returns the requests it never took. Idempotent.
  queue stop() {
    if (stopped_.exchange(true)) return {};
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      wake();
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    queue left;
    left.swap(queue_);
    return left;
  }

 private:
  void wake() {
    uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof(one));
    (void)ignored;
  }

  std::thread thread_;
  int wake_fd_ = -1;
  std::mutex mu_;
  queue queue_;            // mu_
  bool stopping_ = false;  // mu_
  std::atomic<bool> stopped_{false};
};

}  // namespace fg::nl
