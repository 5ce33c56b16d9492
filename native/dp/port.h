// Bringing a DPDK port up and down: probe by PCI address or vdev devargs, configure queues
// (one tx queue per worker, up to one rx queue per worker with RSS), MTU, MAC, start; and
// stop, close and detach. Control thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <rte_mempool.h>

namespace fg {

struct port_spec;

struct port_setup {
  uint16_t rx_queues;
  uint16_t tx_queues;
  bool multiseg = false;      // tx takes chained mbufs
  bool csum_offload = false;  // rx checks IPv4 header checksums
  std::string driver;
};

// The ethdev port for device (probing it when it is not there yet). Throws dp_error.
uint16_t port_probe(const std::string &device, const std::string &name);
// Configure and start. Throws dp_error naming the port and what the device refused.
port_setup port_start(uint16_t id, const port_spec &spec, uint16_t n_workers, rte_mempool *pool,
                      uint16_t rx_desc, uint16_t tx_desc);
// Stop, close and detach the device, so that its devargs can be probed again.
void port_release(uint16_t id);

// One of a device's extended statistics, as ethtool -S lists them.
struct port_xstat {
  std::string name;
  uint64_t value;
};
// The device's extended statistics (rte_eth_xstats), in the driver's order. Throws dp_error
// when the driver cannot report them.
std::vector<port_xstat> port_xstats(uint16_t id, const std::string &name);

}  // namespace fg
