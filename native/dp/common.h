// Constants and small helpers shared by the fast path and the control plane.
#pragma once

#include <cstddef>
#include <cstdint>

#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_config.h>

namespace fg {

// Packets per rx burst: one burst is parsed, looked up and acted on as a unit (STYLE 2).
constexpr uint16_t BURST_SIZE = 32;
// How many packets ahead of the one being parsed we prefetch packet data.
constexpr uint16_t PREFETCH_OFFSET = 4;
// Upper bounds sized for a gateway appliance; arrays indexed by them live in snapshots.
constexpr uint16_t MAX_WORKERS = 16;
// Port ids: ethdev ports (0..MAX_ETHPORTS-1), then VLAN sub-interfaces, logical ports that
// have no ethdev (their frames leave by their parent's). Arrays that only ethdev ports
// index (tx buffers, tx counters, rx polling) stay MAX_ETHPORTS long.
constexpr uint16_t MAX_ETHPORTS = RTE_MAX_ETHPORTS;
constexpr uint16_t MAX_VLANS = 64;
constexpr uint16_t MAX_PORTS = MAX_ETHPORTS + MAX_VLANS;
constexpr uint16_t MAX_TUNNELS = 64;
constexpr uint16_t MAX_RXQ_PER_WORKER = 64;
// Largest flowtable: flow indices must fit the 23 bits that a flow handle gives them.
constexpr uint32_t MAX_FLOWS = 1u << 22;

constexpr uint16_t PORT_NONE = UINT16_MAX;
constexpr uint16_t TUNNEL_NONE = UINT16_MAX;
constexpr uint32_t FLOW_NONE = UINT32_MAX;

constexpr size_t CACHE_LINE = RTE_CACHE_LINE_SIZE;

}  // namespace fg
