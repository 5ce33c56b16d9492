// The control plane of the fast path: EAL, ports, workers, tunnels, adjacencies and flows.
// Every method runs on one control thread (the JavaScript thread); workers only read what
// it publishes. Methods throw dp_error; none of them is ever called from an lcore.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <rte_mempool.h>

#include "capture.h"
#include "error.h"
#include "flow_manager.h"
#include "flowtable.h"
#include "port.h"
#include "slowpath.h"
#include "snapshot.h"
#include "trace.h"
#include "tunnel.h"
#include "worker.h"

namespace fg {

struct init_options {
  std::vector<std::string> eal_args;  // argv for rte_eal_init, program name first
  uint32_t flow_capacity = 1u << 20;
  uint32_t mbufs = 16383;
  uint16_t mbuf_data_room = RTE_MBUF_DEFAULT_DATAROOM;
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  idle_mode idle = idle_mode::busy;
};

struct port_spec {
  std::string name;    // for messages and port_info
  std::string device;  // PCI address or vdev devargs ("net_pcap0,rx_pcap=...")
  uint16_t mtu = 0;    // 0: the device's own
  bool has_mac = false;
  uint8_t mac[6] = {};
  bool promiscuous = false;
  bool poll = true;    // the fast path polls its rx queues
  int l3 = -1;         // no Ethernet header: -1 decide by driver (net_tun), 0 no, 1 yes
};

// A VLAN sub-interface (802.1Q or 802.1ad) of an ethdev port, or an 802.1Q VLAN of an
// 802.1ad one (QinQ). A logical port: it has an id like any port (MAX_ETHPORTS..) and is
// used wherever one is (flows, tunnel underlays, slow path), and its frames leave tagged
// by the ethdev port under it.
struct vlan_spec {
  std::string name;
  uint16_t parent = PORT_NONE;
  uint16_t vid = 0;     // 1..4094
  bool ad = false;      // 802.1ad (TPID 0x88a8) instead of 802.1Q (0x8100)
  uint16_t mtu = 0;     // 0: the parent's
  bool has_mac = false;
  uint8_t mac[6] = {};  // default: the parent's
  uint8_t pcp = 0;      // of tags pushed onto frames that arrived untagged
};

struct port_info {
  uint16_t id;
  std::string name;
  std::string device;
  std::string driver;
  uint8_t mac[6];
  uint16_t mtu;
  uint16_t rx_queues;
  uint16_t tx_queues;
  bool link_up;
  uint32_t link_speed_mbps;
  bool l3;
  bool poll;
  uint16_t slowpath;
  // A VLAN sub-interface: its parent (PORT_NONE for an ethdev port), id, TPID and PCP.
  uint16_t vlan_parent;
  uint16_t vlan_id;
  bool vlan_ad;
  uint8_t vlan_pcp;
};

struct port_counters {
  uint64_t rx_packets, rx_bytes, rx_missed, rx_errors, rx_nombuf;
  uint64_t tx_packets, tx_bytes, tx_errors, tx_dropped;
};

// A tunnel's MTUs: as configured, the underlay path's as learnt from ICMPv6 packet too
// big (0: none), and the effective one the fast path and the TUN device use.
struct tunnel_mtu_info {
  uint16_t id;
  uint16_t mtu;
  uint16_t path_mtu;
  uint16_t effective_mtu;
};

struct worker_info {
  unsigned index;
  unsigned lcore;
  worker_stats stats;  // a relaxed copy
};

struct dataplane_stats {
  std::vector<worker_info> workers;
  uint64_t rx_packets, fast_packets, fast_bytes;
  uint64_t punts[PUNT_REASON_COUNT];
  uint64_t drops[DROP_REASON_COUNT];
  uint32_t flows_active;  // connections (pairs or one-way flows)
  uint32_t flow_entries;  // flowtable entries: one per direction
  uint32_t flows_capacity, flows_spilled;
  uint64_t flows_added, flows_removed, flows_insert_failed;
  uint32_t adjacencies;
  // The mbuf pool: mbufs taken (in rings, queues, the workers' hands and the lcore caches)
  // out of its size. A leak shows as in-use that does not come back when traffic stops.
  uint32_t mbufs_in_use, mbufs_total;
  uint64_t observations_lost;  // punt records the workers could not queue
  slowpath_stats slowpath;
  uint64_t tsc_hz;
  uint32_t now_s;
};

// A packet trace to start (trace.h).
struct trace_options {
  uint64_t count = 50;        // packets to trace, 1..
  uint16_t port = PORT_NONE;  // only packets arriving on this (logical) port
  std::string filter;         // tcpdump-style; empty: every packet
};

struct trace_status {
  bool running;        // packets still to be traced, or records of packets taken still to come
  uint64_t remaining;  // of the count
  uint64_t lost;       // records the ring had no room for
};

class dataplane {
 public:
  dataplane() = default;
  ~dataplane();
  dataplane(const dataplane &) = delete;
  dataplane &operator=(const dataplane &) = delete;

