// Port capture: copies of a port's frames, filtered by a tcpdump-style expression (libpcap
// classic BPF converted for rte_bpf), written as pcapng (rte_pcapng) to a file descriptor,
// as dpdk-dumpcap does through pdump, but inside the process that owns the ports.
//
//   workers (any number)                       capture thread (one per capture)
//   rx burst / tx burst -> filter -> copy --mp ring--> pcapng write -> fd (a FIFO, a file)
//
// Workers copy only while a capture runs on the port: otherwise they pay one predictable
// branch per loop (worker_shared::captures). Copies come from the capture's own mempool and
// go into a multi-producer ring; a full ring or an empty pool loses the copy (counted),
// never the forwarded frame. A reader that does not keep up fills the ring: copies are
// lost, forwarding is not slowed.
//
// The writer is a thread of the capture rather than the slow-path thread: writing to a FIFO
// waits for its reader, and the slow-path thread carries the kernel's traffic and the
// learner's records, which must not wait for tshark.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include <rte_bpf.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pcapng.h>
#include <rte_ring.h>

#include "common.h"

namespace fg {

// Copies waiting for the writer, and mbufs to copy into (one per copy, sized for the port's
// largest frame): at most CAPTURE_MBUFS, fewer for jumbo frames to stay near the budget.
constexpr unsigned CAPTURE_RING_SIZE = 2048;
constexpr unsigned CAPTURE_MBUFS = 4095;
constexpr unsigned CAPTURE_MIN_MBUFS = 255;
constexpr uint32_t CAPTURE_POOL_BYTES = 8u << 20;
// An mbuf's data room is 16 bits: copies of larger frames are cut here.
constexpr uint32_t CAPTURE_MAX_COPY = 60000;
// How long the writer sleeps when there is nothing to write, or no room in the FIFO: it
// bounds how late it notices a stop request or a reader that went away.
constexpr int CAPTURE_IDLE_WAIT_MS = 10;
constexpr uint32_t CAPTURE_DEFAULT_SNAPLEN = 262144;  // as dumpcap and tcpdump
// Copies per write: fewer system calls when the traffic is heavy (one iovec per copy).
constexpr unsigned CAPTURE_WRITE_BURST = 256;

enum capture_direction : uint8_t { CAPTURE_RX = 1, CAPTURE_TX = 2, CAPTURE_BOTH = 3 };

// Why a capture stopped writing.
enum class capture_end : uint8_t {
  running,      // still writing
  count,        // the requested number of packets is written
  reader_gone,  // the FIFO's reader closed it (the client went away)
  write_error,  // the descriptor refused a write (disk full, EBADF...)
  stopped,      // stop() was called
};
const char *capture_end_name(capture_end e);

struct capture_options {
  uint16_t port = PORT_NONE;  // an ethdev port polled by the workers
  uint8_t direction = CAPTURE_BOTH;
  uint32_t snaplen = CAPTURE_DEFAULT_SNAPLEN;
  uint64_t count = 0;  // stop after this many packets written; 0: until stopped
  std::string filter;  // a tcpdump expression; empty: every frame
  int fd = -1;         // duplicated: the caller keeps and closes its own
};

struct capture_stats {
  uint64_t written;      // packets written to the descriptor
  uint64_t matched;      // frames the filter accepted (copies made or lost)
  uint64_t lost;         // copies lost: no mbuf in the capture's pool, or its ring full
  uint64_t bytes;        // bytes written (pcapng blocks)
  capture_end end;
  bool jit;              // the filter runs compiled for this CPU (else rte_bpf's interpreter)
};

// What the workers see of a capture: read-only after start, except the counters.
struct capture_tap {
  uint16_t port;
  uint8_t direction;
  uint8_t done;  // writer: sets when it needs no more copies (count reached, reader gone); workers: read
  uint32_t snaplen;
  rte_bpf *bpf;             // null: every frame matches
  uint64_t (*jit)(void *);  // the program compiled for this CPU, or null: rte_bpf_exec_burst
  rte_mempool *pool;
  rte_ring *ring;           // multi-producer (workers), single consumer (the writer)
  // Per worker, so that capturing workers do not share a line: written by worker i only.
  struct alignas(CACHE_LINE) counters {
    uint64_t matched;
    uint64_t lost;
  } per_worker[MAX_WORKERS];
};

// Lcore side: copy the frames of a burst that the filter accepts. pkts are not modified.
// tsc: the burst's time; queue: the rx queue, or the worker's tx queue.
void capture_burst(capture_tap &tap, unsigned worker, rte_mbuf *const *pkts, uint16_t n, uint16_t queue,
                   rte_pcapng_direction dir, uint64_t tsc);

// One capture: owns the tap, the pcapng writer and its thread. Control thread only.
class capture_session {
 public:
  // Compiles the filter (throws dp_error with libpcap's message), creates the pool and the
  // ring, writes the pcapng header and starts the writer. The tap is not yet visible to the
  // workers: the dataplane publishes it.
  // max_frame: the largest frame the port receives or sends (MTU, Ethernet header, tags).
  capture_session(uint64_t id, const capture_options &opts, const std::string &port_name, uint32_t max_frame);
  ~capture_session();
  capture_session(const capture_session &) = delete;
  capture_session &operator=(const capture_session &) = delete;

  uint64_t id() const { return id_; }
  capture_tap *tap() { return tap_; }
  // Once no worker can see the tap any more (after an RCU grace period): the writer writes
  // what is queued, unless its end was reached, and the descriptor is closed.
  void finish();
  capture_stats stats() const;

 private:
  void run();
  // Writes n copies (freed either way); false when the capture must end.
  bool write(rte_mbuf **pkts, unsigned n);
  // The FIFO's reader is gone (or the descriptor failed).
  bool reader_gone();

  uint64_t id_;
  capture_options opts_;
  capture_tap *tap_ = nullptr;
  rte_pcapng_t *pcapng_ = nullptr;
  int fd_ = -1;
  bool is_pipe_ = false;
  int pipe_size_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  // Writer: writes; control thread: reads.
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<capture_end> end_{capture_end::running};
};

}  // namespace fg
