// Flow management on the control thread: the flowtable, the adjacencies its entries point
// to, the pairing of a connection's two directions, the handles JavaScript holds, and
// reaping. It needs no EAL: it takes the RCU QSBR state and the memory allocator (as the
// flowtable does), so that the dataplane uses it on hugepages and the tests drive the same
// code on the C heap against lcores of their own.
//
// Every method runs on one control thread; lcores only read what it publishes (through
// table() and adjacencies()). Methods throw dp_error.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include <rte_rcu_qsbr.h>

#include "error.h"
#include "flowtable.h"
#include "memory.h"
#include "nat.h"
#include "rcu_pool.h"
#include "snapshot.h"

namespace fg {

// One direction of a flow, as the control plane describes it.
struct flow_spec {
  flow_key key;
  uint8_t action = FLOW_ACT_NONE;
  uint16_t out_port = PORT_NONE;  // FWD4, FWD6, DECAP
  uint8_t dst_mac[6] = {};
  bool has_src_mac = false;       // default: the output port's address
  uint8_t src_mac[6] = {};
  uint16_t tunnel = TUNNEL_NONE;  // ENCAP: the tunnel out; DECAP: the tunnel in
  // The tuple the packet leaves with (from the connection's reply tuple), applied to the
  // (inner) IP packet before the TTL decrement and encapsulation; flags 0: no NAT.
  flow_nat_spec nat;
};

struct flow_info {
  uint64_t handle;
  flow_spec orig;
  bool has_reply;
  flow_spec reply;
  flow_counter orig_counter;
  flow_counter reply_counter;
  uint32_t idle_s;
  bool teardown;  // either direction marked for teardown
  bool closing;   // TCP FIN or RST seen (either direction): the learner closes the connection
};

enum class reap_reason : uint8_t { teardown, idle };

struct reaped_flow {
  flow_info info;
  reap_reason reason;
};

class flow_manager {
 public:
  flow_manager() = default;
  flow_manager(const flow_manager &) = delete;
  flow_manager &operator=(const flow_manager &) = delete;
  ~flow_manager() { destroy(); }

  // The flowtable for n_workers lcores (QSBR thread ids 0..n_workers-1 count flows) and the
  // adjacency table. A null qsbr frees at once (single-threaded tests).
  void create(uint32_t capacity, unsigned n_workers, rte_rcu_qsbr *qsbr, const mem_ops &mem, int socket);
  void destroy();

  // What the lcores read.
  flowtable &table() { return ft_; }
  const flowtable &table() const { return ft_; }
  const adjacency *adjacencies() const { return adj_; }

  // Both directions of a connection, installed together; reply may be null (one-way UDP).
  // The specs are validated by the caller, and every non-encap direction has its source
  // MAC (has_src_mac). now_s: the dataplane's clock, for last_seen.
  uint64_t add_pair(const flow_spec &orig, const flow_spec *reply, uint32_t now_s);
  bool remove(uint64_t handle);
  bool get(uint64_t handle, uint32_t now_s, flow_info *out) const;
  // See dataplane::list_flows.
  std::vector<flow_info> list(uint32_t from, uint32_t max, uint32_t *next, uint32_t now_s) const;
  // See dataplane::reap.
  std::vector<reaped_flow> reap(uint32_t tcp_timeout_s, uint32_t udp_timeout_s, uint32_t now_s);
  // Remove every pair of which either direction satisfies pred(entry, index).
  template <typename Pred>
  uint32_t remove_if(Pred pred);
  uint32_t flush() {
    return remove_if([](const flow_entry &, uint32_t) { return true; });
  }

  // The handle of the connection entry idx belongs to, and whether it is the reply
  // direction; false for a free entry.
  bool connection_of(uint32_t idx, uint64_t *handle, bool *reply) const;
  uint32_t active_pairs() const { return static_cast<uint32_t>(added_ - removed_); }
  uint64_t added() const { return added_; }
  uint64_t removed() const { return removed_; }
  uint64_t insert_failed() const { return insert_failed_; }
  uint32_t adjacency_count() const { return static_cast<uint32_t>(adj_index_.size()); }
  // The next hop on `port` whose MAC was old_dst now has new_dst for `family` (4 or 6; the
  // kernel's neighbour entry of an address of that family changed): its adjacencies of that
  // family are rewritten in place, so every flow through them follows without being
  // removed. Returns how many adjacencies changed.
  uint32_t rewrite_next_hop(uint16_t port, uint8_t family, const uint8_t old_dst[6], const uint8_t new_dst[6]);

 private:
  enum class slot_state : uint8_t { free, orig, reply };
  struct flow_ctl {
    uint32_t gen = 0;
    slot_state state = slot_state::free;
  };
  using adj_key = std::array<uint8_t, 15>;  // port (2) + dst MAC + src MAC + family
  static adj_key adj_key_of(const adjacency &a);

  void fill_entry(uint32_t idx, const flow_spec &f, uint32_t pair, uint32_t now_s);
  void release_entry(uint32_t idx);
  void remove_pair(uint32_t orig_idx);
  flow_spec spec_of(uint32_t idx) const;
  flow_info info_of(uint32_t orig_idx, uint32_t now_s) const;
  uint64_t handle_of(uint32_t idx) const;
  bool decode_handle(uint64_t handle, uint32_t *idx) const;

  uint32_t adjacency_acquire(const adjacency &want);
  void adjacency_release(uint32_t idx);

  flowtable ft_;
  std::vector<flow_ctl> ctl_;
  uint32_t high_water_ = 0;  // one past the highest flow index ever handed out
  uint64_t added_ = 0, removed_ = 0, insert_failed_ = 0;

  const mem_ops *mem_ = nullptr;
  adjacency *adj_ = nullptr;
  rcu_index_pool adj_pool_;
  std::map<adj_key, uint32_t> adj_index_;
  std::vector<uint32_t> adj_refs_;
};

template <typename Pred>
uint32_t flow_manager::remove_if(Pred pred) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < high_water_; i++) {
    if (ctl_[i].state != slot_state::orig) continue;
    const flow_entry &e = ft_.entry(i);
    bool match = pred(e, i);
    if (!match && e.pair != FLOW_NONE) match = pred(ft_.entry(e.pair), e.pair);
    if (match) {
      remove_pair(i);
      n++;
    }
  }
  return n;
}

}  // namespace fg
