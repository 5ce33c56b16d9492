// The lcore loop: rx burst -> process_burst -> buffered tx per port, a quiescent state per
// iteration, and an optional idle backoff for small shared machines.
#pragma once

#include <cstdint>

#include <rte_rcu_qsbr.h>

#include "pipeline.h"

namespace fg {

struct capture_tap;

enum class idle_mode : uint8_t {
  busy,      // poll without pause: lowest latency, one core at 100 %
  adaptive,  // sleep, backing off, while polls come back empty
};

// What every worker reads; the control thread owns it.
struct worker_shared {
  const snapshot *snap;   // control: publishes (release); lcores: load (acquire) per iteration
  // The running packet trace, or null (trace.h), next to snap: lcores load both together.
  // Control thread: publishes (release) and clears; lcores and the slow-path thread: load
  // per iteration; the one that takes the session's last packet clears it.
  trace_session *trace;
  uint8_t running;        // control: sets/clears; lcores: poll
  idle_mode idle;         // control: set before launch
  rte_rcu_qsbr *qsbr;
  flowtable *ft;
  const adjacency *adj;
  uint64_t tsc_epoch;     // TSC at dataplane start: flow times count seconds from here
  uint64_t tsc_hz;
  // Port captures (capture.h): how many run, read once per loop so that no capture costs
  // one predictable branch; and each ethdev port's, or null. Control: sets the port's tap
  // before raising the count, lowers it and clears the tap, then waits a grace period
  // before freeing; lcores: read.
  uint32_t captures;
  capture_tap *capture[MAX_ETHPORTS];
};

struct alignas(CACHE_LINE) worker {
  unsigned index;  // 0..n-1: QSBR thread id and the tx queue this worker owns on every port
  unsigned lcore;
  worker_shared *shared;
  worker_stats stats;
  pipeline pl;
};

// rte_eal_remote_launch() entry point; returns when shared->running is cleared.
int worker_main(void *arg);

// Idle backoff: sleep after this many empty polls in a row, from MIN to MAX microseconds,
// doubling. MAX bounds the added latency; rx rings must hold MAX microseconds of traffic.
constexpr unsigned IDLE_POLLS_BEFORE_SLEEP = 64;
constexpr unsigned IDLE_SLEEP_MIN_US = 8;
constexpr unsigned IDLE_SLEEP_MAX_US = 256;

}  // namespace fg
