// A pool of table indices whose release waits for an RCU grace period: an index unlinked
// by the control thread may still be in use by an lcore that looked it up just before, so
// it returns to the free list only once every lcore has reported a quiescent state since.
// Control thread only; lcores never touch the pool.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include <rte_rcu_qsbr.h>

namespace fg {

class rcu_index_pool {
 public:
  static constexpr uint32_t NONE = UINT32_MAX;

  // Indices [0, size) start free; they are handed out lowest first so that a small
  // working set stays packed at the start of its table. A null qsbr frees at once (tests).
  void init(uint32_t size, rte_rcu_qsbr *qsbr) {
    qsbr_ = qsbr;
    free_.clear();
    pending_.clear();
    free_.reserve(size);
    for (uint32_t i = size; i > 0; i--) free_.push_back(i - 1);
    size_ = size;
  }

  // An index, or NONE when every index is in use or still waiting for its grace period.
  uint32_t alloc() {
    if (free_.empty()) reclaim(!pending_.empty());
    if (free_.empty()) return NONE;
    uint32_t idx = free_.back();
    free_.pop_back();
    return idx;
  }

  // Free an index once the lcores can no longer hold it.
  void release(uint32_t idx) {
    if (qsbr_ == nullptr) {
      free_.push_back(idx);
      return;
    }
    pending_.push_back({rte_rcu_qsbr_start(qsbr_), idx});
  }

  // Move indices whose grace period has ended to the free list; with wait, block until the
  // oldest pending one's has (lcores report quiescent states every loop, so that is short).
  void reclaim(bool wait = false) {
    while (!pending_.empty()) {
      const auto &p = pending_.front();
      if (rte_rcu_qsbr_check(qsbr_, p.token, wait) != 1) break;
      free_.push_back(p.idx);
      pending_.pop_front();
      wait = false;  // later tokens are newer; only wait for the first
    }
  }

  uint32_t size() const { return size_; }
  uint32_t in_use() const { return size_ - static_cast<uint32_t>(free_.size() + pending_.size()); }
  uint32_t pending() const { return static_cast<uint32_t>(pending_.size()); }

 private:
  struct deferred {
    uint64_t token;
    uint32_t idx;
  };
  rte_rcu_qsbr *qsbr_ = nullptr;
  std::vector<uint32_t> free_;
  std::deque<deferred> pending_;
  uint32_t size_ = 0;
};

}  // namespace fg
