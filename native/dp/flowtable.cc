#include "flowtable.h"

#include <sys/random.h>

#include <algorithm>

#include <rte_common.h>

namespace fg {

int flowtable::create(uint32_t capacity, unsigned n_workers, rte_rcu_qsbr *qsbr,
                      const mem_ops &mem, int socket, uint32_t n_buckets, const uint32_t *seed) {
  if (capacity == 0 || capacity > MAX_FLOWS || n_workers > MAX_WORKERS) return -EINVAL;
  if (n_buckets != 0 && (n_buckets < 2 || !rte_is_power_of_2(n_buckets))) return -EINVAL;
  uint32_t random_seed = 0;
  if (seed == nullptr && getrandom(&random_seed, sizeof(random_seed), 0) != sizeof(random_seed)) return -EIO;
  destroy();
  seed_ = seed != nullptr ? *seed : random_seed;
  mem_ = &mem;
  capacity_ = capacity;
  n_workers_ = n_workers;
  // Eight slots a bucket at no more than 50 % occupancy: four keys a bucket on average.
  if (n_buckets == 0) n_buckets = std::max<uint32_t>(2, rte_align32pow2((capacity + 3) / 4));
  mask_ = n_buckets - 1;
  buckets_ = static_cast<bucket *>(mem.alloc(sizeof(bucket) * n_buckets, CACHE_LINE, socket));
  entries_ = static_cast<flow_entry *>(mem.alloc(sizeof(flow_entry) * capacity, CACHE_LINE, socket));
  nat_ = static_cast<flow_nat *>(mem.alloc(sizeof(flow_nat) * capacity, CACHE_LINE, socket));
  bool ok = buckets_ != nullptr && entries_ != nullptr && nat_ != nullptr;
  for (unsigned w = 0; ok && w < n_workers; w++) {
    counters_[w] = static_cast<flow_counter *>(
        mem.alloc(sizeof(flow_counter) * capacity, CACHE_LINE, socket));
    ok = counters_[w] != nullptr;
  }
  if (!ok) {
    destroy();
    return -ENOMEM;
  }
  pool_.init(capacity, qsbr);
  active_ = 0;
  spilled_ = 0;
  nat_flows_ = 0;
  return 0;
}

void flowtable::destroy() {
  if (mem_ == nullptr) return;
  mem_->free(buckets_);
  mem_->free(entries_);
  mem_->free(nat_);
  for (auto &c : counters_) {
    mem_->free(c);
    c = nullptr;
  }
  buckets_ = nullptr;
  entries_ = nullptr;
  nat_ = nullptr;
  mem_ = nullptr;
}

uint32_t flowtable::find(const flow_key &key) const {
  uint32_t h = hash(key);
  const bucket *b = &buckets_[primary(h)];
  uint32_t idx = search(b, signature(h), key);
  if (idx == FLOW_NONE && b->spilled != 0) idx = search(&buckets_[secondary(h)], signature(h), key);
  return idx;
}

void flowtable::place(bucket *b, unsigned slot, uint32_t idx, uint16_t sig) {
  // Both release: a reader that matched the slot's earlier signature may read the index
  // again after this (lookup_bulk compares keys LOOKUP_LAG keys later) and must then see
  // the entry behind it complete. On x86 both are plain stores.
  __atomic_store_n(&b->idx[slot], idx, __ATOMIC_RELEASE);
  __atomic_store_n(&b->sig[slot], sig, __ATOMIC_RELEASE);
}

void flowtable::count_spill(bucket *prim, int delta) {
  // Raised before a key becomes visible in its secondary, lowered after it left it, so a
  // reader that could find a key in the secondary always knows to look there.
  __atomic_store_n(&prim->spilled, prim->spilled + delta, __ATOMIC_RELEASE);
  spilled_ += delta;
}

int flowtable::make_room(bucket *b) {
  // Move one key that lives in its primary bucket b out to its own secondary bucket. The
  // key is visible in the secondary before it disappears from b, so a concurrent reader
  // finds it in one or the other; keys only ever move from primary to secondary.
  for (unsigned slot = 0; slot < 8; slot++) {
    uint32_t other = b->idx[slot];
    uint32_t h = hash(entries_[other].key);
    if (&buckets_[primary(h)] != b) continue;
    bucket *alt = &buckets_[secondary(h)];
    unsigned free_slots = match(alt, 0);
    if (free_slots == 0) continue;
    count_spill(b, +1);
    place(alt, static_cast<unsigned>(__builtin_ctz(free_slots)) >> 1, other, b->sig[slot]);
    __atomic_store_n(&b->sig[slot], uint16_t{0}, __ATOMIC_RELEASE);
    return static_cast<int>(slot);
  }
  return -1;
}

int flowtable::publish(uint32_t idx) {
  flow_entry &e = entries_[idx];
  if (find(e.key) != FLOW_NONE) return -EEXIST;

  uint32_t h = hash(e.key);
  uint16_t sig = signature(h);
  bucket *prim = &buckets_[primary(h)];
  bucket *sec = &buckets_[secondary(h)];
  bucket *home = nullptr;
  int slot = -1;
  if (unsigned free_slots = match(prim, 0); free_slots != 0) {
    home = prim;
    slot = static_cast<int>(__builtin_ctz(free_slots)) >> 1;
  } else if (unsigned free_sec = match(sec, 0); free_sec != 0) {
    home = sec;
    slot = static_cast<int>(__builtin_ctz(free_sec)) >> 1;
  } else if ((slot = make_room(prim)) >= 0) {
    home = prim;
  } else if ((slot = make_room(sec)) >= 0) {
    home = sec;
  } else {
    return -ENOSPC;
  }
  if (home == sec) count_spill(prim, +1);
  // Zero this index's per-lcore counters: after the grace period that freed it, no lcore
  // counts into it until it is published below.
  for (unsigned w = 0; w < n_workers_; w++) counters_[w][idx] = flow_counter{0, 0};
  place(home, static_cast<unsigned>(slot), idx, sig);
  active_++;
  return 0;
}

void flowtable::unlink(uint32_t idx) {
  const flow_entry &e = entries_[idx];
  uint32_t h = hash(e.key);
  uint16_t sig = signature(h);
  bucket *prim = &buckets_[primary(h)];
  bucket *candidates[2] = {prim, &buckets_[secondary(h)]};
  for (unsigned c = 0; c < 2; c++) {
    bucket *b = candidates[c];
    for (unsigned m = match(b, sig); m != 0; m &= m - 1) {
      unsigned slot = static_cast<unsigned>(__builtin_ctz(m)) >> 1;
      if (b->idx[slot] != idx) continue;
      __atomic_store_n(&b->sig[slot], uint16_t{0}, __ATOMIC_RELEASE);
      if (c == 1) count_spill(prim, -1);
      active_--;
      // The entry keeps its flag: readers in their grace period still rewrite its packets.
      if (e.flags & FLOW_F_NAT) count_nat(-1);
      return;
    }
  }
}

flow_counter flowtable::counter(uint32_t idx) const {
  flow_counter sum{0, 0};
  for (unsigned w = 0; w < n_workers_; w++) {
    sum.packets += __atomic_load_n(&counters_[w][idx].packets, __ATOMIC_RELAXED);
    sum.bytes += __atomic_load_n(&counters_[w][idx].bytes, __ATOMIC_RELAXED);
  }
  return sum;
}

}  // namespace fg
