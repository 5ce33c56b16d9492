// Configuration as the lcores see it: an immutable snapshot that the control thread builds,
// publishes with one atomic pointer store and frees after an RCU grace period (STYLE 6).
// Lcores load the pointer once per loop iteration and never keep it across a quiescent state.
#pragma once

#include <cstdint>

#include "common.h"
#include "tunnel.h"

namespace fg {

struct port_conf {
  uint16_t mtu;       // egress MTU: largest L3 packet sent on this port
  uint16_t slowpath;  // port that takes this port's punted packets, or PORT_NONE
  uint8_t active;     // configured and started
  uint8_t l3;         // no Ethernet header on this port (a TUN device)
  uint8_t pad[2];
};

struct rxq_ref {
  uint16_t port;
  uint16_t queue;
};

struct worker_plan {
  uint16_t n_rxq;
  rxq_ref rxq[MAX_RXQ_PER_WORKER];
};

struct snapshot {
  uint64_t generation;
  port_conf port[MAX_PORTS];
  tunnel tun[MAX_TUNNELS];
  worker_plan plan[MAX_WORKERS];
};

// Where a flow's packets go: the Ethernet addresses to write and the output port.
// Immutable once published; recycled by the control thread after a grace period.
struct alignas(16) adjacency {
  uint8_t dst_mac[6];
  uint8_t src_mac[6];
  uint16_t port;
  uint16_t pad;
};
static_assert(sizeof(adjacency) == 16, "two adjacencies a 32-byte load");

constexpr uint32_t MAX_ADJACENCIES = 1u << 16;

}  // namespace fg
