// Flows as they cross into JavaScript: packed records in one Buffer, decoded by
// lib/flow-records.ts. Building every listed or reaped flow as a tree of JavaScript objects
// through N-API cost 20-30 µs a flow with the event loop blocked (seconds for a large
// table, during which the learner stood still); copying records into one Buffer costs
// nanoseconds a flow. flowRecordLayout() in the testing exports keeps both sides in step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dp/dataplane.h"

namespace fg::addon {

struct flow_record_direction {
  flow_key key;
  uint64_t packets;
  uint64_t bytes;
  uint8_t action;      // flow_action
  uint8_t pad0;
  uint16_t out_port;   // FWD*, DECAP: the output port; else PORT_NONE
  uint16_t tunnel;     // ENCAP: the tunnel out; DECAP: the tunnel in; else TUNNEL_NONE
  uint8_t dst_mac[6];  // FWD*, DECAP: the Ethernet header written
  uint8_t src_mac[6];
  uint8_t nat_flags;   // NAT_F_*: which of the nat_* fields the packet leaves with
  uint8_t pad1;
  uint16_t nat_sport;  // network order, as the key's ports
  uint16_t nat_dport;
  uint8_t nat_src[16];  // IPv4: the first 4 bytes
  uint8_t nat_dst[16];
};
static_assert(sizeof(flow_record_direction) == 120, "a flow record direction is 120 bytes");

struct flow_record {
  uint64_t handle;
  uint32_t idle_s;
  uint8_t teardown;     // 0 or 1
  uint8_t has_reply;    // 0 or 1
  uint8_t reap_reason;  // reaped flows: 1 + reap_reason; else 0
  uint8_t closing;      // 0 or 1: TCP FIN or RST seen
  flow_record_direction orig;
  flow_record_direction reply;  // zero when !has_reply
};
static_assert(sizeof(flow_record) == 256, "a flow record is 256 bytes");

inline void flow_record_direction_fill(flow_record_direction *d, const flow_spec &f, const flow_counter &c) {
  d->key = f.key;
  d->packets = c.packets;
  d->bytes = c.bytes;
  d->action = f.action;
  d->out_port = f.action == FLOW_ACT_ENCAP ? PORT_NONE : f.out_port;
  d->tunnel = f.action == FLOW_ACT_ENCAP || f.action == FLOW_ACT_DECAP ? f.tunnel : TUNNEL_NONE;
  memcpy(d->dst_mac, f.dst_mac, 6);
  memcpy(d->src_mac, f.src_mac, 6);
  d->nat_flags = f.nat.flags;
  d->nat_sport = f.nat.sport;
  d->nat_dport = f.nat.dport;
  memcpy(d->nat_src, f.nat.src, 16);
  memcpy(d->nat_dst, f.nat.dst, 16);
}

// r must be zeroed.
inline void flow_record_fill(flow_record *r, const flow_info &f, uint8_t reap_reason) {
  r->handle = f.handle;
  r->idle_s = f.idle_s;
  r->teardown = f.teardown ? 1 : 0;
  r->has_reply = f.has_reply ? 1 : 0;
  r->reap_reason = reap_reason;
  r->closing = f.closing ? 1 : 0;
  flow_record_direction_fill(&r->orig, f.orig, f.orig_counter);
  if (f.has_reply) flow_record_direction_fill(&r->reply, f.reply, f.reply_counter);
}

}  // namespace fg::addon
