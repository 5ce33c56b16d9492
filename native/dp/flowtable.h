// The flowtable: a cache of the kernel's forwarding decisions, keyed by flow_key.
//
// Layout. Buckets of eight 16-bit signatures and eight 32-bit entry indices fill one cache
// line; entries (key + action) fill another. A key lives in its primary bucket, or in its
// secondary bucket when the primary is full. When both are full, one key of theirs that
// sits in its primary moves out to its own secondary (one level of cuckoo displacement,
// only ever primary -> secondary, which readers can follow without a retry loop). The
// table is sized for at most 50 % slot occupancy, where the secondary is rarely needed;
// each bucket counts the keys that spilled out of it so that a lookup only reads the
// secondary when something can be there.
//
// Concurrency. Lcores read lock-free; only the control thread writes. An entry is written
// completely before its index and then its signature are stored into a bucket slot
// (release); removal clears the signature, and the entry index is recycled only after an
// RCU QSBR grace period (rcu_index_pool), so a reader that matched a signature always
// compares against a live entry whose key is authoritative.
//
// Per packet, lcores write nothing shared: packet and byte counters live in per-lcore
// arrays, last_seen is refreshed at most once a second, and the state bits are set only on
// the TCP packets that change them (FIN/RST once, a SYN on a closing flow).
//
// NAT. A flow direction with an address/port rewrite has FLOW_F_NAT and its record in a
// parallel array (nat()), so that the entry stays one line and flows without NAT never
// touch the records.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include <emmintrin.h>
#include <rte_prefetch.h>
#include <rte_rcu_qsbr.h>

#include "common.h"
#include "flow_key.h"
#include "memory.h"
#include "nat.h"
#include "rcu_pool.h"

namespace fg {

enum flow_action : uint8_t {
  FLOW_ACT_NONE = 0,
  FLOW_ACT_FWD4,       // IPv4: TTL-1, Ethernet rewrite
  FLOW_ACT_FWD6,       // IPv6: hop limit-1, Ethernet rewrite
  FLOW_ACT_DECAP,      // strip the tunnel's outer headers, then as FWD4 or FWD6 on the inner packet
  FLOW_ACT_ENCAP,      // as FWD4 or FWD6, then prepend the tunnel's outer headers
};

// flow_entry::state bits, as the kernel's NF_FLOW_TEARDOWN and NF_FLOW_CLOSING; set on
// both directions at once, the kernel having one flow object for both tuples.
enum flow_state : uint8_t {
  FLOW_STATE_TEARDOWN = 1 << 0,  // packets go to the slow path until the flow is reaped
  FLOW_STATE_CLOSING = 1 << 1,   // FIN or RST seen; still forwarded
};

// flow_entry::flags
enum flow_flag : uint8_t {
  FLOW_F_NAT = 1 << 0,  // rewrite addresses/ports with flowtable::nat(index)
  // The key holds only a fold of the outer addresses (IPv6 in IPv6, flow_key.h): a packet's
  // must be compared with those of the flow's tunnel (flow_entry::tunnel).
  FLOW_F_OUTER_FOLDED = 1 << 1,
};

struct alignas(CACHE_LINE) flow_entry {
  flow_key key;        // control: written before publish; lcores: read
  uint8_t action;      // flow_action; control: written before publish; lcores: read
  uint8_t state;       // flow_state bits; lcores: set (relaxed); control: reads and reaps
  uint16_t target;     // adjacency index (FWD*, DECAP) or tunnel index (ENCAP); as action
  uint8_t flags;       // flow_flag bits; control: written before publish; lcores: read
  uint8_t pad;
  uint16_t tunnel;     // DECAP: the tunnel the packets arrive in; else TUNNEL_NONE; as action
  uint32_t last_seen;  // dataplane seconds; lcores: refresh when > 1 s stale; control: reads
  uint32_t pair;       // reverse direction's index or FLOW_NONE; control: writes before publish
};
static_assert(sizeof(flow_entry) == CACHE_LINE, "a flow entry is one cache line");

// Control thread: a new flow's entry, before publish, all but `target` (which the action
// decides) and the NAT flag (set with the record, flowtable::set_nat).
inline void flow_entry_init(flow_entry &e, const flow_key &key, uint8_t action, uint32_t pair, uint32_t now_s) {
  e.key = key;
  e.action = action;
  e.state = 0;
  e.flags = key.l3proto == FLOW_L3_IPV6_IN_IPV6 ? FLOW_F_OUTER_FOLDED : 0;
  e.pad = 0;
  e.tunnel = TUNNEL_NONE;
  e.pair = pair;
  e.last_seen = now_s;
}

struct flow_counter {
  uint64_t packets;
  uint64_t bytes;
};

class flowtable {
 public:
  // Keys looked up per lookup_bulk call.
  static constexpr unsigned MAX_LOOKUP = 64;
  // How far signature matching (which prefetches the entry) runs ahead of key compares.
  static constexpr unsigned LOOKUP_LAG = 8;

  flowtable() = default;
  flowtable(const flowtable &) = delete;
  flowtable &operator=(const flowtable &) = delete;
  ~flowtable() { destroy(); }