  // EAL, mbuf pool, flowtable, RCU; the EAL worker lcores become this dataplane's workers.
  void init(const init_options &opts);
  // Stop workers, close ports, free everything, rte_eal_cleanup(). Idempotent.
  void shutdown();
  bool initialized() const { return initialized_; }

  uint16_t add_port(const port_spec &spec);
  // Removes the port's VLAN sub-interfaces with it, as the kernel unregisters a device's
  // VLAN devices with it.
  void remove_port(uint16_t port);
  uint16_t add_vlan(const vlan_spec &spec);
  // A VLAN sub-interface (and the 802.1Q VLANs on it, when it is 802.1ad): as remove_port.
  void remove_vlan(uint16_t port);
  bool is_vlan(uint16_t port) const { return port >= MAX_ETHPORTS && port < MAX_PORTS && ports_[port].used; }
  void set_port_slowpath(uint16_t port, uint16_t slowpath);
  void set_port_mtu(uint16_t port, uint16_t mtu);
  // Limit the packets a port punts to the slow path; rate 0: no limit.
  void set_punt_policer(uint16_t port, uint32_t rate_pps, uint32_t burst);
  // Per-flow packet and byte counters on or off (on by default).
  void set_flow_counters(bool on);
  // Where observation records go (called on the slow-path thread); set before start().
  void set_observation_sink(observation_sink sink);
  port_info get_port_info(uint16_t port) const;
  port_counters get_port_counters(uint16_t port) const;
  // The NIC's extended statistics (ethtool -S); a VLAN sub-interface has none of its own.
  std::vector<port_xstat> get_port_xstats(uint16_t port) const;
  std::vector<uint16_t> ports() const;

  void start();
  void stop();
  bool running() const { return running_; }

  uint16_t add_tunnel(const tunnel_params &p);
  void update_tunnel(uint16_t id, const tunnel_params &p);
  void remove_tunnel(uint16_t id);
  // Lower the path MTU of the tunnels for which the workers received ICMPv6 packet too big
  // since the last call, forget those learnt expires_s or more ago (as Linux's
  // net.ipv6.route.mtu_expires, 600 s by default), and return the tunnels whose path MTU
  // changed.
  std::vector<tunnel_mtu_info> apply_path_mtu_reports(uint32_t expires_s);
  tunnel_mtu_info tunnel_mtu(uint16_t id) const;

  // Both directions of a connection, installed together; reply may be null (one-way UDP).
  uint64_t add_flow_pair(const flow_spec &orig, const flow_spec *reply);
  bool remove_flow(uint64_t handle);
  bool get_flow(uint64_t handle, flow_info *out) const;
  // At most `max` flows, in table order from cursor `from` (0 to start); *next is the cursor
  // to continue from, or 0 when the listing is complete. Flows added or removed between
  // pages may be missed or listed once, never twice.
  std::vector<flow_info> list_flows(uint32_t from, uint32_t max, uint32_t *next) const;
  // Remove flows marked for teardown and flows idle longer than their protocol's timeout;
  // each reaped flow says whether it was closing.
  std::vector<reaped_flow> reap(uint32_t tcp_timeout_s, uint32_t udp_timeout_s);
  // Remove every flow; returns how many pairs were removed.
  uint32_t flush_flows();
  // See flow_manager::rewrite_next_hop.
  uint32_t rewrite_next_hop(uint16_t port, uint8_t family, const uint8_t old_dst[6], const uint8_t new_dst[6]);

  dataplane_stats stats() const;
  uint32_t now_s() const;

