// The slow-path thread: the kernel's side of the dataplane. It reads what the kernel sends
// out of the ports' TAPs and the tunnels' TUNs, turns each packet into an observation
// record for the learner, encapsulates what the kernel routed into a tunnel (with the same
// template as the fast path), and queues the packets for worker 0 to transmit. It also
// drains the workers' punt records and hands them, with its own, to the control thread.
//
// It is not an lcore: it sleeps in epoll_wait on the TAP/TUN queues' interrupt descriptors
// when there is nothing to do, so it costs nothing on a quiet gateway. It reads the
// published snapshot like a worker and reports quiescent states as one.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <rte_ring.h>

#include "observation.h"
#include "trace.h"
#include "worker.h"

namespace fg {

struct slowpath_stats {
  uint64_t kernel_rx_packets;    // packets read from TAPs and TUNs
  uint64_t kernel_tx_dropped;    // packets whose port's kernel_tx ring was full
  uint64_t tun_wrong_family;     // packets the kernel sent into a tunnel that carries the other family
  uint64_t no_headroom;          // TUN packets without room for the outer headers, or frames for a VLAN for its tags
  uint64_t observations;         // records handed to the control thread
  uint64_t observations_lost;    // records dropped: the control thread's queue was full
};

// Where records go, called on the slow-path thread. While the consumer is busy (ready()
// false) records wait and gather into one larger batch, so a consumer that falls behind
// gets fewer, bigger batches rather than losing records; deliver() returns false when it
// cannot take the batch (the records are then counted as lost).
struct observation_sink {
  std::function<bool()> ready;
  std::function<bool(std::unique_ptr<std::vector<observation>>)> deliver;
  explicit operator bool() const { return static_cast<bool>(deliver); }
};

// Records that may wait for a busy consumer; beyond this they are counted as lost.
constexpr size_t OBSERVATIONS_MAX_WAITING = 1u << 18;

class slowpath_thread {
 public:
  slowpath_thread() = default;
  slowpath_thread(const slowpath_thread &) = delete;
  slowpath_thread &operator=(const slowpath_thread &) = delete;
  ~slowpath_thread() { stop(); }

  // qsbr_id: this thread's QSBR reader id (one past the workers'). rings: the workers' punt
  // record rings, drained here.
  void start(worker_shared *shared, unsigned qsbr_id, std::vector<rte_ring *> rings, observation_sink sink);
  void stop();
  // Wake the thread, so that it picks up a new snapshot's ports at once.
  void wake();
  slowpath_stats stats() const;

 private:
  void run();
  void rearm_epoll(const snapshot *s);
  void from_tap(const snapshot *s, uint16_t port, rte_mbuf *m, std::vector<observation> &batch);
  void from_tun(const snapshot *s, uint16_t tunnel_id, rte_mbuf *m, std::vector<observation> &batch);
  void to_kernel_tx(const snapshot *s, uint16_t port, rte_mbuf *m);
  // A packet from a TAP or TUN while a trace runs: as from_tap()/from_tun(), recorded when
  // the session selects it.
  void traced(const snapshot *s, trace_session &ts, uint16_t port, rte_mbuf *m, std::vector<observation> &batch);
  void trace_drop(kernel_drop_reason why);

  worker_shared *shared_ = nullptr;
  unsigned qsbr_id_ = 0;
  std::vector<rte_ring *> rings_;
  observation_sink sink_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  uint64_t armed_generation_ = UINT64_MAX;
  bool all_ports_have_interrupts_ = false;
  // The IPv4 identification of the next encapsulated packet without DF (see pipeline::ip_id).
  uint16_t ip_id_ = 0x8000;
  slowpath_stats stats_{};
  // The record of the packet being handled, while it is traced; else null.
  trace_record *tracing_ = nullptr;
};

}  // namespace fg
