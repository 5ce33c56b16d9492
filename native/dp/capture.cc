#include "capture.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include <rte_errno.h>
#include <rte_malloc.h>

#include "error.h"
#include "pcap_filter.h"

namespace fg {

const char *capture_end_name(capture_end e) {
  switch (e) {
    case capture_end::running: return "running";
    case capture_end::count: return "count";
    case capture_end::reader_gone: return "reader_gone";
    case capture_end::write_error: return "write_error";
    case capture_end::stopped: return "stopped";
  }
  return "unknown";
}

// ---- lcore side ------------------------------------------------------------------------

void capture_burst(capture_tap &tap, unsigned worker, rte_mbuf *const *pkts, uint16_t n, uint16_t queue,
                   rte_pcapng_direction dir, uint64_t tsc) {
  if (__atomic_load_n(&tap.done, __ATOMIC_RELAXED)) return;
  uint64_t rc[BURST_SIZE];
  if (tap.bpf == nullptr) {
    for (uint16_t i = 0; i < n; i++) rc[i] = 1;
  } else if (tap.jit != nullptr) {
    for (uint16_t i = 0; i < n; i++) rc[i] = tap.jit(pkts[i]);
  } else {
    // The interpreter reads the frame through rte_pktmbuf_read(): chained mbufs match too.
    rte_bpf_exec_burst(tap.bpf, reinterpret_cast<void **>(const_cast<rte_mbuf **>(pkts)), rc, n);
  }
  rte_mbuf *copies[BURST_SIZE];
  unsigned matched = 0, made = 0;
  for (uint16_t i = 0; i < n; i++) {
    if (rc[i] == 0) continue;
    matched++;
    rte_mbuf *c = rte_pcapng_copy(tap.port, queue, pkts[i], tap.pool, tap.snaplen, tsc, dir);
    if (c != nullptr) copies[made++] = c;
  }
  if (matched == 0) return;
  unsigned queued = made == 0 ? 0 : rte_ring_mp_enqueue_burst(tap.ring, reinterpret_cast<void **>(copies), made, nullptr);
  if (queued < made) rte_pktmbuf_free_bulk(copies + queued, made - queued);
  capture_tap::counters &c = tap.per_worker[worker];
  c.matched += matched;
  c.lost += matched - queued;
}

// ---- control side ----------------------------------------------------------------------

capture_session::capture_session(uint64_t id, const capture_options &opts, const std::string &port_name,
                                 uint32_t max_frame)
    : id_(id), opts_(opts) {
  if (opts.snaplen < 64 || opts.snaplen > CAPTURE_DEFAULT_SNAPLEN)
    throw dp_error(ERR_INVALID_ARGUMENT, "capture snaplen must be 64.." + std::to_string(CAPTURE_DEFAULT_SNAPLEN) +
                                             ", got " + std::to_string(opts.snaplen));
  if ((opts.direction & CAPTURE_BOTH) == 0 || opts.direction > CAPTURE_BOTH)
    throw dp_error(ERR_INVALID_ARGUMENT, "capture direction must be rx, tx or both");
  // libpcap's message for a filter it refuses, before anything is allocated.
  pcap_filter filter = compile_pcap_filter(opts.filter, filter_link::ethernet, opts.snaplen);

  fd_ = fcntl(opts.fd, F_DUPFD_CLOEXEC, 0);
  if (fd_ < 0) throw dp_error(ERR_INVALID_ARGUMENT, std::string("capture descriptor: ") + strerror(errno), errno);
  try {
    struct stat st;
    if (fstat(fd_, &st) != 0) throw dp_error(ERR_INVALID_ARGUMENT, std::string("capture descriptor: ") + strerror(errno), errno);
    is_pipe_ = S_ISFIFO(st.st_mode);
    // Blocking writes: the writer only writes what the pipe has room for (see write()), so
    // it never waits on a reader for long, and rte_pcapng never sees a partial write.
    int flags = fcntl(fd_, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK)) fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
    if (is_pipe_) {
      // A larger pipe absorbs a reader's pauses; refused (pipe-max-size) it stays as it is.
      fcntl(fd_, F_SETPIPE_SZ, 1 << 20);
      pipe_size_ = fcntl(fd_, F_GETPIPE_SZ);
    }

    tap_ = static_cast<capture_tap *>(rte_zmalloc("fg_capture_tap", sizeof(capture_tap), RTE_CACHE_LINE_SIZE));
    if (tap_ == nullptr) throw dp_error(ERR_NO_MEMORY, "cannot allocate the capture state");
    tap_->port = opts.port;
    tap_->direction = opts.direction;
    tap_->snaplen = opts.snaplen;
    if (!filter.matches_all()) {
      bpf_program prog{};
      prog.bf_len = static_cast<u_int>(filter.insns.size());
      prog.bf_insns = filter.insns.data();
      rte_bpf_prm *prm = rte_bpf_convert(&prog);
      if (prm == nullptr)
        throw dp_error(ERR_INVALID_ARGUMENT, "filter '" + opts.filter + "': rte_bpf cannot convert it: " + rte_strerror(rte_errno),
                       rte_errno);
      tap_->bpf = rte_bpf_load(prm);
      int load_errno = rte_errno;
      rte_free(prm);
      if (tap_->bpf == nullptr)
        throw dp_error(ERR_INVALID_ARGUMENT, "filter '" + opts.filter + "': rte_bpf cannot load it: " + rte_strerror(load_errno),
                       load_errno);
      rte_bpf_jit jit{};
      if (rte_bpf_get_jit(tap_->bpf, &jit) == 0 && jit.func != nullptr) tap_->jit = jit.func;
    }
    // rte_pcapng writes a copy as one block per mbuf: a copy must fit one segment, so the
    // mbufs hold the largest frame the port can carry (or snaplen, when smaller).
    tap_->snaplen = std::min({opts.snaplen, max_frame, CAPTURE_MAX_COPY});
    const uint32_t room = rte_pcapng_mbuf_size(tap_->snaplen);
    const unsigned mbufs = std::clamp<unsigned>(CAPTURE_POOL_BYTES / room, CAPTURE_MIN_MBUFS, CAPTURE_MBUFS);
    std::string suffix = std::to_string(opts.port) + "_" + std::to_string(id);
    tap_->pool = rte_pktmbuf_pool_create(("fg_cap_" + suffix).c_str(), mbufs, RTE_MEMPOOL_CACHE_MAX_SIZE / 2, 0,
                                         static_cast<uint16_t>(room + RTE_PKTMBUF_HEADROOM), static_cast<int>(rte_socket_id()));
    if (tap_->pool == nullptr)
      throw dp_error(ERR_NO_MEMORY, "cannot create the capture's mbuf pool: " + std::string(rte_strerror(rte_errno)), rte_errno);
    tap_->ring = rte_ring_create(("fg_capr_" + suffix).c_str(), CAPTURE_RING_SIZE, static_cast<int>(rte_socket_id()),
                                 RING_F_SC_DEQ);
    if (tap_->ring == nullptr)
      throw dp_error(ERR_NO_MEMORY, "cannot create the capture's ring: " + std::string(rte_strerror(rte_errno)), rte_errno);

    // The section header and one interface block per ethdev port; rte_pcapng closes fd_.
    std::string comment = "flowgate capture on " + port_name + (opts.filter.empty() ? "" : ": " + opts.filter);
    errno = 0;
    pcapng_ = rte_pcapng_fdopen(fd_, nullptr, nullptr, "flowgate", comment.c_str());
    if (pcapng_ == nullptr) {
      // Its writes fail with errno (EPIPE: the reader left); its own failures set rte_errno.
      const int e = errno != 0 ? errno : rte_errno;
      throw dp_error(ERR_INVALID_ARGUMENT, "cannot write the pcapng header: " + std::string(rte_strerror(e)), e);
    }
  } catch (...) {
    if (pcapng_ != nullptr)
      rte_pcapng_close(pcapng_);
    else
      close(fd_);
    if (tap_ != nullptr) {
      rte_ring_free(tap_->ring);
      rte_mempool_free(tap_->pool);
      if (tap_->bpf != nullptr) rte_bpf_destroy(tap_->bpf);
      rte_free(tap_);
    }
    throw;
  }
  thread_ = std::thread([this] { run(); });
}

