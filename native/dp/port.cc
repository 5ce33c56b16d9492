#include "port.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_ethdev.h>

#include "dataplane.h"
#include "error.h"

namespace fg {
namespace {

std::string errstr(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }

[[noreturn]] void fail(const port_spec &spec, const std::string &what, int rc) {
  throw dp_error(ERR_PORT_CONFIG,
                 "port " + spec.name + " (" + spec.device + "): " + what + ": " + errstr(rc),
                 rc < 0 ? -rc : rc);
}

}  // namespace

uint16_t port_probe(const std::string &device, const std::string &name) {
  // Port names are the device name: the PCI address or the vdev name before the arguments.
  std::string dev_name = device.substr(0, device.find(','));
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(dev_name.c_str(), &id) == 0) return id;
  int rc = rte_dev_probe(device.c_str());
  if (rc < 0)
    throw dp_error(ERR_DEVICE,
                   "port " + name + ": cannot attach device '" + device + "': " + errstr(rc) +
                       " (is the device present and bound to a DPDK driver, and is its PMD "
                       "installed?)",
                   -rc);
  if (rte_eth_dev_get_port_by_name(dev_name.c_str(), &id) != 0)
    throw dp_error(ERR_DEVICE, "port " + name + ": device '" + device +
                                   "' attached but provides no ethdev port named '" + dev_name + "'");
  return id;
}

port_setup port_start(uint16_t id, const port_spec &spec, uint16_t n_workers, rte_mempool *pool,
                      uint16_t rx_desc, uint16_t tx_desc) {
  rte_eth_dev_info info;
  int rc = rte_eth_dev_info_get(id, &info);
  if (rc != 0) fail(spec, "cannot read device info", rc);

  port_setup setup;
  setup.driver = info.driver_name != nullptr ? info.driver_name : "";
  if (info.max_tx_queues < n_workers)
    throw dp_error(ERR_PORT_CONFIG, "port " + spec.name + " (" + spec.device + "): the device has " +
                                        std::to_string(info.max_tx_queues) +
                                        " tx queue(s); flowgate needs one per worker (" +
                                        std::to_string(n_workers) + ")");
  setup.tx_queues = n_workers;
  uint16_t want_rx = spec.poll ? n_workers : 1;
  setup.rx_queues = std::min<uint16_t>(want_rx, info.max_rx_queues);

  rte_eth_conf conf;
  memset(&conf, 0, sizeof(conf));
  uint16_t mtu = spec.mtu;
  if (mtu == 0 && rte_eth_dev_get_mtu(id, &mtu) != 0) mtu = RTE_ETHER_MTU;
  if (mtu > info.max_mtu || mtu < info.min_mtu)
    throw dp_error(ERR_PORT_CONFIG, "port " + spec.name + " (" + spec.device + "): MTU " + std::to_string(mtu) +
                                        " is outside what the " + setup.driver + " device supports (" +
                                        std::to_string(info.min_mtu) + ".." + std::to_string(info.max_mtu) + ")");
  conf.rxmode.mtu = mtu;
  if (setup.rx_queues > 1) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf =
        (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
  }
  // Frames larger than one mbuf need scattered rx.
  uint32_t frame = uint32_t{mtu} + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN + 2 * RTE_VLAN_HLEN;
  uint32_t room = rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
  if (frame > room && (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER)) conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;
  // Chained mbufs reach any port: another port scatters, or a reassembly chains. Where the
  // device cannot send them, the fast path gives them to the slow path instead (punt
  // reason chained).
  if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) {
    conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
    setup.multiseg = true;
  }
  // The device checks IPv4 header checksums where it can (the mbuf's RX_IP_CKSUM flags);
  // the fast path checks the rest in software.
  if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM) {
    conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
    setup.csum_offload = true;
  }
  // The kernel-facing TAP/TUN queues are read by the slow-path thread, which sleeps on
  // their rx interrupts (the tap file descriptors) when the kernel sends nothing.
  if (!spec.poll && (setup.driver == "net_tap" || setup.driver == "net_tun")) conf.intr_conf.rxq = 1;
  rc = rte_eth_dev_configure(id, setup.rx_queues, setup.tx_queues, &conf);
  if (rc != 0) fail(spec, "configure (" + std::to_string(setup.rx_queues) + " rx, " +
                              std::to_string(setup.tx_queues) + " tx queues, MTU " + std::to_string(mtu) + ")",
                    rc);
  rc = rte_eth_dev_set_mtu(id, mtu);
  if (rc != 0 && rc != -ENOTSUP) fail(spec, "set MTU " + std::to_string(mtu), rc);

  rc = rte_eth_dev_adjust_nb_rx_tx_desc(id, &rx_desc, &tx_desc);
  if (rc != 0) fail(spec, "adjust descriptor counts", rc);
  int socket = rte_eth_dev_socket_id(id);
  if (socket < 0) socket = 0;
  for (uint16_t q = 0; q < setup.rx_queues; q++) {
    rc = rte_eth_rx_queue_setup(id, q, rx_desc, static_cast<unsigned>(socket), nullptr, pool);
    if (rc != 0) fail(spec, "set up rx queue " + std::to_string(q), rc);
  }
  for (uint16_t q = 0; q < setup.tx_queues; q++) {
    rc = rte_eth_tx_queue_setup(id, q, tx_desc, static_cast<unsigned>(socket), nullptr);
    if (rc != 0) fail(spec, "set up tx queue " + std::to_string(q), rc);
  }
  bool promiscuous = spec.promiscuous;
  if (spec.has_mac) {
    rte_ether_addr mac;
    memcpy(mac.addr_bytes, spec.mac, 6);
    rc = rte_eth_dev_default_mac_addr_set(id, &mac);
    // Software devices (pcap, null, ring) cannot change their address. The configured one
    // is still the port's address for flowgate; promiscuous mode makes sure frames sent to
    // it are received wherever the device filters by address.
    if (rc == -ENOTSUP)
      promiscuous = true;
    else if (rc != 0)
      fail(spec, "set MAC address", rc);
  }
  if (promiscuous) {
    rc = rte_eth_promiscuous_enable(id);
    if (rc != 0 && rc != -ENOTSUP) fail(spec, "enable promiscuous mode", rc);
  }
  rc = rte_eth_dev_start(id);
  if (rc != 0) fail(spec, "start", rc);
  return setup;
}

