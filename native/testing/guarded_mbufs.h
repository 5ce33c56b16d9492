// Mbufs for tests and fuzzing of the fast path without EAL or a mempool: every segment's
// data ends on a page boundary followed by an inaccessible guard page, so code that reads
// or writes one byte past the end of a segment crashes (SIGSEGV, reported by ASan in the
// fuzzer) instead of passing on whatever follows in memory. Bytes in front of the data (the
// headroom, and a strip before the buffer itself) are filled with a known pattern, so that
// writes in front of a packet can be found afterwards (front_intact): ASan does not watch
// mmap'ed memory, and the page before the data cannot be a guard page since the data's
// start moves with its length.
//
// Used by the addon's test-only exports (native/addon/testing.cc) and by the libFuzzer target
// (test/fuzz/pipeline_fuzz.cc). The mbufs have no pool: whatever frees one (rte_pktmbuf_free)
// cannot run on them.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <rte_mbuf.h>

#include "dp/error.h"

namespace fg::testing {

class guarded_mbufs {
 public:
  // Largest headroom a segment may have.
  static constexpr uint32_t MAX_HEADROOM = 4096;
  // The pattern in front of the data, and how far in front of the buffer it reaches.
  static constexpr uint8_t FRONT_FILL = 0xa5;
  static constexpr uint32_t FRONT_STRIP = 64;

  guarded_mbufs() = default;
  guarded_mbufs(const guarded_mbufs &) = delete;
  guarded_mbufs &operator=(const guarded_mbufs &) = delete;
  ~guarded_mbufs() {
    for (segment_slot &s : slots_) {
      munmap(s.map, s.map_len);
      free(s.m);
    }
  }

  // One packet split into segments of the given lengths (one segment when empty). The first
  // segment has `headroom` bytes in front of its data; the others have tail_headroom.
  rte_mbuf *make(const uint8_t *data, size_t len, uint16_t headroom, const std::vector<uint32_t> &segments,
                 uint16_t tail_headroom = 0) {
    std::vector<uint32_t> lens = segments;
    if (lens.empty()) lens.push_back(static_cast<uint32_t>(len));
    size_t total = 0;
    for (uint32_t l : lens) {
      if (l > UINT16_MAX) throw dp_error(ERR_INVALID_ARGUMENT, "a segment holds at most 65535 bytes");
      total += l;
    }
    if (total != len) throw dp_error(ERR_INVALID_ARGUMENT, "segment lengths must add up to the frame length");
    if (len > UINT32_MAX) throw dp_error(ERR_INVALID_ARGUMENT, "frame too long");
    rte_mbuf *head = nullptr, *prev = nullptr;
    size_t off = 0;
    for (size_t i = 0; i < lens.size(); i++) {
      rte_mbuf *m = segment(data + off, lens[i], i == 0 ? headroom : tail_headroom);
      off += lens[i];
      if (head == nullptr)
        head = m;
      else
        prev->next = m;
      prev = m;
    }
    head->nb_segs = static_cast<uint16_t>(lens.size());
    head->pkt_len = static_cast<uint32_t>(len);
    return head;
  }

  // Forget every mbuf made so far and keep their memory for the next ones: a fuzzer makes
  // hundreds of thousands of packets a minute, and mmap per segment would be most of its time.
  void reset() { used_ = 0; }

  // Whether every segment made since reset() still has its front pattern, up to where its
  // data starts now or started when made, whichever is first: code that moves the data start
  // (rte_pktmbuf_prepend, rte_pktmbuf_adj) may write from there on, never before. Segments
  // are checked through the slots, so ones unlinked from their chain are checked too. On
  // failure, *where says which segment and byte.
  bool front_intact(std::string *where) const {
    for (size_t i = 0; i < used_; i++) {
      const segment_slot &s = slots_[i];
      uint32_t data_off = s.m->data_off < s.data_off ? s.m->data_off : s.data_off;
      const uint8_t *buf = static_cast<const uint8_t *>(s.m->buf_addr);
      // The buffer start itself could have been moved by a stray write to the mbuf; compare
      // against where it was made.
      if (buf != s.buf) {
        *where = "segment " + std::to_string(i) + ": buf_addr changed";
        return false;
      }
      for (const uint8_t *p = s.buf - FRONT_STRIP; p < s.buf + data_off; p++)
        if (*p != FRONT_FILL) {
          *where = "segment " + std::to_string(i) + ": byte " + std::to_string(p - s.buf) + " of its buffer (data at " +
                   std::to_string(s.data_off) + ")";
          return false;
        }
    }
    return true;
  }

 private:
  struct segment_slot {
    uint8_t *map;
    size_t map_len;
    rte_mbuf *m;
    uint8_t *buf;       // the buffer as made (buf_addr)
    uint16_t data_off;  // the data offset as made
  };

  rte_mbuf *segment(const uint8_t *data, uint32_t len, uint16_t headroom) {
    if (headroom > MAX_HEADROOM) throw dp_error(ERR_INVALID_ARGUMENT, "headroom above 4096");
    if (used_ == slots_.size()) slots_.push_back(new_slot());
    segment_slot &s = slots_[used_++];
    // Every slot has room for the largest segment: the data always ends at the guard page.
    uint8_t *guard = s.map + s.map_len - page_size();
    uint8_t *buf = guard - len - headroom;
    memset(buf - FRONT_STRIP, FRONT_FILL, FRONT_STRIP + headroom);
    if (len != 0) memcpy(buf + headroom, data, len);  // data may be null when len is 0

    rte_mbuf *m = s.m;
    memset(m, 0, sizeof(*m));
    m->buf_addr = buf;
    m->buf_len = static_cast<uint16_t>(headroom + len);
    m->data_off = headroom;
    m->data_len = static_cast<uint16_t>(len);
    m->pkt_len = len;
    m->nb_segs = 1;
    rte_mbuf_refcnt_set(m, 1);
    s.buf = buf;
    s.data_off = headroom;
    return m;
  }

  static size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

  static segment_slot new_slot() {
    size_t page = page_size();
    size_t body = (FRONT_STRIP + MAX_HEADROOM + UINT16_MAX + page - 1) / page * page;
    size_t map_len = body + page;
    auto *map = static_cast<uint8_t *>(mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (map == MAP_FAILED) throw dp_error(ERR_NO_MEMORY, "mmap failed");
    if (mprotect(map + body, page, PROT_NONE) != 0) {
      munmap(map, map_len);
      throw dp_error(ERR_NO_MEMORY, "mprotect failed");
    }
    auto *m = static_cast<rte_mbuf *>(aligned_alloc(RTE_CACHE_LINE_SIZE, sizeof(rte_mbuf)));
    if (m == nullptr) {
      munmap(map, map_len);
      throw dp_error(ERR_NO_MEMORY, "mbuf");
    }
    return segment_slot{map, map_len, m, nullptr, 0};
  }

  std::vector<segment_slot> slots_;
  size_t used_ = 0;
};

}  // namespace fg::testing
