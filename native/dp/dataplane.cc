#include "dataplane.h"

#include <algorithm>
#include <cstring>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "eal.h"
#include "memory.h"
#include "port.h"
#include "vlan.h"

namespace fg {

dataplane::~dataplane() { shutdown(); }

void dataplane::require_init() const {
  if (!initialized_) throw dp_error(ERR_NOT_INITIALIZED, "the dataplane is not initialised (call init first)");
}

void dataplane::require_port(uint16_t port) const {
  require_init();
  if (port >= MAX_PORTS || !ports_[port].used)
    throw dp_error(ERR_NOT_FOUND, "no port with id " + std::to_string(port));
}

void dataplane::init(const init_options &opts) {
  if (opts.flow_capacity == 0 || opts.flow_capacity > MAX_FLOWS)
    throw dp_error(ERR_INVALID_ARGUMENT, "flow capacity must be 1.." + std::to_string(MAX_FLOWS) +
                                             ", got " + std::to_string(opts.flow_capacity));
  eal_init(opts.eal_args);  // throws when EAL runs already, for this dataplane or another
  opts_ = opts;
  try {
    unsigned n_workers = rte_lcore_count() - 1;
    if (n_workers == 0)
      throw dp_error(ERR_INVALID_ARGUMENT, "EAL has no worker lcores: map at least one with --lcores");
    if (n_workers > MAX_WORKERS)
      throw dp_error(ERR_LIMIT, "at most " + std::to_string(MAX_WORKERS) + " workers, got " +
                                    std::to_string(n_workers));
    int socket = static_cast<int>(rte_socket_id());
    if (socket < 0) socket = 0;

    pool_ = rte_pktmbuf_pool_create("flowgate_mbufs", opts.mbufs, RTE_MEMPOOL_CACHE_MAX_SIZE, 0,
                                    static_cast<uint16_t>(opts.mbuf_data_room + RTE_PKTMBUF_HEADROOM),
                                    socket);
    if (pool_ == nullptr)
      throw dp_error(ERR_NO_MEMORY, "cannot create the mbuf pool (" + std::to_string(opts.mbufs) + " mbufs of " +
                                        std::to_string(opts.mbuf_data_room) + " bytes): " + rte_strerror(rte_errno),
                     rte_errno);

    // Readers: the workers, then the slow-path thread.
    size_t qsbr_size = rte_rcu_qsbr_get_memsize(n_workers + 1);
    qsbr_ = static_cast<rte_rcu_qsbr *>(rte_zmalloc("flowgate_qsbr", qsbr_size, RTE_CACHE_LINE_SIZE));
    if (qsbr_ == nullptr || rte_rcu_qsbr_init(qsbr_, n_workers + 1) != 0)
      throw dp_error(ERR_NO_MEMORY, "cannot allocate the RCU state");

    flows_.create(opts.flow_capacity, n_workers, qsbr_, hugepage_mem, socket);

    shared_.qsbr = qsbr_;
    shared_.ft = &flows_.table();
    shared_.adj = flows_.adjacencies();
    shared_.idle = opts.idle;
    shared_.tsc_hz = rte_get_tsc_hz();
    shared_.tsc_epoch = rte_rdtsc();
    shared_.running = 0;

    unsigned lcore;
    unsigned index = 0;
    RTE_LCORE_FOREACH_WORKER(lcore) {
      auto *w = static_cast<worker *>(rte_zmalloc_socket("flowgate_worker", sizeof(worker), RTE_CACHE_LINE_SIZE,
                                                         static_cast<int>(rte_lcore_to_socket_id(lcore))));
      if (w == nullptr) throw dp_error(ERR_NO_MEMORY, "cannot allocate worker state");
      w->index = index;
      w->lcore = lcore;
      w->shared = &shared_;
      workers_.push_back(w);
      std::string ring_name = "fg_obs_" + std::to_string(index);
      w->pl.observations = rte_ring_create_elem(ring_name.c_str(), sizeof(observation), OBSERVATION_RING_SIZE, socket,
                                                RING_F_SP_ENQ | RING_F_SC_DEQ);
      if (w->pl.observations == nullptr) throw dp_error(ERR_NO_MEMORY, "cannot create an observation ring");
      w->pl.frag_tbl = rte_ip_frag_table_create(FRAG_BUCKETS, FRAG_BUCKET_ENTRIES, FRAG_MAX_PACKETS,
                                                shared_.tsc_hz * FRAG_TIMEOUT_MS / 1000, socket);
      if (w->pl.frag_tbl == nullptr) throw dp_error(ERR_NO_MEMORY, "cannot create a fragment reassembly table");
      w->pl.path_mtu_reports = path_mtu_reports_.data();
      index++;
    }

    auto first = std::make_unique<snapshot>();
    memset(first.get(), 0, sizeof(snapshot));
    first->count_flows = 1;
    for (auto &p : first->port) {
      p.slowpath = PORT_NONE;
      p.kernel_egress_port = PORT_NONE;
      p.kernel_egress_tunnel = TUNNEL_NONE;
    }
    for (auto &t : first->tun) t.slowpath_port = PORT_NONE;
    snap_ = first.release();
    shared_.snap = snap_;
    initialized_ = true;
  } catch (...) {
    initialized_ = true;  // so that shutdown() frees what was made
    shutdown();
    throw;
  }
}

void dataplane::shutdown() {
  if (!initialized_) return;
  stop();
  // The workers are stopped: the captures' copies can go, before their ports do.
  while (!captures_.empty()) stop_capture(captures_.begin()->first);
  for (uint16_t p = 0; p < MAX_PORTS; p++) {
    if (ports_[p].used) {
      if (p < MAX_ETHPORTS) port_release(p);
      ports_[p] = port_state{};
    }
  }
  for (worker *w : workers_) {
    rte_ring_free(w->pl.observations);
    // Frees the fragments it holds: before the mbuf pool goes.
    if (w->pl.frag_tbl != nullptr) rte_ip_frag_table_destroy(w->pl.frag_tbl);
    rte_free(w);
  }
  workers_.clear();
  trace_stop();
  rte_ring_free(trace_ring_);
  trace_ring_ = nullptr;
  flows_.destroy();
  delete snap_;
  snap_ = nullptr;
  rte_free(qsbr_);
  qsbr_ = nullptr;
  if (pool_ != nullptr) rte_mempool_free(pool_);
  pool_ = nullptr;
  initialized_ = false;
  eal_cleanup();
}

uint32_t dataplane::now_s() const {
  return static_cast<uint32_t>((rte_rdtsc() - shared_.tsc_epoch) / shared_.tsc_hz);
}

// ---- packet trace ----------------------------------------------------------------------

void dataplane::trace_start(const trace_options &o) {
  require_init();
  if (trace_ != nullptr) throw dp_error(ERR_STATE, "a packet trace is running already; stop it first");
  if (o.count == 0 || o.count > INT64_MAX) throw dp_error(ERR_INVALID_ARGUMENT, "trace count must be at least 1");
  if (o.port != PORT_NONE) require_port(o.port);
  auto ts = std::make_unique<trace_session>();
  ts->count = o.count;
  ts->port = o.port;
  // Throws with libpcap's message: Ethernet frames are what every port but a TUN carries.
  ts->frame_filter = compile_pcap_filter(o.filter, filter_link::ethernet);
  try {
    ts->ip_filter = compile_pcap_filter(o.filter, filter_link::raw_ip);
  } catch (const dp_error &) {
    // "ether host ..." means nothing for a TUN's packets: none of them matches.
    ts->ip_filter_valid = false;
  }
  if (trace_ring_ == nullptr) {
    trace_ring_ = rte_ring_create_elem("fg_trace", sizeof(trace_record), TRACE_RING_SIZE, SOCKET_ID_ANY, RING_F_SC_DEQ);
    if (trace_ring_ == nullptr) throw dp_error(ERR_NO_MEMORY, "cannot create the packet trace ring");
  }
  // No producer is left from a previous trace (trace_stop() waited for them): the ring is
  // empty of anything but its unread records, which are not this trace's.
  rte_ring_reset(trace_ring_);
  ts->ring = trace_ring_;
  ts->slot = &shared_.trace;
  ts->budget = static_cast<int64_t>(o.count);
  trace_ = std::move(ts);
  __atomic_store_n(&shared_.trace, trace_.get(), __ATOMIC_RELEASE);
}

std::vector<trace_record> dataplane::trace_read(unsigned max, trace_status *status) {
  std::vector<trace_record> out;
  if (trace_ == nullptr) {
    *status = trace_status{false, 0, 0};
    return out;
  }
  // The status first: every record written by then is in the ring for the dequeue below, so
  // "not running" and nothing read means nothing more will come.
  const uint64_t written = __atomic_load_n(&trace_->written, __ATOMIC_ACQUIRE);
  const int64_t budget = __atomic_load_n(&trace_->budget, __ATOMIC_RELAXED);
  status->remaining = budget > 0 ? static_cast<uint64_t>(budget) : 0;
  status->running = __atomic_load_n(&shared_.trace, __ATOMIC_ACQUIRE) != nullptr || written < trace_->count - status->remaining;
  status->lost = __atomic_load_n(&trace_->lost, __ATOMIC_RELAXED);
  out.resize(std::min<unsigned>(max, TRACE_RING_SIZE));
  unsigned n = rte_ring_sc_dequeue_burst_elem(trace_ring_, out.data(), sizeof(trace_record),
                                              static_cast<unsigned>(out.size()), nullptr);
  out.resize(n);
  return out;
}

void dataplane::trace_stop() {
  if (trace_ == nullptr) return;
  __atomic_store_n(&shared_.trace, static_cast<trace_session *>(nullptr), __ATOMIC_RELEASE);
  // Workers and the slow-path thread that loaded the session finish with it first.
  if (qsbr_ != nullptr) rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
  trace_.reset();
}

bool dataplane::flow_of_entry(uint32_t idx, uint64_t *handle, bool *reply) const {
  return flows_.connection_of(idx, handle, reply);
}

// ---- snapshots -------------------------------------------------------------------------

std::unique_ptr<snapshot> dataplane::next_snapshot() const {
  auto next = std::make_unique<snapshot>(*snap_);
  next->generation++;
  return next;
}

void dataplane::publish(std::unique_ptr<snapshot> next) {
  derive(*next);
  snapshot *old = snap_;
  snap_ = next.release();
  __atomic_store_n(&shared_.snap, snap_, __ATOMIC_RELEASE);
  slowpath_.wake();
  // Every worker has passed a quiescent state, so none still reads the old snapshot.
  rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
  delete old;
}

void dataplane::derive(snapshot &s) const {
  // Kernel-facing ports: a TAP that takes a port's punts sends the kernel's packets out of
  // that port; a TUN that takes a tunnel's punts has the kernel's packets encapsulated.
  for (uint16_t p = 0; p < MAX_PORTS; p++) {
    s.port[p].kernel_egress_port = PORT_NONE;
    s.port[p].kernel_egress_tunnel = TUNNEL_NONE;
  }
  // Worker 0 drains the kernel_tx ring of each ethdev port that has a TAP, or a VLAN on it
  // that has one, and only those.
  bool drained[MAX_ETHPORTS] = {};
  for (uint16_t p = 0; p < MAX_PORTS; p++) {
    uint16_t sp = s.port[p].slowpath;
    if (!s.port[p].active || sp == PORT_NONE || s.port[sp].l3) continue;
    s.port[sp].kernel_egress_port = p;
    drained[s.port[p].n_tags != 0 ? s.port[p].tx_port : p] = true;
  }
  s.n_kernel_tx = 0;
  for (uint16_t p = 0; p < MAX_ETHPORTS; p++)
    if (drained[p] && s.port[p].kernel_tx != nullptr) s.kernel_tx_ports[s.n_kernel_tx++] = p;
  derive_vlans(s);
  for (uint16_t t = 0; t < MAX_TUNNELS; t++)
    if (s.tun[t].active && s.tun[t].slowpath_port != PORT_NONE) s.port[s.tun[t].slowpath_port].kernel_egress_tunnel = t;

  for (auto &plan : s.plan) plan.n_rxq = 0;
  unsigned n = static_cast<unsigned>(workers_.size());
  unsigned next_worker = 0;
  for (uint16_t p = 0; p < MAX_ETHPORTS; p++) {
    const port_state &ps = ports_[p];
    if (!ps.used || !ps.spec.poll || !s.port[p].active) continue;
    for (uint16_t q = 0; q < ps.rx_queues; q++) {
      worker_plan &plan = s.plan[next_worker];
      next_worker = (next_worker + 1) % n;
      if (plan.n_rxq == MAX_RXQ_PER_WORKER)
        throw dp_error(ERR_LIMIT, "more than " + std::to_string(MAX_RXQ_PER_WORKER) + " rx queues for one worker");
      plan.rxq[plan.n_rxq++] = rxq_ref{p, q};
    }
  }
  derive_tunnel_mtus(s);
}

// ---- ports -----------------------------------------------------------------------------

uint16_t dataplane::add_port(const port_spec &spec) {
  require_init();
  for (const auto &ps : ports_)
    if (ps.used && ps.spec.name == spec.name)
      throw dp_error(ERR_INVALID_ARGUMENT, "a port named '" + spec.name + "' already exists");
  uint16_t id = port_probe(spec.device, spec.name);
  if (id >= MAX_ETHPORTS) throw dp_error(ERR_LIMIT, "port id " + std::to_string(id) + " beyond the supported ports");
  if (ports_[id].used)
    throw dp_error(ERR_PORT_IN_USE, "port " + spec.name + ": device '" + spec.device + "' is already port " +
                                        ports_[id].spec.name);
  port_setup setup;
  try {
    setup = port_start(id, spec, static_cast<uint16_t>(workers_.size()), pool_, opts_.rx_desc, opts_.tx_desc);
  } catch (...) {
    port_release(id);
    throw;
  }
  port_state &ps = ports_[id];
  ps.used = true;
  ps.spec = spec;
  ps.driver = setup.driver;
  ps.rx_queues = setup.rx_queues;
  ps.tx_queues = setup.tx_queues;
  ps.l3 = spec.l3 >= 0 ? spec.l3 == 1 : setup.driver == "net_tun";
  if (spec.has_mac) {
    memcpy(ps.mac, spec.mac, 6);
  } else {
    rte_ether_addr mac;
    rte_eth_macaddr_get(id, &mac);
    memcpy(ps.mac, mac.addr_bytes, 6);
  }

  auto next = next_snapshot();
  port_conf &pc = next->port[id];
  pc = port_conf{};
  uint16_t mtu = RTE_ETHER_MTU;
  rte_eth_dev_get_mtu(id, &mtu);
  pc.mtu = mtu;
  pc.slowpath = PORT_NONE;
  pc.active = 1;
  pc.l3 = ps.l3 ? 1 : 0;
  pc.multiseg = setup.multiseg ? 1 : 0;
  pc.csum_offload = setup.csum_offload ? 1 : 0;
  pc.mac = port_mac_word(ps.mac);
  if (spec.poll) {
    std::string ring_name = "fg_ktx_" + std::to_string(id);
    pc.kernel_tx = rte_ring_create(ring_name.c_str(), KERNEL_TX_RING_SIZE, rte_eth_dev_socket_id(id) < 0 ? 0 : rte_eth_dev_socket_id(id),
                                   RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (pc.kernel_tx == nullptr) {
      port_release(id);
      ps = port_state{};
      throw dp_error(ERR_NO_MEMORY, "port " + spec.name + ": cannot create its kernel tx ring");
    }
  }
  publish(std::move(next));
  return id;
}

void dataplane::remove_port(uint16_t port) {
  require_port(port);
  if (is_vlan(port)) throw dp_error(ERR_INVALID_ARGUMENT, "port " + ports_[port].spec.name + " is a VLAN: remove it as one");
  detach_port(port);
}

void dataplane::remove_vlan(uint16_t port) {
  require_init();
  if (!is_vlan(port)) throw dp_error(ERR_NOT_FOUND, "no VLAN with id " + std::to_string(port));
  detach_port(port);
}

uint16_t dataplane::add_vlan(const vlan_spec &spec) {
  require_port(spec.parent);
  const std::string what = "VLAN " + spec.name;
  for (const auto &ps : ports_)
    if (ps.used && ps.spec.name == spec.name)
      throw dp_error(ERR_INVALID_ARGUMENT, "a port named '" + spec.name + "' already exists");
  if (spec.vid < 1 || spec.vid > 4094) throw dp_error(ERR_INVALID_ARGUMENT, what + ": VLAN id must be 1..4094");
  if (spec.pcp > 7) throw dp_error(ERR_INVALID_ARGUMENT, what + ": PCP must be 0..7");
  const port_conf &parent = snap_->port[spec.parent];
  const port_state &pps = ports_[spec.parent];
  if (pps.l3) throw dp_error(ERR_INVALID_ARGUMENT, what + ": parent " + pps.spec.name + " has no Ethernet header");
  // Stacking as QinQ has it, and as nf_flow_table handles: at most two tags, 802.1ad outside.
  if (parent.n_tags != 0 && (spec.ad || parent.n_tags != 1 || !pps.vlan.ad))
    throw dp_error(ERR_INVALID_ARGUMENT, what + ": a VLAN on a VLAN must be 802.1Q on an 802.1ad VLAN (QinQ)");
  if (spec.mtu > parent.mtu)
    throw dp_error(ERR_INVALID_ARGUMENT, what + ": MTU " + std::to_string(spec.mtu) + " above its parent's (" +
                                             std::to_string(parent.mtu) + ")");
  if (vlan_lookup(*snap_, spec.parent, vlan_tag_word(spec.ad ? TPID_8021AD : TPID_8021Q, spec.vid)) != PORT_NONE)
    throw dp_error(ERR_INVALID_ARGUMENT, what + ": " + pps.spec.name + " has a VLAN with this protocol and id already");
  uint16_t id = MAX_ETHPORTS;
  while (id < MAX_PORTS && ports_[id].used) id++;
  if (id == MAX_PORTS) throw dp_error(ERR_LIMIT, "at most " + std::to_string(MAX_VLANS) + " VLANs");

  port_state &ps = ports_[id];
  ps = port_state{};
  ps.used = true;
  ps.spec.name = spec.name;
  ps.spec.poll = false;  // no queues: its frames come and go by the ethdev port under it
  ps.driver = "vlan";
  ps.vlan = spec;
  memcpy(ps.mac, spec.has_mac ? spec.mac : pps.mac, 6);

  auto next = next_snapshot();
  vlan_conf_build(next->port[id], *next, spec.parent, spec.vid, spec.ad, spec.pcp, spec.mtu, port_mac_word(ps.mac));
  publish(std::move(next));
  return id;
}

void dataplane::detach_port(uint16_t port) {
  if (port < MAX_ETHPORTS && shared_.capture[port] != nullptr)
    for (const auto &[id, c] : captures_)
      if (c->tap()->port == port) {
        stop_capture(id);
        break;
      }
  // VLANs on the port first (802.1Q ones on an 802.1ad one before it).
  for (uint16_t v = MAX_ETHPORTS; v < MAX_PORTS; v++)
    if (ports_[v].used && ports_[v].vlan.parent == port) detach_port(v);
  // Nothing may point at the port once it is gone: flows in or out, tunnels over it, ports
  // that punt to it.
  flows_.remove_if([&](const flow_entry &e, uint32_t) {
    if (e.key.in_port == port) return true;
    if (e.action == FLOW_ACT_ENCAP) return snap_->tun[e.target].port == port;
    return flows_.adjacencies()[e.target].port == port;
  });
  auto next = next_snapshot();
  rte_ring *kernel_tx = next->port[port].kernel_tx;
  next->port[port] = port_conf{};
  next->port[port].slowpath = PORT_NONE;
  for (auto &pc : next->port)
    if (pc.slowpath == port) pc.slowpath = PORT_NONE;
  for (auto &t : next->tun) {
    if (t.active && t.port == port) t.active = 0;
    if (t.slowpath_port == port) t.slowpath_port = PORT_NONE;
  }
  ports_[port].used = false;  // no longer polled: derive() skips it
  publish(std::move(next));
  if (port < MAX_ETHPORTS) port_release(port);
  if (kernel_tx != nullptr) {
    rte_mbuf *m;
    while (rte_ring_dequeue(kernel_tx, reinterpret_cast<void **>(&m)) == 0) rte_pktmbuf_free(m);
    rte_ring_free(kernel_tx);
  }
  ports_[port] = port_state{};
}

void dataplane::set_port_slowpath(uint16_t port, uint16_t slowpath) {
  require_port(port);
  if (slowpath != PORT_NONE) {
    require_port(slowpath);
    if (slowpath == port) throw dp_error(ERR_INVALID_ARGUMENT, "a port cannot be its own slow path");
    for (uint16_t p = 0; p < MAX_PORTS; p++)
      if (p != port && snap_->port[p].active && snap_->port[p].slowpath == slowpath && !snap_->port[slowpath].l3)
        throw dp_error(ERR_INVALID_ARGUMENT, "port " + ports_[slowpath].spec.name + " is the slow path of port " +
                                                 ports_[p].spec.name + " already: what the kernel sends into it "
                                                 "must leave by one port");
  }
  auto next = next_snapshot();
  next->port[port].slowpath = slowpath;
  publish(std::move(next));
}

void dataplane::set_port_mtu(uint16_t port, uint16_t mtu) {
  require_port(port);
  if (is_vlan(port)) {
    // As vlan_dev_change_mtu(): no larger than the parent's.
    const uint16_t parent_mtu = snap_->port[ports_[port].vlan.parent].mtu;
    if (mtu > parent_mtu)
      throw dp_error(ERR_INVALID_ARGUMENT, "VLAN " + ports_[port].spec.name + ": MTU " + std::to_string(mtu) +
                                               " above its parent's (" + std::to_string(parent_mtu) + ")");
    auto next = next_snapshot();
    next->port[port].mtu = mtu;
    publish(std::move(next));
    return;
  }
  int rc = rte_eth_dev_set_mtu(port, mtu);
  if (rc != 0 && rc != -ENOTSUP)
    throw dp_error(ERR_PORT_CONFIG, "port " + ports_[port].spec.name + ": set MTU " + std::to_string(mtu) + ": " +
                                        rte_strerror(-rc),
                   -rc);
  ports_[port].spec.mtu = mtu;
  auto next = next_snapshot();
  next->port[port].mtu = mtu;
  // VLANs above the new MTU come down to it, as vlan_device_event() does on NETDEV_CHANGEMTU.
  for (uint16_t v = MAX_ETHPORTS; v < MAX_PORTS; v++)
    if (ports_[v].used && next->port[v].tx_port == port && next->port[v].mtu > mtu) next->port[v].mtu = mtu;
  publish(std::move(next));
}

void dataplane::set_punt_policer(uint16_t port, uint32_t rate_pps, uint32_t burst) {
  require_port(port);
  auto next = next_snapshot();
  port_conf &pc = next->port[port];
  if (rate_pps == 0) {
    pc.punt_cost = pc.punt_burst = 0;
  } else {
    // Each worker polices its share of the port's traffic at its share of the rate.
    uint64_t n = workers_.size();
    pc.punt_cost = std::max<uint64_t>(1, shared_.tsc_hz * n / rate_pps);
    pc.punt_burst = std::max<uint64_t>(1, burst / n) * pc.punt_cost;
  }
  publish(std::move(next));
}

void dataplane::set_flow_counters(bool on) {
  require_init();
  auto next = next_snapshot();
  next->count_flows = on ? 1 : 0;
  publish(std::move(next));
}

void dataplane::set_observation_sink(observation_sink sink) {
  require_init();
  if (running_) throw dp_error(ERR_STATE, "set the observation sink before the workers start");
  sink_ = std::move(sink);
}

port_info dataplane::get_port_info(uint16_t port) const {
  require_port(port);
  const port_state &ps = ports_[port];
  port_info info{};
  info.id = port;
  info.name = ps.spec.name;
  info.device = ps.spec.device;
  info.driver = ps.driver;
  memcpy(info.mac, ps.mac, 6);
  info.mtu = snap_->port[port].mtu;
  info.rx_queues = ps.rx_queues;
  info.tx_queues = ps.tx_queues;
  info.vlan_parent = ps.vlan.parent;
  info.vlan_id = ps.vlan.vid;
  info.vlan_ad = ps.vlan.ad;
  info.vlan_pcp = ps.vlan.pcp;
  rte_eth_link link;
  memset(&link, 0, sizeof(link));
  // A VLAN's link is its ethdev's, as a VLAN device follows its real device's carrier.
  const uint16_t ethdev = is_vlan(port) ? snap_->port[port].tx_port : port;
  if (rte_eth_link_get_nowait(ethdev, &link) == 0) {
    info.link_up = link.link_status == RTE_ETH_LINK_UP;
    info.link_speed_mbps = link.link_speed;
  }
  info.l3 = ps.l3;
  info.poll = ps.spec.poll;
  info.slowpath = snap_->port[port].slowpath;
  return info;
}

port_counters dataplane::get_port_counters(uint16_t port) const {
  require_port(port);
  port_counters c{};
  if (is_vlan(port)) {
    // Counted by the workers: frames demultiplexed to the VLAN, and tagged for it.
    const unsigned v = port - MAX_ETHPORTS;
    for (const worker *w : workers_) {
      c.rx_packets += __atomic_load_n(&w->stats.vlan_rx_packets[v], __ATOMIC_RELAXED);
      c.rx_bytes += __atomic_load_n(&w->stats.vlan_rx_bytes[v], __ATOMIC_RELAXED);
      c.tx_packets += __atomic_load_n(&w->stats.vlan_tx_packets[v], __ATOMIC_RELAXED);
      c.tx_bytes += __atomic_load_n(&w->stats.vlan_tx_bytes[v], __ATOMIC_RELAXED);
    }
    return c;
  }
  rte_eth_stats st;
  memset(&st, 0, sizeof(st));
  rte_eth_stats_get(port, &st);
  c.rx_packets = st.ipackets;
  c.rx_bytes = st.ibytes;
  c.rx_missed = st.imissed;
  c.rx_errors = st.ierrors;
  c.rx_nombuf = st.rx_nombuf;
  c.tx_packets = st.opackets;
  c.tx_bytes = st.obytes;
  c.tx_errors = st.oerrors;
  for (const worker *w : workers_) c.tx_dropped += __atomic_load_n(&w->stats.tx_dropped[port], __ATOMIC_RELAXED);
  return c;
}

std::vector<port_xstat> dataplane::get_port_xstats(uint16_t port) const {
  require_port(port);
  if (is_vlan(port))
    throw dp_error(ERR_INVALID_ARGUMENT,
                   ports_[port].vlan.name + " is a VLAN sub-interface: it has no NIC, so no extended statistics");
  return port_xstats(port, ports_[port].spec.name);
}

std::vector<uint16_t> dataplane::ports() const {
  std::vector<uint16_t> ids;
  for (uint16_t p = 0; p < MAX_PORTS; p++)
    if (ports_[p].used) ids.push_back(p);
  return ids;
}

// ---- workers ---------------------------------------------------------------------------

void dataplane::start() {
  require_init();
  if (running_) return;
  __atomic_store_n(&shared_.running, uint8_t{1}, __ATOMIC_RELEASE);
  for (worker *w : workers_) {
    int rc = rte_eal_remote_launch(worker_main, w, w->lcore);
    if (rc != 0) {
      stop();
      throw dp_error(ERR_STATE, "cannot launch a worker on lcore " + std::to_string(w->lcore) + ": " +
                                    rte_strerror(-rc),
                     -rc);
    }
  }
  std::vector<rte_ring *> rings;
  for (worker *w : workers_) rings.push_back(w->pl.observations);
  slowpath_.start(&shared_, static_cast<unsigned>(workers_.size()), rings, sink_);
  running_ = true;
}

void dataplane::stop() {
  if (!initialized_) return;
  slowpath_.stop();
  __atomic_store_n(&shared_.running, uint8_t{0}, __ATOMIC_RELEASE);
  // Join before anything is freed (and before rte_eal_cleanup, which hangs otherwise).
  for (worker *w : workers_) rte_eal_wait_lcore(w->lcore);
  running_ = false;
}

// ---- tunnels ---------------------------------------------------------------------------

static void check_tunnel_params(const tunnel_params &p) {
  if (!tunnel_mode_valid(p.mode)) throw dp_error(ERR_INVALID_ARGUMENT, "unknown tunnel mode " + std::to_string(p.mode));
  if (p.encap_limit < -1 || p.encap_limit > 255)
    throw dp_error(ERR_INVALID_ARGUMENT, "encapsulation limit must be 0..255 or none");
  if (p.tclass < -1 || p.tclass > 255) throw dp_error(ERR_INVALID_ARGUMENT, "traffic class must be 0..255 or inherit");
  if (p.flowlabel > 0xfffff) throw dp_error(ERR_INVALID_ARGUMENT, "flow label must be 0..0xfffff");
  if (p.mtu < 68) throw dp_error(ERR_INVALID_ARGUMENT, "tunnel MTU must be at least 68");
  if (tunnel_outer_family(p.mode) == 6) {
    if (!tunnel_endpoint_ok(p.local) || !tunnel_endpoint_ok(p.remote))
      throw dp_error(ERR_INVALID_ARGUMENT, "tunnel endpoints must be unicast addresses (not ::, ::1 or multicast)");
  } else {
    if (p.encap_limit >= 0 || p.flowlabel != 0 || p.flowlabel_hash)
      throw dp_error(ERR_INVALID_ARGUMENT, "an IPv4 underlay has no encapsulation limit or flow label");
    static const uint8_t zero[12] = {};
    if (memcmp(p.local + 4, zero, 12) != 0 || memcmp(p.remote + 4, zero, 12) != 0)
      throw dp_error(ERR_INVALID_ARGUMENT, "an IPv4 underlay's endpoints are IPv4 addresses");
    if (!tunnel_endpoint4_ok(p.local) || !tunnel_endpoint4_ok(p.remote))
      throw dp_error(ERR_INVALID_ARGUMENT,
                     "tunnel endpoints must be unicast addresses (not 0.0.0.0, loopback, multicast or broadcast)");
  }
}

// Whether tunnel t has these endpoints and mode: two tunnels of one mode between the same
// two addresses could not tell their packets apart.
static bool same_tunnel(const tunnel &t, const tunnel_params &p) {
  return t.active && t.mode == p.mode && memcmp(t.local(), p.local, t.address_len()) == 0 &&
         memcmp(t.remote(), p.remote, t.address_len()) == 0;
}

uint16_t dataplane::add_tunnel(const tunnel_params &p) {
  require_port(p.port);
  if (p.slowpath_port != PORT_NONE) require_port(p.slowpath_port);
  check_tunnel_params(p);
  uint16_t id = 0;
  while (id < MAX_TUNNELS && snap_->tun[id].active) id++;
  if (id == MAX_TUNNELS) throw dp_error(ERR_LIMIT, "at most " + std::to_string(MAX_TUNNELS) + " tunnels");
  for (const tunnel &t : snap_->tun)
    if (same_tunnel(t, p))
      throw dp_error(ERR_INVALID_ARGUMENT, "a tunnel of this mode with this local and remote address exists already");
  auto next = next_snapshot();
  tunnel_build(&next->tun[id], p);
  publish(std::move(next));
  return id;
}

void dataplane::update_tunnel(uint16_t id, const tunnel_params &p) {
  require_init();
  if (id >= MAX_TUNNELS || !snap_->tun[id].active) throw dp_error(ERR_NOT_FOUND, "no tunnel with id " + std::to_string(id));
  require_port(p.port);
  if (p.slowpath_port != PORT_NONE) require_port(p.slowpath_port);
  check_tunnel_params(p);
  for (uint16_t other = 0; other < MAX_TUNNELS; other++)
    if (other != id && same_tunnel(snap_->tun[other], p))
      throw dp_error(ERR_INVALID_ARGUMENT, "a tunnel of this mode with this local and remote address exists already");
  const tunnel &old = snap_->tun[id];
  bool endpoints_changed = old.mode != p.mode || memcmp(old.local(), p.local, old.address_len()) != 0 ||
                           memcmp(old.remote(), p.remote, old.address_len()) != 0;
  bool label_mode_changed = ((old.flags & TUNNEL_F_FLOWLABEL_HASH) != 0) != p.flowlabel_hash;
  if (endpoints_changed || label_mode_changed) {
    // Decap flows are keyed by the old endpoints and encap flows carry per-flow labels made
    // for the old mode: the learner installs them again through the slow path.
    remove_tunnel_flows(id);
  }
  // The path towards the same remote keeps the MTU it was found to have (a new next hop
  // MAC is the same path, as Linux's route PMTU outlives a neighbour change).
  const uint16_t path_mtu = endpoints_changed || old.port != p.port ? 0 : old.path_mtu;
  auto next = next_snapshot();
  tunnel_build(&next->tun[id], p);
  next->tun[id].path_mtu = path_mtu;
  publish(std::move(next));
  if (path_mtu == 0) __atomic_store_n(&path_mtu_reports_[id], uint16_t{0}, __ATOMIC_RELAXED);
}

void dataplane::remove_tunnel_flows(uint16_t id) {
  flows_.remove_if([&](const flow_entry &e, uint32_t) {
    return (e.action == FLOW_ACT_ENCAP && e.target == id) || (e.action == FLOW_ACT_DECAP && e.tunnel == id);
  });
}

void dataplane::remove_tunnel(uint16_t id) {
  require_init();
  if (id >= MAX_TUNNELS || !snap_->tun[id].active) throw dp_error(ERR_NOT_FOUND, "no tunnel with id " + std::to_string(id));
  remove_tunnel_flows(id);
  auto next = next_snapshot();
  memset(&next->tun[id], 0, sizeof(tunnel));
  next->tun[id].slowpath_port = PORT_NONE;
  publish(std::move(next));
  // No worker sees the tunnel now: a report left is about it, not the next one with its id.
  __atomic_store_n(&path_mtu_reports_[id], uint16_t{0}, __ATOMIC_RELAXED);
}

std::vector<tunnel_mtu_info> dataplane::apply_path_mtu_reports(uint32_t expires_s) {
  require_init();
  std::vector<tunnel_mtu_info> changed;
  std::unique_ptr<snapshot> next;
  const uint32_t now = now_s();
  for (uint16_t id = 0; id < MAX_TUNNELS; id++) {
    uint16_t reported = __atomic_exchange_n(&path_mtu_reports_[id], uint16_t{0}, __ATOMIC_RELAXED);
    const tunnel &t = snap_->tun[id];
    if (!t.active) continue;
    uint16_t path_mtu = t.path_mtu;
    // As ip6_update_pmtu(): a packet too big only ever lowers the path MTU...
    if (reported != 0 && (path_mtu == 0 || reported < path_mtu)) {
      path_mtu = reported;
      path_mtu_learnt_s_[id] = now;
    } else if (path_mtu != 0 && now - path_mtu_learnt_s_[id] >= expires_s) {
      // ...and the route's learnt MTU expires, after which a larger packet may find out
      // whether the path takes it again (rt6_age_exceptions()).
      path_mtu = 0;
    }
    if (path_mtu == t.path_mtu) continue;
    if (!next) next = next_snapshot();
    next->tun[id].path_mtu = path_mtu;
    changed.push_back({id, 0, 0, 0});
  }
  if (!next) return changed;
  publish(std::move(next));
  for (tunnel_mtu_info &c : changed) c = tunnel_mtu(c.id);
  return changed;
}

tunnel_mtu_info dataplane::tunnel_mtu(uint16_t id) const {
  require_init();
  if (id >= MAX_TUNNELS || !snap_->tun[id].active) throw dp_error(ERR_NOT_FOUND, "no tunnel with id " + std::to_string(id));
  const tunnel &t = snap_->tun[id];
  return {id, t.mtu, t.path_mtu, t.effective_mtu};
}

// ---- flows -----------------------------------------------------------------------------

void dataplane::validate_flow(const flow_spec &f) const {
  const flow_key &k = f.key;
  if (k.in_port >= MAX_PORTS || !ports_[k.in_port].used)
    throw dp_error(ERR_NOT_FOUND, "flow input port " + std::to_string(k.in_port) + " does not exist");
  if (k.l4proto != IPPROTO_TCP && k.l4proto != IPPROTO_UDP)
    throw dp_error(ERR_INVALID_ARGUMENT, "flow L4 protocol must be TCP or UDP, got " + std::to_string(k.l4proto));
  const tunnel *t = f.tunnel < MAX_TUNNELS && snap_->tun[f.tunnel].active ? &snap_->tun[f.tunnel] : nullptr;
  switch (f.action) {
    case FLOW_ACT_FWD4:
      if (k.l3proto != FLOW_L3_IPV4) throw dp_error(ERR_INVALID_ARGUMENT, "IPv4 forward flows match plain IPv4 packets");
      break;
    case FLOW_ACT_FWD6:
      if (k.l3proto != FLOW_L3_IPV6) throw dp_error(ERR_INVALID_ARGUMENT, "IPv6 forward flows match IPv6 packets");
      break;
    case FLOW_ACT_ENCAP:
    case FLOW_ACT_DECAP:
      if (t == nullptr) throw dp_error(ERR_NOT_FOUND, "flow tunnel " + std::to_string(f.tunnel) + " does not exist");
      // The key as the packet's inner one; resolve_flow() adds a decap flow's outer part.
      if (k.l3proto != (t->inner_ipv4() ? FLOW_L3_IPV4 : FLOW_L3_IPV6))
        throw dp_error(ERR_INVALID_ARGUMENT, std::string("the tunnel carries ") + (t->inner_ipv4() ? "IPv4" : "IPv6") +
                                                 ", not the flow's packets");
      break;
    default:
      throw dp_error(ERR_INVALID_ARGUMENT, "unknown flow action " + std::to_string(f.action));
  }
  // The kernel forwards no packet to a multicast or broadcast destination (ip_forward()
  // drops PACKET_BROADCAST and PACKET_MULTICAST, ip_route_input_slow() refuses zero and
  // multicast sources) and so never offers such a flow; the fast path, which compares
  // addresses only, must not hold one either.
  if (flow_l3_is_ipv4(k.l3proto)) {
    uint32_t src = rte_be_to_cpu_32(k.ip4.src), dst = rte_be_to_cpu_32(k.ip4.dst);
    if (RTE_IS_IPV4_MCAST(dst) || dst == UINT32_MAX)
      throw dp_error(ERR_INVALID_ARGUMENT, "flow destination must be a unicast address, not multicast or broadcast");
    if (src == 0 || RTE_IS_IPV4_MCAST(src) || src == UINT32_MAX)
      throw dp_error(ERR_INVALID_ARGUMENT, "flow source must be a unicast address, not unspecified, multicast or broadcast");
  } else {
    if (ip6_is_multicast(k.ip6.dst))
      throw dp_error(ERR_INVALID_ARGUMENT, "flow destination must be a unicast address, not multicast");
    if (ip6_is_unspecified(k.ip6.src) || ip6_is_multicast(k.ip6.src))
      throw dp_error(ERR_INVALID_ARGUMENT, "flow source must be a unicast address, not unspecified or multicast");
  }
  if (((f.nat.flags & NAT_F_SPORT) && f.nat.sport == 0) || ((f.nat.flags & NAT_F_DPORT) && f.nat.dport == 0))
    throw dp_error(ERR_INVALID_ARGUMENT, "flow NAT ports must be 1..65535");
  if (f.action != FLOW_ACT_ENCAP && (f.out_port >= MAX_PORTS || !ports_[f.out_port].used)) {
    throw dp_error(ERR_NOT_FOUND, "flow output port " + std::to_string(f.out_port) + " does not exist");
  }
}

flow_spec dataplane::resolve_flow(const flow_spec &f) const {
  flow_spec r = f;
  if (f.action == FLOW_ACT_DECAP) tunnel_key_outer(snap_->tun[f.tunnel], &r.key);
  if (f.action != FLOW_ACT_ENCAP && !f.has_src_mac) {
    memcpy(r.src_mac, ports_[f.out_port].mac, 6);
    r.has_src_mac = true;
  }
  return r;
}

uint64_t dataplane::add_flow_pair(const flow_spec &orig, const flow_spec *reply) {
  require_init();
  validate_flow(orig);
  if (reply != nullptr) validate_flow(*reply);
  flow_spec o = resolve_flow(orig);
  if (reply == nullptr) return flows_.add_pair(o, nullptr, now_s());
  flow_spec r = resolve_flow(*reply);
  return flows_.add_pair(o, &r, now_s());
}

bool dataplane::remove_flow(uint64_t handle) {
  require_init();
  return flows_.remove(handle);
}

uint32_t dataplane::flush_flows() {
  require_init();
  return flows_.flush();
}

uint32_t dataplane::rewrite_next_hop(uint16_t port, uint8_t family, const uint8_t old_dst[6], const uint8_t new_dst[6]) {
  require_init();
  return flows_.rewrite_next_hop(port, family, old_dst, new_dst);
}

bool dataplane::get_flow(uint64_t handle, flow_info *out) const {
  require_init();
  return flows_.get(handle, now_s(), out);
}

std::vector<flow_info> dataplane::list_flows(uint32_t from, uint32_t max, uint32_t *next) const {
  require_init();
  return flows_.list(from, max, next, now_s());
}

std::vector<reaped_flow> dataplane::reap(uint32_t tcp_timeout_s, uint32_t udp_timeout_s) {
  require_init();
  return flows_.reap(tcp_timeout_s, udp_timeout_s, now_s());
}

// ---- stats -----------------------------------------------------------------------------

dataplane_stats dataplane::stats() const {
  require_init();
  dataplane_stats s{};
  for (const worker *w : workers_) {
    worker_info wi{};
    wi.index = w->index;
    wi.lcore = w->lcore;
    // Field by field with relaxed loads: each counter has one writer, its worker.
    const uint64_t *src = reinterpret_cast<const uint64_t *>(&w->stats);
    uint64_t *dst = reinterpret_cast<uint64_t *>(&wi.stats);
    for (size_t i = 0; i < sizeof(worker_stats) / sizeof(uint64_t); i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    s.rx_packets += wi.stats.rx_packets;
    s.observations_lost += wi.stats.observations_lost;
    s.fast_packets += wi.stats.fast_packets;
    s.fast_bytes += wi.stats.fast_bytes;
    for (unsigned r = 0; r < PUNT_REASON_COUNT; r++) s.punts[r] += wi.stats.punts[r];
    for (unsigned r = 0; r < DROP_REASON_COUNT; r++) s.drops[r] += wi.stats.drops[r];
    s.workers.push_back(wi);
  }
  const flowtable &ft = flows_.table();
  s.flows_active = flows_.active_pairs();
  s.flow_entries = ft.active();
  s.flows_capacity = ft.capacity();
  s.flows_spilled = ft.spilled();
  s.flows_added = flows_.added();
  s.flows_removed = flows_.removed();
  s.flows_insert_failed = flows_.insert_failed();
  s.adjacencies = flows_.adjacency_count();
  s.mbufs_in_use = rte_mempool_in_use_count(pool_);
  s.mbufs_total = pool_->size;
  s.slowpath = slowpath_.stats();
  s.tsc_hz = shared_.tsc_hz;
  s.now_s = now_s();
  return s;
}

// ---- captures --------------------------------------------------------------------------

uint64_t dataplane::start_capture(const capture_options &opts) {
  require_port(opts.port);
  const port_state &ps = ports_[opts.port];
  if (is_vlan(opts.port)) {
    const port_state &parent = ports_[ps.vlan.parent];
    throw dp_error(ERR_INVALID_ARGUMENT, "port " + ps.spec.name + " is a VLAN: capture on its parent with a filter, --port " +
                                             parent.spec.name + (ps.vlan.ad ? "" : " vlan " + std::to_string(ps.vlan.vid)));
  }
  if (!ps.spec.poll || ps.l3)
    throw dp_error(ERR_INVALID_ARGUMENT, "port " + ps.spec.name + " is not an Ethernet port the workers poll: nothing to capture");
  if (shared_.capture[opts.port] != nullptr)
    throw dp_error(ERR_STATE, "port " + ps.spec.name + " has a capture running already (one per port)");
  const uint32_t max_frame = uint32_t{snap_->port[opts.port].mtu} + ETH_HLEN + 2 * VLAN_HLEN;
  const uint64_t id = next_capture_id_++;
  auto session = std::make_unique<capture_session>(id, opts, ps.spec.name, max_frame);
  __atomic_store_n(&shared_.capture[opts.port], session->tap(), __ATOMIC_RELEASE);
  __atomic_fetch_add(&shared_.captures, 1u, __ATOMIC_RELEASE);
  captures_.emplace(id, std::move(session));
  return id;
}

capture_stats dataplane::capture_stats_of(uint64_t id) const {
  require_init();
  auto it = captures_.find(id);
  if (it == captures_.end()) throw dp_error(ERR_NOT_FOUND, "no capture with id " + std::to_string(id));
  return it->second->stats();
}

capture_stats dataplane::stop_capture(uint64_t id) {
  require_init();
  auto it = captures_.find(id);
  if (it == captures_.end()) throw dp_error(ERR_NOT_FOUND, "no capture with id " + std::to_string(id));
  capture_session &c = *it->second;
  __atomic_fetch_sub(&shared_.captures, 1u, __ATOMIC_RELEASE);
  __atomic_store_n(&shared_.capture[c.tap()->port], nullptr, __ATOMIC_RELEASE);
  // No worker is in the middle of a burst that copies for it after this.
  rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
  c.finish();
  capture_stats s = c.stats();
  captures_.erase(it);
  return s;
}

}  // namespace fg