void port_release(uint16_t id) {
  rte_eth_dev_info info;
  rte_device *dev = nullptr;
  if (rte_eth_dev_info_get(id, &info) == 0) dev = info.device;
  rte_eth_dev_stop(id);
  rte_eth_dev_close(id);
  if (dev != nullptr) rte_dev_remove(dev);
}

std::vector<port_xstat> port_xstats(uint16_t id, const std::string &name) {
  auto failed = [&](int rc) {
    return dp_error(ERR_DEVICE, "port " + name + ": cannot read its extended statistics: " + errstr(rc), rc < 0 ? -rc : rc);
  };
  // The count may grow between the calls (a driver that adds counters as queues are set
  // up): each call then returns the size it needs, and we ask again with that.
  constexpr int ATTEMPTS = 3;
  for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
    int n = rte_eth_xstats_get_names(id, nullptr, 0);
    if (n < 0) throw failed(n);
    std::vector<rte_eth_xstat_name> names(static_cast<size_t>(n));
    std::vector<rte_eth_xstat> values(static_cast<size_t>(n));
    int got_names = rte_eth_xstats_get_names(id, names.data(), static_cast<unsigned>(n));
    if (got_names < 0) throw failed(got_names);
    int got = rte_eth_xstats_get(id, values.data(), static_cast<unsigned>(n));
    if (got < 0) throw failed(got);
    if (got_names > n || got > n) continue;
    std::vector<port_xstat> out;
    out.reserve(static_cast<size_t>(got));
    for (int i = 0; i < got; i++) {
      const rte_eth_xstat &x = values[static_cast<size_t>(i)];
      // A value names its statistic by id, the index into the names.
      if (x.id < static_cast<uint64_t>(got_names)) out.push_back({names[x.id].name, x.value});
    }
    return out;
  }
  throw failed(-EAGAIN);
}

}  // namespace fg