capture_session::~capture_session() {
  finish();
  rte_pcapng_close(pcapng_);
  rte_ring_free(tap_->ring);
  rte_mempool_free(tap_->pool);
  if (tap_->bpf != nullptr) rte_bpf_destroy(tap_->bpf);
  rte_free(tap_);
}

void capture_session::finish() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  thread_.join();
  // Copies the writer did not take: their mbufs back to the pool before it is freed.
  rte_mbuf *m;
  while (rte_ring_sc_dequeue(tap_->ring, reinterpret_cast<void **>(&m)) == 0) rte_pktmbuf_free(m);
}

capture_stats capture_session::stats() const {
  capture_stats s{};
  for (const auto &c : tap_->per_worker) {
    s.matched += __atomic_load_n(&c.matched, __ATOMIC_RELAXED);
    s.lost += __atomic_load_n(&c.lost, __ATOMIC_RELAXED);
  }
  s.written = written_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.end = end_.load(std::memory_order_acquire);
  s.jit = tap_->jit != nullptr;
  return s;
}

bool capture_session::reader_gone() {
  if (!is_pipe_) return false;
  // A pipe's write end polls POLLERR once no reader has it open.
  pollfd p{fd_, 0, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

bool capture_session::write(rte_mbuf **pkts, unsigned n) {
  unsigned i = 0;
  while (i < n) {
    unsigned k = n - i;
    if (is_pipe_) {
      // As much as the pipe has room for: a write that would wait for the reader waits
      // here instead, where a stop request and a reader that left are noticed.
      int unread = 0;
      ioctl(fd_, FIONREAD, &unread);
      uint64_t room = pipe_size_ > unread ? static_cast<uint64_t>(pipe_size_ - unread) : 0;
      uint64_t size = 0;
      k = 0;
      while (i + k < n && size + rte_pktmbuf_pkt_len(pkts[i + k]) <= room) size += rte_pktmbuf_pkt_len(pkts[i + k++]);
      // A block larger than the whole pipe goes once the pipe is empty.
      if (k == 0 && unread == 0) k = 1;
      if (k == 0) {
        if (reader_gone()) {
          end_.store(capture_end::reader_gone, std::memory_order_release);
          rte_pktmbuf_free_bulk(pkts + i, n - i);
          return false;
        }
        if (stop_.load(std::memory_order_acquire)) {
          rte_pktmbuf_free_bulk(pkts + i, n - i);
          return false;
        }
        pollfd p{fd_, POLLOUT, 0};
        poll(&p, 1, CAPTURE_IDLE_WAIT_MS);
        continue;
      }
    }
    // DPDK 22.11's writer leaves the mbufs to the caller (its documentation says otherwise).
    ssize_t w = rte_pcapng_write_packets(pcapng_, pkts + i, static_cast<uint16_t>(k));
    int write_errno = errno;
    rte_pktmbuf_free_bulk(pkts + i, k);
    i += k;
    if (w < 0) {
      end_.store(write_errno == EPIPE ? capture_end::reader_gone : capture_end::write_error, std::memory_order_release);
      rte_pktmbuf_free_bulk(pkts + i, n - i);
      return false;
    }
    written_.fetch_add(k, std::memory_order_relaxed);
    bytes_.fetch_add(static_cast<uint64_t>(w), std::memory_order_relaxed);
  }
  return true;
}

void capture_session::run() {
  rte_mbuf *pkts[CAPTURE_WRITE_BURST];
  for (;;) {
    // Read before the ring: after a stop request, what the ring holds is all there will be.
    bool stopping = stop_.load(std::memory_order_acquire);
    unsigned n = rte_ring_sc_dequeue_burst(tap_->ring, reinterpret_cast<void **>(pkts), CAPTURE_WRITE_BURST, nullptr);
    if (n == 0) {
      if (stopping) break;
      if (reader_gone()) {
        end_.store(capture_end::reader_gone, std::memory_order_release);
        break;
      }
      pollfd p{fd_, 0, 0};
      poll(&p, 1, CAPTURE_IDLE_WAIT_MS);
      continue;
    }
    uint64_t done = written_.load(std::memory_order_relaxed);
    if (opts_.count != 0 && done + n >= opts_.count) {
      unsigned keep = static_cast<unsigned>(opts_.count - done);
      rte_pktmbuf_free_bulk(pkts + keep, n - keep);
      if (write(pkts, keep)) end_.store(capture_end::count, std::memory_order_release);
      break;
    }
    if (!write(pkts, n)) break;
  }
  if (end_.load(std::memory_order_acquire) == capture_end::running) end_.store(capture_end::stopped, std::memory_order_release);
  // The workers stop copying; the control thread unpublishes the tap when it sees the end.
  __atomic_store_n(&tap_->done, uint8_t{1}, __ATOMIC_RELAXED);
}

}  // namespace fg
