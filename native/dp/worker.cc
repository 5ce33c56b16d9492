#include "worker.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "capture.h"

namespace fg {
namespace {

// Copies of frames for a capture on the port, if one runs there in that direction. Only
// called while some capture runs (worker_shared::captures); out of line and cold, so that
// the loop's code stays as it is without a capture.
__attribute__((noinline, cold)) void capture_frames(worker &w, uint16_t port, capture_direction dir,
                                                    rte_mbuf *const *pkts, uint16_t n, uint16_t queue, uint64_t tsc) {
  capture_tap *tap = __atomic_load_n(&w.shared->capture[port], __ATOMIC_ACQUIRE);
  if (tap == nullptr || (tap->direction & dir) == 0) return;
  capture_burst(*tap, w.index, pkts, n, queue, dir == CAPTURE_RX ? RTE_PCAPNG_DIRECTION_IN : RTE_PCAPNG_DIRECTION_OUT, tsc);
}

// The frames about to be sent, copied before the device owns them: what is handed to the
// port, as pdump's tx callback sees it.
__attribute__((noinline, cold)) void capture_tx_buffers(worker &w, uint64_t tsc) {
  pipeline &pl = w.pl;
  for (unsigned d = 0; d < pl.n_dirty; d++) {
    const uint16_t port = pl.dirty[d];
    capture_frames(w, port, CAPTURE_TX, pl.tx[port].pkts, pl.tx[port].n, static_cast<uint16_t>(w.index), tsc);
  }
}

void flush(worker &w) {
  pipeline &pl = w.pl;
  for (unsigned d = 0; d < pl.n_dirty; d++) {
    uint16_t port = pl.dirty[d];
    tx_buffer &b = pl.tx[port];
    uint16_t sent = rte_eth_tx_burst(port, static_cast<uint16_t>(w.index), b.pkts, b.n);
    w.stats.tx_packets[port] += sent;
    if (unlikely(sent < b.n)) {
      unsigned lost = b.n - sent;
      w.stats.tx_dropped[port] += lost;
      w.stats.drops[static_cast<unsigned>(drop_reason::tx_full)] += lost;
      rte_pktmbuf_free_bulk(b.pkts + sent, lost);
    }
    b.n = 0;
  }
  pl.n_dirty = 0;
  if (pl.n_drops != 0) {
    rte_pktmbuf_free_bulk(pl.drops, pl.n_drops);
    pl.n_drops = 0;
  }
}

// Transmit what the slow-path thread queued from the kernel (TAP egress, encapsulated TUN
// egress) on the ports' tx queues of this worker.
unsigned send_kernel_tx(worker &w, const snapshot *s, bool capturing, uint64_t tsc) {
  unsigned total = 0;
  for (unsigned i = 0; i < s->n_kernel_tx; i++) {
    uint16_t port = s->kernel_tx_ports[i];
    rte_mbuf *pkts[BURST_SIZE];
    unsigned n = rte_ring_sc_dequeue_burst(s->port[port].kernel_tx, reinterpret_cast<void **>(pkts), BURST_SIZE, nullptr);
    if (n == 0) continue;
    if (unlikely(capturing)) capture_frames(w, port, CAPTURE_TX, pkts, static_cast<uint16_t>(n), static_cast<uint16_t>(w.index), tsc);
    uint16_t sent = rte_eth_tx_burst(port, static_cast<uint16_t>(w.index), pkts, static_cast<uint16_t>(n));
    w.stats.tx_packets[port] += sent;
    if (sent < n) {
      w.stats.tx_dropped[port] += n - sent;
      w.stats.drops[static_cast<unsigned>(drop_reason::tx_full)] += n - sent;
      rte_pktmbuf_free_bulk(pkts + sent, n - sent);
    }
    total += n;
  }
  return total;
}

}  // namespace

int worker_main(void *arg) {
  worker &w = *static_cast<worker *>(arg);
  worker_shared &sh = *w.shared;
  pipeline &pl = w.pl;
  pl.ft = sh.ft;
  pl.counters = sh.ft->worker_counters(w.index);
  pl.adj = sh.adj;
  pl.stats = &w.stats;
  pl.worker = static_cast<uint16_t>(w.index);

  rte_rcu_qsbr_thread_register(sh.qsbr, w.index);
  rte_rcu_qsbr_thread_online(sh.qsbr, w.index);

  uint64_t next_second = 0;
  unsigned empty_polls = 0;
  unsigned sleep_us = IDLE_SLEEP_MIN_US;
  uint64_t t0 = rte_rdtsc();
  while (__atomic_load_n(&sh.running, __ATOMIC_ACQUIRE)) {
    if (unlikely(t0 >= next_second)) {
      pl.now_s = static_cast<uint32_t>((t0 - sh.tsc_epoch) / sh.tsc_hz);
      next_second = sh.tsc_epoch + (uint64_t{pl.now_s} + 1) * sh.tsc_hz;
    }
    const snapshot *s = __atomic_load_n(&sh.snap, __ATOMIC_ACQUIRE);
    pl.snap = s;
    // Next to the snapshot pointer; freed only after a grace period, so it may be used until
    // this iteration's quiescent state even once it is unpublished.
    pl.trace = __atomic_load_n(&sh.trace, __ATOMIC_ACQUIRE);
    pl.now_tsc = t0;
    const worker_plan &plan = s->plan[w.index];
    const bool capturing = __atomic_load_n(&sh.captures, __ATOMIC_RELAXED) != 0;
    unsigned received = 0;
    for (unsigned q = 0; q < plan.n_rxq; q++) {
      rte_mbuf *pkts[BURST_SIZE];
      uint16_t port = plan.rxq[q].port;
      uint16_t n = rte_eth_rx_burst(port, plan.rxq[q].queue, pkts, BURST_SIZE);
      if (n == 0) continue;
      received += n;
      // Before processing: the frames as they arrived.
      if (unlikely(capturing)) capture_frames(w, port, CAPTURE_RX, pkts, n, plan.rxq[q].queue, t0);
      process_burst(pl, port, pkts, n);
      if (unlikely(capturing)) capture_tx_buffers(w, t0);
      flush(w);
    }
    if (w.index == 0) received += send_kernel_tx(w, s, capturing, t0);
    // The snapshot and every flow entry looked up above are no longer referenced.
    rte_rcu_qsbr_quiescent(sh.qsbr, w.index);

    uint64_t t1 = rte_rdtsc();
    if (received != 0) {
      w.stats.busy_cycles += t1 - t0;
      empty_polls = 0;
      sleep_us = IDLE_SLEEP_MIN_US;
    } else {
      w.stats.idle_cycles += t1 - t0;
      if (sh.idle == idle_mode::adaptive && ++empty_polls >= IDLE_POLLS_BEFORE_SLEEP) {
        // Offline while asleep, so that the control thread's grace periods do not wait for us.
        rte_rcu_qsbr_thread_offline(sh.qsbr, w.index);
        rte_delay_us_sleep(sleep_us);
        rte_rcu_qsbr_thread_online(sh.qsbr, w.index);
        w.stats.sleeps++;
        if (sleep_us < IDLE_SLEEP_MAX_US) sleep_us *= 2;
        uint64_t woke = rte_rdtsc();
        w.stats.idle_cycles += woke - t1;
        t1 = woke;
      }
    }
    t0 = t1;
  }

  rte_rcu_qsbr_thread_offline(sh.qsbr, w.index);
  rte_rcu_qsbr_thread_unregister(sh.qsbr, w.index);
  return 0;
}

}  // namespace fg
