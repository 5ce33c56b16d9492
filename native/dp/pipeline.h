// One burst through the fast path: parse every packet into a key, one bulk lookup, act.
// Pure packet work on mbufs: no ethdev calls, so the worker loop and the test-only exports
// run the same code. Output is left in per-port tx buffers and a drop list that the caller
// flushes (the worker: rte_eth_tx_burst and rte_pktmbuf_free_bulk).
#pragma once

#include <cstdint>

#include <rte_ip_frag.h>
#include <rte_mbuf.h>

#include "common.h"
#include "flowtable.h"
#include "reasons.h"
#include "snapshot.h"

namespace fg {

struct trace_session;

// Written by one worker only; the control thread reads with relaxed loads and sums.
struct alignas(CACHE_LINE) worker_stats {
  uint64_t rx_packets;    // received on fast-path ports
  uint64_t fast_packets;  // forwarded by a flow
  uint64_t fast_bytes;    // their L3 length as received (the inner packet when tunnelled)
  uint64_t punts[PUNT_REASON_COUNT];
  uint64_t drops[DROP_REASON_COUNT];
  uint64_t tx_packets[MAX_ETHPORTS];
  uint64_t tx_dropped[MAX_ETHPORTS];
  // VLAN sub-interfaces, by VLAN index (port id - MAX_ETHPORTS): frames demultiplexed to
  // them, and frames the fast path tagged for them (before the parent's tx burst, whose
  // losses count on the parent).
  uint64_t vlan_rx_packets[MAX_VLANS];
  uint64_t vlan_rx_bytes[MAX_VLANS];
  uint64_t vlan_tx_packets[MAX_VLANS];
  uint64_t vlan_tx_bytes[MAX_VLANS];
  uint64_t observations_lost;  // observation records dropped: the ring to the learner was full
  uint64_t busy_cycles;  // loop iterations that received packets
  uint64_t idle_cycles;  // loop iterations that did not
  uint64_t sleeps;       // idle backoff sleeps
};

struct tx_buffer {
  uint16_t n;
  rte_mbuf *pkts[BURST_SIZE];
};

// A worker's punt policer state for one input port (see port_conf::punt_cost).
struct punt_credit {
  uint64_t credit;
  uint64_t last_tsc;
};

// Where process_burst spends its cycles, for the pipeline micro-benchmark (bench/micro),
// which builds with FG_STAGE_CYCLES. The addon never does: four more TSC reads per burst
// would cost it a few cycles per packet. A bucket prefetched while parsing is paid for in
// whichever stage first waits for it.
struct stage_cycles {
  uint64_t parse;   // parse every packet into a key and hash it
  uint64_t lookup;  // bulk lookup
  uint64_t act;     // rewrite (TTL, Ethernet, encap/decap), counters, tx buffering
};

struct pipeline {
  const snapshot *snap = nullptr;
  flowtable *ft = nullptr;
  flow_counter *counters = nullptr;  // this worker's per-flow counters
  const adjacency *adj = nullptr;
  worker_stats *stats = nullptr;
  // The packet trace running (trace.h), or null: what process_burst() tests once a burst.
  // The worker loads it from worker_shared::trace with the snapshot, each loop iteration.
  trace_session *trace = nullptr;
  rte_ring *observations = nullptr;  // punt records for the learner (SP: this worker), or null
  uint32_t now_s = 0;    // dataplane seconds, for flow_entry::last_seen
  uint64_t now_tsc = 0;  // TSC at the start of this loop iteration
  punt_credit credits[MAX_PORTS] = {};
  // Reassembly of outer IPv6 fragments of tunnel packets (RFC 2473 section 7): this worker's
  // own table, as rte_ip_frag tables are not thread-safe, and the fragments it gave up,
  // freed after each use. Null: fragments go to the underlay's slow path unreassembled.
  rte_ip_frag_tbl *frag_tbl = nullptr;
  rte_ip_frag_death_row frag_death_row = {};
  // Per tunnel, the lowest path MTU reported by ICMPv6 packet too big since the control
  // thread last looked (0: none). Workers: atomic min; control thread: exchange with 0.
  uint16_t *path_mtu_reports = nullptr;

  // The IPv4 identification of this worker's next encapsulated packet without DF (an IPv4
  // underlay without pmtudisc): sequential, as RFC 791 asks of a source.
  uint16_t ip_id = 0;

  uint16_t n_dirty = 0;        // ports with packets waiting in tx
  uint16_t dirty[MAX_ETHPORTS];
  tx_buffer tx[MAX_ETHPORTS];  // ethdev ports only: a VLAN's frames leave tagged by its parent's
  // Mbufs to free after the burst: dropped packets, and the segments trim_to() cut off
  // chains (at most one of each a packet).
  uint16_t n_drops = 0;
  rte_mbuf *drops[2 * BURST_SIZE];
#ifdef FG_STAGE_CYCLES
  stage_cycles stages = {};
#endif

  // Packet trace (trace.h): this worker's index for the records, and what the traced
  // instantiation of the burst code leaves for the traced driver about the one packet it
  // was given: the flow entry it hit and the (logical) port it was forwarded to.
  uint16_t worker = 0;
  uint16_t trace_out = 0;
  uint32_t trace_flow = 0;
};

// Process n <= BURST_SIZE packets received on in_port. The caller must flush pl.tx and
// pl.drops before the next call.
void process_burst(pipeline &pl, uint16_t in_port, rte_mbuf **pkts, uint16_t n);

}  // namespace fg