  // Control thread. Returns 0 or a negative errno (-ENOMEM, -EINVAL). n_buckets 0 sizes
  // the buckets for the capacity; tests pass a power of two to load them harder. The hash
  // seed is random (getrandom) unless a test fixes it.
  int create(uint32_t capacity, unsigned n_workers, rte_rcu_qsbr *qsbr, const mem_ops &mem,
             int socket, uint32_t n_buckets = 0, const uint32_t *seed = nullptr);
  void destroy();

  // Control thread: an entry index to fill in, or FLOW_NONE when the table is full.
  uint32_t alloc() { return pool_.alloc(); }
  // Control thread: return an index that was allocated but never published.
  void discard(uint32_t idx) {
    if (entries_[idx].flags & FLOW_F_NAT) {
      entries_[idx].flags = static_cast<uint8_t>(entries_[idx].flags & ~FLOW_F_NAT);
      count_nat(-1);
    }
    pool_.release(idx);
  }
  // Control thread: link a filled entry into its bucket. 0, -EEXIST when its key is
  // already present, -ENOSPC when both of its buckets are full.
  int publish(uint32_t idx);
  // Control thread: take a published entry out of its bucket. Lcores that found it before
  // may use it until a grace period that starts after this call has passed.
  void unlink(uint32_t idx);
  // Control thread: free an unlinked entry after a grace period that starts now.
  void retire(uint32_t idx) { pool_.release(idx); }
  // Control thread: unlink a published entry and free it after a grace period.
  void remove(uint32_t idx) {
    unlink(idx);
    retire(idx);
  }
  // Control thread: the published entry with this key, or FLOW_NONE.
  uint32_t find(const flow_key &key) const;
  // Control thread: packet and byte counters summed over the lcores.
  flow_counter counter(uint32_t idx) const;
  // Control thread: free entries whose grace period has passed.
  void reclaim() { pool_.reclaim(false); }

  flow_entry &entry(uint32_t idx) { return entries_[idx]; }
  const flow_entry &entry(uint32_t idx) const { return entries_[idx]; }
  // The NAT records, indexed like the entries; meaningful where the entry has FLOW_F_NAT.
  flow_nat *nat() const { return nat_; }
  // Control thread, after flow_entry_init and before publish: give entry idx the rewrite s
  // (none when s.flags is 0).
  void set_nat(uint32_t idx, const flow_nat_spec &s) {
    if (s.flags == 0) return;
    flow_nat_build(&nat_[idx], entries_[idx].key, s);
    entries_[idx].flags |= FLOW_F_NAT;
    count_nat(+1);
  }
  // Lcores, once a burst: whether any entry may have FLOW_F_NAT. Only a hint (for
  // prefetching NAT records), so that tables without NAT do not pay for looking.
  bool any_nat() const { return __atomic_load_n(&nat_flows_, __ATOMIC_RELAXED) != 0; }
  flow_counter *worker_counters(unsigned worker) const { return counters_[worker]; }

  // This table's hash seed: keys are hashed with flow_key_hash(key, seed()).
  uint32_t seed() const { return seed_; }
  uint32_t hash(const flow_key &key) const { return flow_key_hash(&key, seed_); }
  // The primary and secondary bucket of a key with this hash (tests: crafting collisions).
  std::pair<uint32_t, uint32_t> buckets_of(uint32_t hash) const { return {primary(hash), secondary(hash)}; }

  uint32_t capacity() const { return capacity_; }
  uint32_t active() const { return active_; }
  uint32_t bucket_count() const { return mask_ + 1; }
  // Entries that live in their secondary bucket (a measure of table pressure).
  uint32_t spilled() const { return spilled_; }

  // Lcores: start loading the bucket of a key with this hash; the parser calls it as soon as
  // it has a key, so that bucket loads spread over the parse loop instead of leaving
  // back to back (more misses at once than the core can keep in flight).
  void prefetch_bucket(uint32_t hash) const { rte_prefetch0(&buckets_[primary(hash)]); }

  // Lcores: look up the keys i < n <= MAX_LOOKUP whose bit is set in `valid`, with their
  // hashes (hash()) given and their buckets prefetched; out[i] is the entry index,
  // or FLOW_NONE (also for keys not looked up). Signatures are matched (and the entry
  // prefetched) LOOKUP_LAG keys ahead of the key compare, so that entry loads overlap.
  inline void lookup_bulk(const flow_key *keys, const uint32_t *hashes, uint64_t valid, unsigned n,
                          uint32_t *out) const;
  // All n keys, hashing them first.
  void lookup_bulk(const flow_key *keys, unsigned n, uint32_t *out) const {
    uint32_t hashes[MAX_LOOKUP];
    for (unsigned i = 0; i < n; i++) {
      hashes[i] = hash(keys[i]);
      prefetch_bucket(hashes[i]);
    }
    lookup_bulk(keys, hashes, n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1, n, out);
  }

