#include "flow_manager.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <rte_errno.h>

namespace fg {
namespace {

// A flow handle: the orig entry's index and that index's generation, so that a handle of
// a removed flow never names the flow that reuses its index. Below 2^53: exact in JS.
constexpr unsigned HANDLE_INDEX_BITS = 23;
constexpr uint64_t HANDLE_INDEX_MASK = (uint64_t{1} << HANDLE_INDEX_BITS) - 1;
constexpr uint32_t HANDLE_GEN_MASK = (1u << 30) - 1;
static_assert(MAX_FLOWS <= (1u << HANDLE_INDEX_BITS), "flow index must fit a handle");

}  // namespace

flow_manager::adj_key flow_manager::adj_key_of(const adjacency &a) {
  adj_key key;
  memcpy(key.data(), &a.port, 2);
  memcpy(key.data() + 2, a.dst_mac, 6);
  memcpy(key.data() + 8, a.src_mac, 6);
  key[14] = a.family;
  return key;
}

void flow_manager::create(uint32_t capacity, unsigned n_workers, rte_rcu_qsbr *qsbr, const mem_ops &mem, int socket) {
  destroy();
  int rc = ft_.create(capacity, n_workers, qsbr, mem, socket);
  if (rc != 0)
    throw dp_error(ERR_NO_MEMORY, "cannot allocate a flowtable of " + std::to_string(capacity) + " flows (" +
                                      rte_strerror(-rc) + "); reserve more hugepages",
                   -rc);
  ctl_.assign(capacity, flow_ctl{});
  high_water_ = 0;
  mem_ = &mem;
  adj_ = static_cast<adjacency *>(mem.alloc(sizeof(adjacency) * MAX_ADJACENCIES, CACHE_LINE, socket));
  if (adj_ == nullptr) throw dp_error(ERR_NO_MEMORY, "cannot allocate the adjacency table");
  adj_pool_.init(MAX_ADJACENCIES, qsbr);
  adj_refs_.assign(MAX_ADJACENCIES, 0);
}

void flow_manager::destroy() {
  ft_.destroy();
  if (adj_ != nullptr) mem_->free(adj_);
  adj_ = nullptr;
  adj_index_.clear();
}

// ---- adjacencies -----------------------------------------------------------------------

uint32_t flow_manager::adjacency_acquire(const adjacency &want) {
  const adj_key key = adj_key_of(want);
  auto it = adj_index_.find(key);
  if (it != adj_index_.end()) {
    adj_refs_[it->second]++;
    return it->second;
  }
  uint32_t idx = adj_pool_.alloc();
  if (idx == rcu_index_pool::NONE)
    throw dp_error(ERR_LIMIT, "more than " + std::to_string(MAX_ADJACENCIES) + " distinct next hops");
  adj_[idx] = want;
  adj_index_.emplace(key, idx);
  adj_refs_[idx] = 1;
  return idx;
}

void flow_manager::adjacency_release(uint32_t idx) {
  if (--adj_refs_[idx] != 0) return;
  const adjacency &a = adj_[idx];
  // A rewritten adjacency may share its key with one the index holds instead (see below).
  auto it = adj_index_.find(adj_key_of(a));
  if (it != adj_index_.end() && it->second == idx) adj_index_.erase(it);
  adj_pool_.release(idx);
}

uint32_t flow_manager::rewrite_next_hop(uint16_t port, uint8_t family, const uint8_t old_dst[6], const uint8_t new_dst[6]) {
  std::vector<uint32_t> changed;
  for (auto it = adj_index_.begin(); it != adj_index_.end();) {
    const adjacency &a = adj_[it->second];
    if (a.port != port || a.family != family || memcmp(a.dst_mac, old_dst, 6) != 0) {
      ++it;
      continue;
    }
    changed.push_back(it->second);
    it = adj_index_.erase(it);
  }
  for (uint32_t idx : changed) {
    adjacency &a = adj_[idx];
    adjacency_set_dst_mac(a, new_dst);
    // If flows already reach the new MAC through an adjacency of their own, that one stays
    // the indexed one: both carry the same addresses, and each is released by its flows.
    adj_index_.emplace(adj_key_of(a), idx);
  }
  return static_cast<uint32_t>(changed.size());
}

// ---- flows -----------------------------------------------------------------------------

void flow_manager::fill_entry(uint32_t idx, const flow_spec &f, uint32_t pair, uint32_t now_s) {
  flow_entry &e = ft_.entry(idx);
  flow_entry_init(e, f.key, f.action, pair, now_s);
  ft_.set_nat(idx, f.nat);
  if (f.action == FLOW_ACT_DECAP) e.tunnel = f.tunnel;
  if (f.action == FLOW_ACT_ENCAP)
    e.target = f.tunnel;
  else {
    adjacency want{};
    memcpy(want.dst_mac, f.dst_mac, 6);
    memcpy(want.src_mac, f.src_mac, 6);
    want.port = f.out_port;
    want.family = flow_l3_is_ipv4(f.key.l3proto) ? 4 : 6;
    e.target = static_cast<uint16_t>(adjacency_acquire(want));
  }
}

void flow_manager::release_entry(uint32_t idx) {
  const flow_entry &e = ft_.entry(idx);
  if (e.action != FLOW_ACT_ENCAP) adjacency_release(e.target);
  ctl_[idx].state = slot_state::free;
}

uint64_t flow_manager::handle_of(uint32_t idx) const {
  return (uint64_t{ctl_[idx].gen} << HANDLE_INDEX_BITS) | idx;
}

bool flow_manager::connection_of(uint32_t idx, uint64_t *handle, bool *reply) const {
  if (idx >= ctl_.size() || ctl_[idx].state == slot_state::free) return false;
  *reply = ctl_[idx].state == slot_state::reply;
  *handle = handle_of(*reply ? ft_.entry(idx).pair : idx);
  return true;
}

bool flow_manager::decode_handle(uint64_t handle, uint32_t *idx) const {
  uint64_t i = handle & HANDLE_INDEX_MASK;
  if (i >= ctl_.size()) return false;
  if (ctl_[i].state != slot_state::orig || (handle >> HANDLE_INDEX_BITS) != ctl_[i].gen) return false;
  *idx = static_cast<uint32_t>(i);
  return true;
}

uint64_t flow_manager::add_pair(const flow_spec &orig, const flow_spec *reply, uint32_t now_s) {
  ft_.reclaim();
  adj_pool_.reclaim();

  uint32_t io = ft_.alloc();
  uint32_t ir = FLOW_NONE;
  if (io != FLOW_NONE && reply != nullptr) {
    ir = ft_.alloc();
    if (ir == FLOW_NONE) {
      ft_.discard(io);
      io = FLOW_NONE;
    }
  }
  if (io == FLOW_NONE) {
    insert_failed_++;
    throw dp_error(ERR_FLOWTABLE_FULL, "the flowtable is full (" + std::to_string(ft_.capacity()) + " flows)");
  }
  fill_entry(io, orig, ir, now_s);
  ctl_[io].state = slot_state::orig;
  if (reply != nullptr) {
    fill_entry(ir, *reply, io, now_s);
    ctl_[ir].state = slot_state::reply;
  }

  auto fail = [&](int rc, bool orig_published) {
    insert_failed_++;
    // Lcores may have found the published orig direction: unlinked first, so that the
    // grace periods of its entry and adjacency start after no lcore can find it any more.
    if (orig_published) ft_.unlink(io);
    release_entry(io);
    if (orig_published)
      ft_.retire(io);
    else
      ft_.discard(io);
    if (ir != FLOW_NONE) {
      release_entry(ir);
      ft_.discard(ir);
    }
    if (rc == -EEXIST) throw dp_error(ERR_FLOW_EXISTS, "a flow with the same key is already offloaded");
    throw dp_error(ERR_FLOWTABLE_FULL, "no room in the flowtable buckets for this key");
  };
  int rc = ft_.publish(io);
  if (rc != 0) fail(rc, false);
  if (ir != FLOW_NONE) {
    rc = ft_.publish(ir);
    if (rc != 0) fail(rc, true);
  }
  ctl_[io].gen = (ctl_[io].gen + 1) & HANDLE_GEN_MASK;
  high_water_ = std::max({high_water_, io + 1, ir == FLOW_NONE ? 0 : ir + 1});
  added_++;
  return handle_of(io);
}

void flow_manager::remove_pair(uint32_t io) {
  uint32_t ir = ft_.entry(io).pair;
  // Both directions out of the table before any grace period starts. A token taken
  // earlier would let an lcore report a quiescent state, then still find the flow and use
  // its adjacency (or, through flow_entry::pair, the other direction's entry) after that
  // was recycled for another flow. The kernel's flowtable likewise unlinks a flow from its
  // rhashtable (flow_offload_del) before freeing it after an RCU grace period
  // (flow_offload_free -> kfree_rcu).
  ft_.unlink(io);
  if (ir != FLOW_NONE) ft_.unlink(ir);
  release_entry(io);
  ft_.retire(io);
  if (ir != FLOW_NONE) {
    release_entry(ir);
    ft_.retire(ir);
  }
  removed_++;
}

bool flow_manager::remove(uint64_t handle) {
  uint32_t idx;
  if (!decode_handle(handle, &idx)) return false;
  remove_pair(idx);
  return true;
}

flow_spec flow_manager::spec_of(uint32_t idx) const {
  const flow_entry &e = ft_.entry(idx);
  flow_spec f;
  f.key = e.key;
  f.action = e.action;
  if (e.action == FLOW_ACT_ENCAP) {
    f.tunnel = e.target;
  } else {
    if (e.action == FLOW_ACT_DECAP) f.tunnel = e.tunnel;
    const adjacency &a = adj_[e.target];
    f.out_port = a.port;
    memcpy(f.dst_mac, a.dst_mac, 6);
    memcpy(f.src_mac, a.src_mac, 6);
    f.has_src_mac = true;
  }
  if (e.flags & FLOW_F_NAT) f.nat = flow_nat_spec_of(ft_.nat()[idx], e.key.l3proto);
  return f;
}

flow_info flow_manager::info_of(uint32_t io, uint32_t now_s) const {
  const flow_entry &e = ft_.entry(io);
  flow_info info{};
  info.handle = handle_of(io);
  info.orig = spec_of(io);
  info.orig_counter = ft_.counter(io);
  uint32_t last = __atomic_load_n(&e.last_seen, __ATOMIC_RELAXED);
  uint8_t state = __atomic_load_n(&e.state, __ATOMIC_RELAXED);
  if (e.pair != FLOW_NONE) {
    const flow_entry &r = ft_.entry(e.pair);
    info.has_reply = true;
    info.reply = spec_of(e.pair);
    info.reply_counter = ft_.counter(e.pair);
    last = std::max(last, __atomic_load_n(&r.last_seen, __ATOMIC_RELAXED));
    state |= __atomic_load_n(&r.state, __ATOMIC_RELAXED);
  }
  info.teardown = (state & FLOW_STATE_TEARDOWN) != 0;
  info.closing = (state & FLOW_STATE_CLOSING) != 0;
  info.idle_s = now_s > last ? now_s - last : 0;
  return info;
}

bool flow_manager::get(uint64_t handle, uint32_t now_s, flow_info *out) const {
  uint32_t idx;
  if (!decode_handle(handle, &idx)) return false;
  *out = info_of(idx, now_s);
  return true;
}

std::vector<flow_info> flow_manager::list(uint32_t from, uint32_t max, uint32_t *next, uint32_t now_s) const {
  std::vector<flow_info> flows;
  uint32_t i = from;
  for (; i < high_water_ && flows.size() < max; i++)
    if (ctl_[i].state == slot_state::orig) flows.push_back(info_of(i, now_s));
  *next = i < high_water_ ? i : 0;
  return flows;
}

std::vector<reaped_flow> flow_manager::reap(uint32_t tcp_timeout_s, uint32_t udp_timeout_s, uint32_t now_s) {
  std::vector<reaped_flow> reaped;
  // Every second over every flow: read only the two entries' state and last_seen, and
  // build the full description only of the flows that go.
  for (uint32_t i = 0; i < high_water_; i++) {
    if (ctl_[i].state != slot_state::orig) continue;
    const flow_entry &e = ft_.entry(i);
    uint8_t state = __atomic_load_n(&e.state, __ATOMIC_RELAXED);
    uint32_t last = __atomic_load_n(&e.last_seen, __ATOMIC_RELAXED);
    if (e.pair != FLOW_NONE) {
      const flow_entry &r = ft_.entry(e.pair);
      state |= __atomic_load_n(&r.state, __ATOMIC_RELAXED);
      last = std::max(last, __atomic_load_n(&r.last_seen, __ATOMIC_RELAXED));
    }
    bool teardown = (state & FLOW_STATE_TEARDOWN) != 0;
    uint32_t timeout = e.key.l4proto == IPPROTO_TCP ? tcp_timeout_s : udp_timeout_s;
    if (!teardown && now_s - std::min(now_s, last) < timeout) continue;
    reaped.push_back({info_of(i, now_s), teardown ? reap_reason::teardown : reap_reason::idle});
    remove_pair(i);
  }
  ft_.reclaim();
  adj_pool_.reclaim();
  return reaped;
}

}  // namespace fg
