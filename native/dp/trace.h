// Packet trace (`flowgate trace`): a record of what the fast path, and the slow-path thread,
// did with each of the next N packets they handle, as VPP's `trace add` / `show trace`.
//
// Off by default, and then the fast path pays one predictable branch per burst
// (process_burst() tests the session pointer the worker loads with the snapshot, from the
// same cache line, each loop iteration; the untraced instantiation of the burst code is
// the one that ran before tracing existed). While a session is published, a burst
// goes through a traced driver: packets that pass the session's filters take one unit of a
// shared budget and are processed one at a time, so that each one's decision can be read
// off its worker's counters and tx buffers, then a fixed-size record goes into a
// multi-producer ring that the control thread drains. Packets that do not pass go through
// the usual batched code, in runs that keep arrival order. No allocation per packet, no
// lock: the budget is one atomic counter, and the worker that takes its last unit
// unpublishes the session.
#pragma once

#include <cstdint>
#include <memory>

#include <rte_mbuf.h>
#include <rte_ring.h>

#include "common.h"
#include "pcap_filter.h"

namespace fg {

// Bytes of a packet kept in a record, as received and as sent.
constexpr unsigned TRACE_BYTES = 128;
// Records waiting for the control thread; beyond this they are counted as lost.
constexpr unsigned TRACE_RING_SIZE = 4096;
// The record's worker when the slow-path thread handled the packet.
constexpr uint16_t TRACE_SLOWPATH = UINT16_MAX;
// A record's reason field when there is none.
constexpr uint8_t TRACE_NO_REASON = UINT8_MAX;
// Bytes a filter is run on, read out of a chained mbuf (a filter that looks further does
// not match, as tcpdump's with a short snaplen).
constexpr uint32_t TRACE_FILTER_BYTES = 2048;

enum class trace_decision : uint8_t {
  forward,  // by a flow, rewritten for its output port; or, by the slow-path thread, a TAP's frame to its port
  decap,    // by a flow, decapsulated
  encap,    // by a flow, or by the slow-path thread what the kernel routed into a TUN
  punt,     // to the slow path: punt_reason
  drop,     // drop_reason
  kernel_drop,  // by the slow-path thread: kernel_drop_reason
};

// Why the slow-path thread dropped a packet from the kernel: its own counters
// (slowpath_stats), not the fast path's reasons.
// clang-format off
#define FG_KERNEL_DROP_REASONS(X)                                                      \
  X(tun_wrong_family, "a packet of the family the tunnel does not carry")             \
  X(no_headroom,      "no mbuf headroom for the tunnel's outer headers or VLAN tags")  \
  X(kernel_tx_full,   "the port's queue of packets from the kernel was full")
// clang-format on

enum class kernel_drop_reason : uint8_t {
#define FG_X(name, text) name,
  FG_KERNEL_DROP_REASONS(FG_X)
#undef FG_X
      count
};
constexpr unsigned KERNEL_DROP_REASON_COUNT = static_cast<unsigned>(kernel_drop_reason::count);
extern const char *const kernel_drop_reason_names[KERNEL_DROP_REASON_COUNT];

constexpr uint8_t TRACE_F_TX = 1;        // tx/tx_len hold the packet as sent
constexpr uint8_t TRACE_F_RX_L3 = 2;     // rx starts at the IP header (a TUN's packet)
constexpr uint8_t TRACE_F_TX_L3 = 4;     // tx starts at the IP header (sent into a TUN)

// One traced packet. Plain bytes: copied through the ring as they are.
struct trace_record {
  uint64_t seq;       // 0.. in the order packets took budget
  uint64_t tsc;       // when it was handled
  uint32_t flow;      // flowtable entry it hit, or FLOW_NONE
  uint32_t wire_len;  // as received
  uint32_t tx_len;    // as sent (TRACE_F_TX)
  uint16_t worker;    // worker index, or TRACE_SLOWPATH
  uint16_t in_port;   // logical port it arrived on (a VLAN's, once popped; a TAP or TUN for the slow-path thread)
  uint16_t out_port;  // where it went: output port, the TAP or TUN it was punted to, or PORT_NONE
  uint8_t decision;   // trace_decision
  uint8_t reason;     // punt_reason, drop_reason or kernel_drop_reason by decision, else TRACE_NO_REASON
  uint8_t punt_reason;  // a punt that ended in a drop (no slow-path port...): why it was punted
  uint8_t flags;
  uint8_t rx_len;     // bytes of rx kept
  uint8_t tx_caplen;  // bytes of tx kept
  uint8_t rx[TRACE_BYTES];
  uint8_t tx[TRACE_BYTES];
};
static_assert(sizeof(trace_record) % 4 == 0, "rte_ring elements are multiples of 4 bytes");

// A running trace. The control thread builds it, publishes it in the session slot
// (worker_shared::trace), and frees it after unpublishing and a grace period; workers and
// the slow-path thread only take budget and enqueue.
struct trace_session {
  uint64_t count = 0;         // packets asked for
  uint16_t port = PORT_NONE;  // only packets arriving on this logical port; PORT_NONE: any
  pcap_filter frame_filter;   // for Ethernet frames
  pcap_filter ip_filter;      // for a TUN's IP packets
  bool ip_filter_valid = true;  // false: the expression means nothing without Ethernet (matches no TUN packet)
  rte_ring *ring = nullptr;   // MP/SC: lcores and the slow-path thread enqueue, the control thread drains
  trace_session **slot = nullptr;  // where it is published: the taker of the last unit clears it
  alignas(CACHE_LINE) int64_t budget = 0;  // lcores: fetch_sub; control thread: set before publishing
  uint64_t lost = 0;  // records the ring had no room for (atomic add)
  // Records submitted (queued or lost): the taker of a unit submits its record a little
  // later, so the trace is complete only once this reaches the units taken. Atomic add,
  // release: after the enqueue.
  uint64_t written = 0;
};

// Whether a packet arriving on logical port `port` (Ethernet, or raw IP when l3) passes
// the session's filters. Does not take budget.
bool trace_selects(const trace_session &ts, uint16_t port, const rte_mbuf *m, bool l3);
// Take one unit of budget: false when the trace has all its packets. Sets *seq.
bool trace_take(trace_session &ts, uint64_t *seq);
// Up to TRACE_BYTES of m from its first byte; returns how many.
uint8_t trace_copy(const rte_mbuf *m, uint8_t *out);
// The packet as sent: flags, length and first bytes.
void trace_set_tx(trace_record &r, const rte_mbuf *m, bool l3);
// Into the ring; counted as lost when it is full.
void trace_submit(trace_session &ts, const trace_record &r);

}  // namespace fg