 private:
  struct alignas(CACHE_LINE) bucket {
    uint16_t sig[8];    // 0: empty slot
    uint32_t idx[8];    // entry index of each occupied slot
    uint32_t spilled;   // keys whose primary is this bucket but which live in the secondary
    uint32_t pad[3];
  };
  static_assert(sizeof(bucket) == CACHE_LINE, "a bucket is one cache line");
  // Four signatures read as one word (the signatures' own type is uint16_t).
  typedef uint64_t __attribute__((may_alias)) sig_word;

  static uint16_t signature(uint32_t hash) {
    return static_cast<uint16_t>(((hash * 0x9e3779b1u) >> 16) | 1u);
  }
  uint32_t primary(uint32_t hash) const { return hash & mask_; }
  uint32_t secondary(uint32_t hash) const {
    // Never equal to the primary: the xor term's lowest bit is always set.
    return (hash ^ (((hash >> 12) * 0x85ebca6bu) | 1u)) & mask_;
  }
  static unsigned match(const bucket *b, uint16_t sig) {
    // The eight signatures as two 64-bit acquire loads: the writer stores a slot's entry
    // index before its signature (release), so the indices read after this are the ones
    // the signatures were published with. A plain vector load followed by a fence would be
    // a data race with those stores (undefined in the C++ memory model, and reported by
    // ThreadSanitizer); on x86, where every load is an acquire, these are plain moves.
    const auto *words = reinterpret_cast<const sig_word *>(b->sig);
    uint64_t lo = __atomic_load_n(&words[0], __ATOMIC_ACQUIRE);
    uint64_t hi = __atomic_load_n(&words[1], __ATOMIC_ACQUIRE);
    __m128i sigs = _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo));
    __m128i eq = _mm_cmpeq_epi16(sigs, _mm_set1_epi16(static_cast<short>(sig)));
    // One bit per slot, at even positions: slot = bit / 2.
    return static_cast<unsigned>(_mm_movemask_epi8(eq)) & 0x5555u;
  }
  void place(bucket *b, unsigned slot, uint32_t idx, uint16_t sig);
  void count_spill(bucket *prim, int delta);
  int make_room(bucket *b);
  uint32_t search(const bucket *b, uint16_t sig, const flow_key &key) const {
    for (unsigned m = match(b, sig); m != 0; m &= m - 1) {
      unsigned slot = static_cast<unsigned>(__builtin_ctz(m)) >> 1;
      uint32_t idx = __atomic_load_n(&b->idx[slot], __ATOMIC_ACQUIRE);
      if (flow_key_equal(&entries_[idx].key, &key)) return idx;
    }
    return FLOW_NONE;
  }

  bucket *buckets_ = nullptr;
  flow_entry *entries_ = nullptr;
  flow_nat *nat_ = nullptr;
  flow_counter *counters_[MAX_WORKERS] = {};
  uint32_t mask_ = 0;
  uint32_t seed_ = 0;
  uint32_t capacity_ = 0;
  unsigned n_workers_ = 0;
  uint32_t active_ = 0;
  uint32_t spilled_ = 0;
  uint32_t nat_flows_ = 0;  // entries with FLOW_F_NAT; control: writes; lcores: read (hint)
  // Control thread: one writer, lcores read it relaxed (any_nat()).
  void count_nat(int delta) { __atomic_store_n(&nat_flows_, nat_flows_ + delta, __ATOMIC_RELAXED); }
  rcu_index_pool pool_;
  const mem_ops *mem_ = nullptr;
};

inline void flowtable::lookup_bulk(const flow_key *keys, const uint32_t *hashes, uint64_t valid, unsigned n,
                                   uint32_t *out) const {
  const bucket *prim[MAX_LOOKUP];
  unsigned cand[MAX_LOOKUP];

  for (unsigned i = 0; i < n + LOOKUP_LAG; i++) {
    if (i < n && ((valid >> i) & 1)) {
      prim[i] = &buckets_[primary(hashes[i])];
      cand[i] = match(prim[i], signature(hashes[i]));
      if (cand[i] != 0) {
        unsigned slot = static_cast<unsigned>(__builtin_ctz(cand[i])) >> 1;
        rte_prefetch0(&entries_[__atomic_load_n(&prim[i]->idx[slot], __ATOMIC_RELAXED)]);
      }
    }
    if (i < LOOKUP_LAG) continue;
    unsigned j = i - LOOKUP_LAG;
    uint32_t found = FLOW_NONE;
    if ((valid >> j) & 1) {
      for (unsigned m = cand[j]; m != 0; m &= m - 1) {
        // Acquire: the slot may have been given to another entry since its signature was
        // matched, and the entry is then read through this index alone (see place()).
        uint32_t idx = __atomic_load_n(&prim[j]->idx[static_cast<unsigned>(__builtin_ctz(m)) >> 1], __ATOMIC_ACQUIRE);
        if (likely(flow_key_equal(&entries_[idx].key, &keys[j]))) {
          found = idx;
          break;
        }
      }
      if (found == FLOW_NONE && __atomic_load_n(&prim[j]->spilled, __ATOMIC_RELAXED) != 0)
        found = search(&buckets_[secondary(hashes[j])], signature(hashes[j]), keys[j]);
    }
    out[j] = found;
  }
}

}  // namespace fg