  // Packet trace: one at a time (ERR_STATE while one has not been stopped); a filter
  // libpcap refuses is ERR_INVALID_ARGUMENT with libpcap's message.
  void trace_start(const trace_options &o);
  // Records traced so far and not yet read, at most max, in ring order.
  std::vector<trace_record> trace_read(unsigned max, trace_status *status);
  // Unpublish the session (if the budget has not already) and free it. Idempotent.
  void trace_stop();
  bool tracing() const { return trace_ != nullptr; }
  // The connection a flowtable entry belongs to (its handle, and whether the entry is its
  // reply direction); false when the entry is free.
  bool flow_of_entry(uint32_t idx, uint64_t *handle, bool *reply) const;
  // Port captures (capture.h): one per ethdev port at a time. start_capture() returns the
  // capture's id; it writes until stop_capture(), or until its count or the descriptor's
  // reader ends it (capture_stats.end), after which it still holds the port until stopped.
  uint64_t start_capture(const capture_options &opts);
  capture_stats capture_stats_of(uint64_t id) const;
  // Waits until no worker copies for it, writes what is queued and closes the descriptor.
  capture_stats stop_capture(uint64_t id);

 private:
  struct port_state {
    bool used = false;
    port_spec spec;
    std::string driver;
    uint16_t rx_queues = 0;
    uint16_t tx_queues = 0;
    bool l3 = false;
    uint8_t mac[6] = {};  // the configured address, or the device's own
    vlan_spec vlan;       // a VLAN sub-interface: vlan.parent != PORT_NONE
  };
  // Everything that points at a port goes (flows, tunnels over it, slow-path links), and
  // with it the VLANs on it; then its ethdev is released.
  void detach_port(uint16_t port);

  void require_init() const;
  void require_port(uint16_t port) const;
  std::unique_ptr<snapshot> next_snapshot() const;
  void publish(std::unique_ptr<snapshot> next);
  void derive(snapshot &s) const;

  // Remove the flows into and out of a tunnel (its decap and encap flows).
  void remove_tunnel_flows(uint16_t id);
  void validate_flow(const flow_spec &f) const;
  // f with its source MAC: the output port's address unless given.
  flow_spec resolve_flow(const flow_spec &f) const;

  bool initialized_ = false;
  bool running_ = false;
  init_options opts_;
  rte_mempool *pool_ = nullptr;
  rte_rcu_qsbr *qsbr_ = nullptr;
  flow_manager flows_;

  std::array<port_state, MAX_PORTS> ports_{};
  std::vector<worker *> workers_;
  worker_shared shared_{};
  snapshot *snap_ = nullptr;
  slowpath_thread slowpath_;
  observation_sink sink_;
  // Written by the workers (pipeline::path_mtu_reports), taken by apply_path_mtu_reports().
  std::array<uint16_t, MAX_TUNNELS> path_mtu_reports_{};
  std::map<uint64_t, std::unique_ptr<capture_session>> captures_;
  uint64_t next_capture_id_ = 1;
  // When each tunnel's path MTU was last lowered (dataplane seconds): control thread only.
  std::array<uint32_t, MAX_TUNNELS> path_mtu_learnt_s_{};
  // The packet trace: the session published in shared_.trace, and its ring (made once).
  std::unique_ptr<trace_session> trace_;
  rte_ring *trace_ring_ = nullptr;
};

constexpr unsigned OBSERVATION_RING_SIZE = 4096;
constexpr unsigned KERNEL_TX_RING_SIZE = 1024;
// Per worker reassembly of tunnel fragments: packets being reassembled at once (each holds
// up to RTE_LIBRTE_IP_FRAG_MAX_FRAG mbufs, so at most 512 mbufs per worker), and how long
// a packet may wait for its missing fragments. A tunnel's fragments come back to back;
// Linux waits 60 s (ip6frag_time), which here would only let lost fragments hold mbufs.
constexpr uint32_t FRAG_MAX_PACKETS = 64;
constexpr uint32_t FRAG_BUCKET_ENTRIES = 4;
constexpr uint32_t FRAG_BUCKETS = FRAG_MAX_PACKETS / FRAG_BUCKET_ENTRIES * 2;
constexpr uint64_t FRAG_TIMEOUT_MS = 2000;

}  // namespace fg
