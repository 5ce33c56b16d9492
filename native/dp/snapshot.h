// Configuration as the lcores see it: an immutable snapshot that the control thread builds,
// publishes with one atomic pointer store and frees after an RCU grace period (STYLE 6).
// Lcores load the pointer once per loop iteration and never keep it across a quiescent state.
#pragma once

#include <cstdint>
#include <cstring>

#include <netinet/in.h>

#include <rte_ring.h>

#include "common.h"
#include "tunnel.h"

namespace fg {

struct port_conf {
  uint16_t mtu;       // egress MTU: largest L3 packet sent on this port
  uint16_t slowpath;  // port that takes this port's punted packets, or PORT_NONE
  uint8_t active;     // configured and started
  uint8_t l3;         // no Ethernet header on this port (a TUN device)
  uint8_t multiseg;   // tx takes chained mbufs (RTE_ETH_TX_OFFLOAD_MULTI_SEGS is on)
  uint8_t csum_offload;  // rx checks IPv4 header checksums (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM is on)
  // The port's own Ethernet address (port_mac_word): the fast path forwards only frames
  // sent to it.
  uint64_t mac;
  // Punt policer, per worker (the control thread divides the port's rate among them):
  // a punt costs punt_cost TSC cycles of credit, credit is capped at punt_burst. 0: none.
  uint64_t punt_cost;
  uint64_t punt_burst;
  // Packets the kernel sends out of this port's TAP, queued by the slow-path thread for
  // worker 0 to transmit (lcores transmit on ports; the slow-path thread has no tx queue).
  rte_ring *kernel_tx;
  // A kernel-facing port (a TAP or TUN) that the slow-path thread reads: what the kernel
  // sends into it leaves by this port (TAP), or is encapsulated by this tunnel (TUN).
  uint16_t kernel_egress_port;
  uint16_t kernel_egress_tunnel;
  // VLANs (vlan.h). On an ethdev port: it carries VLAN sub-interfaces, so received frames
  // are demultiplexed by their tags. On a VLAN sub-interface: the ethdev port its frames
  // leave by (tx_port), its parent (an ethdev port, or the 802.1ad VLAN whose inner 802.1Q
  // tags it carries), the tags pushed on its frames (outermost first, TPID and TCI in
  // network order, PCP bits zero) and the PCP of tags pushed on frames that arrived untagged.
  uint8_t has_vlans;
  uint8_t n_tags;  // 0: not a VLAN
  uint8_t pcp;
  uint16_t tx_port;
  uint16_t vlan_parent;
  uint32_t tags[2];
};

struct vlan_map_entry {
  uint16_t parent;  // ethdev port, or an 802.1ad VLAN
  uint16_t port;    // the VLAN sub-interface
  uint32_t tag;     // TPID and VLAN id as on the wire (network order), PCP and DEI zero
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
  // Per-flow packet and byte counters (nft flowtable's `counter` flag): one cache line more
  // per packet with a large table when on.
  uint8_t count_flows;
  port_conf port[MAX_PORTS];
  tunnel tun[MAX_TUNNELS];
  worker_plan plan[MAX_WORKERS];
  // Ports with a kernel_tx ring, for worker 0.
  uint16_t n_kernel_tx;
  uint16_t kernel_tx_ports[MAX_ETHPORTS];
  // Every VLAN sub-interface by (parent, TPID, VLAN id), for the rx demultiplexing: a short
  // list, scanned only when a burst's tag differs from the previous frame's.
  uint16_t n_vlans;
  vlan_map_entry vlan_map[MAX_VLANS];
};

// Each tunnel's effective MTU from its configured MTU, its underlay port's MTU and its
// learnt path MTU: computed once per snapshot, so that the fast path compares one number
// per packet (the kernel's ip6_tnl_xmit() computes it per packet from the route).
inline void derive_tunnel_mtus(snapshot &s) {
  for (tunnel &t : s.tun) {
    if (!t.active) continue;
    const port_conf &underlay = s.port[t.port];
    t.effective_mtu = tunnel_effective_mtu(t, underlay.active ? underlay.mtu : 0);
  }
}

// Where a flow's packets go: the Ethernet addresses to write and the output port.
// Recycled by the control thread after a grace period. One field changes while published:
// the next hop's MAC, when the kernel's neighbour entry does (a replaced router keeps its
// address). It is rewritten with one 8-byte store of the first word (the destination and
// the first two bytes of the source, which stay), which the lcores read with one 8-byte
// load, so that no packet is sent with half an old and half a new MAC.
//
// The IPv4 and IPv6 flows to one MAC have adjacencies of their own (`family`): a host's
// IPv4 and IPv6 addresses are separate neighbour entries, and one of them can move to
// another MAC (an address taken over by another router) while the other stays.
struct alignas(16) adjacency {
  uint8_t dst_mac[6];
  uint8_t src_mac[6];
  uint16_t port;
  uint8_t family;  // 4 or 6: of the (inner) packets forwarded through it
  uint8_t pad;
};
static_assert(sizeof(adjacency) == 16, "two adjacencies a 32-byte load");

// The first word of an adjacency: its destination MAC and the first two bytes of its source.
inline uint64_t adjacency_mac_word(const adjacency &a) {
  return __atomic_load_n(reinterpret_cast<const uint64_t *>(&a), __ATOMIC_RELAXED);
}

inline void adjacency_set_dst_mac(adjacency &a, const uint8_t dst[6]) {
  uint64_t word = adjacency_mac_word(a);
  memcpy(&word, dst, 6);
  __atomic_store_n(reinterpret_cast<uint64_t *>(&a), word, __ATOMIC_RELAXED);
}

constexpr uint32_t MAX_ADJACENCIES = 1u << 16;

}  // namespace fg
