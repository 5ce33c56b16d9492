#include "slowpath.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "tunnel.h"
#include "vlan.h"

namespace fg {
namespace {

// How long the thread sleeps when idle: it bounds how late the workers' punt records reach
// the learner (the workers do not wake it) and, without rx interrupts, how late a packet
// from the kernel leaves.
constexpr int IDLE_WAIT_MS = 1;
constexpr unsigned IDLE_SLEEP_US_WITHOUT_INTERRUPTS = 100;
constexpr unsigned RECORDS_PER_DRAIN = 64;

bool kernel_facing(const port_conf &pc) {
  return pc.active && (pc.kernel_egress_port != PORT_NONE || pc.kernel_egress_tunnel != TUNNEL_NONE);
}

}  // namespace

void slowpath_thread::start(worker_shared *shared, unsigned qsbr_id, std::vector<rte_ring *> rings,
                            observation_sink sink) {
  if (running_) return;
  shared_ = shared;
  qsbr_id_ = qsbr_id;
  rings_ = std::move(rings);
  sink_ = std::move(sink);
  stats_ = slowpath_stats{};
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  armed_generation_ = UINT64_MAX;
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

void slowpath_thread::stop() {
  if (!running_) return;
  running_ = false;
  wake();
  thread_.join();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  epoll_fd_ = wake_fd_ = -1;
}

void slowpath_thread::wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

slowpath_stats slowpath_thread::stats() const {
  slowpath_stats s;
  const uint64_t *src = reinterpret_cast<const uint64_t *>(&stats_);
  uint64_t *dst = reinterpret_cast<uint64_t *>(&s);
  for (size_t i = 0; i < sizeof(s) / sizeof(uint64_t); i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
  return s;
}

// Sleep on the kernel-facing queues' interrupt descriptors (the TAP/TUN file descriptors
// for net_tap) when every such queue has one; otherwise fall back to short sleeps.
void slowpath_thread::rearm_epoll(const snapshot *s) {
  if (epoll_fd_ >= 0) close(epoll_fd_);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  all_ports_have_interrupts_ = true;
  for (uint16_t p = 0; p < MAX_ETHPORTS; p++) {
    if (!kernel_facing(s->port[p])) continue;
    int fd = rte_eth_dev_rx_intr_ctl_q_get_fd(p, 0);
    if (fd < 0) {
      all_ports_have_interrupts_ = false;
      continue;
    }
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  armed_generation_ = s->generation;
}

void slowpath_thread::to_kernel_tx(const snapshot *s, uint16_t port, rte_mbuf *m) {
  const port_conf &pc = s->port[port];
  if (pc.n_tags != 0) {
    // A VLAN sub-interface's TAP (or a tunnel over it) takes and gives untagged frames: the
    // tags go on here, and the frame leaves by the parent.
    if (!vlan_push_fits(m, pc)) {
      trace_drop(kernel_drop_reason::no_headroom);
      stats_.no_headroom++;
      rte_pktmbuf_free(m);
      return;
    }
    vlan_push(m, pc, pc.pcp);
    port = pc.tx_port;
  }
  rte_ring *r = s->port[port].kernel_tx;
  // Read before it is queued: worker 0 may send and free it at once.
  if (unlikely(tracing_ != nullptr) && r != nullptr) trace_set_tx(*tracing_, m, false);
  if (r == nullptr || rte_ring_sp_enqueue(r, m) != 0) {
    trace_drop(kernel_drop_reason::kernel_tx_full);
    stats_.kernel_tx_dropped++;
    rte_pktmbuf_free(m);
  }
}

// The kernel sent a frame out of a port's TAP: note it for the learner, send it on the port.
void slowpath_thread::from_tap(const snapshot *s, uint16_t port, rte_mbuf *m, std::vector<observation> &batch) {
  flow_key key;
  pkt_meta meta;
  // Frames from the kernel are addressed to the next hop, not to the port: no MAC check.
  if (parse_packet(m, port, nullptr, &key, &meta).is_ok()) {
    const uint8_t *frame = rte_pktmbuf_mtod(m, const uint8_t *);
    observation &o = batch.emplace_back();
    observation_init(&o, OBS_EGRESS_PORT, rte_rdtsc(), m, meta.l3_off, meta.l3_len, key, port, TUNNEL_NONE);
    memcpy(o.dst_mac, frame, 6);
    memcpy(o.src_mac, frame + 6, 6);
  }
  to_kernel_tx(s, port, m);
}

// The kernel routed a packet into a tunnel's TUN: note it, encapsulate it exactly as the
// fast path would, send it on the underlay port.
void slowpath_thread::from_tun(const snapshot *s, uint16_t tunnel_id, rte_mbuf *m, std::vector<observation> &batch) {
  const tunnel &t = s->tun[tunnel_id];
  const uint8_t *l3 = rte_pktmbuf_mtod(m, const uint8_t *);
  const bool inner_ipv4 = t.inner_ipv4();
  const uint32_t min_len = inner_ipv4 ? IP4_HLEN : IP6_HLEN;
  // A TUN of the other family's packets (an IPv6 neighbour solicitation into an ip4ip6
  // TUN, say) has nowhere to go: the tunnel carries one family, as Linux's tunnel device
  // drops the other (ip6ip6_tnl_xmit()/ipip_tunnel_xmit() take their own protocol only).
  if (m->data_len < min_len || (l3[0] >> 4) != (inner_ipv4 ? 4 : 6) || !t.active) {
    trace_drop(kernel_drop_reason::tun_wrong_family);
    stats_.tun_wrong_family++;
    rte_pktmbuf_free(m);
    return;
  }
  flow_key key;
  flow_key_zero(&key);
  pkt_meta meta{};
  detail::bounds b{m->data_len, m->pkt_len};
  bool parsed = (inner_ipv4 ? detail::parse_ip4(l3, 0, b, &key, &meta, FLOW_L3_IPV4)
                            : detail::parse_ip6(l3, 0, b, &key, &meta, FLOW_L3_IPV6))
                    .is_ok();
  const uint32_t inner_len = inner_ipv4 ? rte_be_to_cpu_16(reinterpret_cast<const rte_ipv4_hdr *>(l3)->total_length)
                                        : IP6_HLEN + rte_be_to_cpu_16(reinterpret_cast<const rte_ipv6_hdr *>(l3)->payload_len);
  if (parsed) observation_init(&batch.emplace_back(), OBS_EGRESS_TUNNEL, rte_rdtsc(), m, 0, meta.l3_len, key, PORT_NONE, tunnel_id);
  if (inner_len > m->pkt_len || inner_len > UINT16_MAX || rte_pktmbuf_headroom(m) < ETH_HLEN + tunnel_overhead(t)) {
    trace_drop(kernel_drop_reason::no_headroom);
    stats_.no_headroom++;
    rte_pktmbuf_free(m);
    return;
  }
  rte_pktmbuf_free(trim_to(m, inner_len));
  // tunnel_encap expects the packet behind an Ethernet header; the template's replaces it.
  rte_pktmbuf_prepend(m, ETH_HLEN);
  tunnel_encap(m, t, static_cast<uint16_t>(inner_len), (parsed && (t.flags & TUNNEL_F_FLOWLABEL_HASH)) ? flowlabel_of(key) : 0,
               ip_id_++);
  to_kernel_tx(s, t.port, m);
}

void slowpath_thread::trace_drop(kernel_drop_reason why) {
  if (tracing_ == nullptr) return;
  tracing_->decision = static_cast<uint8_t>(trace_decision::kernel_drop);
  tracing_->reason = static_cast<uint8_t>(why);
  tracing_->out_port = PORT_NONE;
  tracing_->flags &= static_cast<uint8_t>(~TRACE_F_TX);
}

void slowpath_thread::traced(const snapshot *s, trace_session &ts, uint16_t port, rte_mbuf *m,
                             std::vector<observation> &batch) {
  const port_conf &pc = s->port[port];
  const bool l3 = pc.l3 != 0;
  trace_record r;
  if (!trace_selects(ts, port, m, l3) || !trace_take(ts, &r.seq)) {
    if (pc.kernel_egress_port != PORT_NONE)
      from_tap(s, pc.kernel_egress_port, m, batch);
    else
      from_tun(s, pc.kernel_egress_tunnel, m, batch);
    return;
  }
  memset(&r.tsc, 0, offsetof(trace_record, rx) - offsetof(trace_record, tsc));
  r.tsc = rte_rdtsc();
  r.flow = FLOW_NONE;
  r.wire_len = m->pkt_len;
  r.worker = TRACE_SLOWPATH;
  r.in_port = port;
  r.reason = r.punt_reason = TRACE_NO_REASON;
  r.flags = l3 ? TRACE_F_RX_L3 : 0;
  r.rx_len = trace_copy(m, r.rx);
  tracing_ = &r;
  if (pc.kernel_egress_port != PORT_NONE) {
    r.decision = static_cast<uint8_t>(trace_decision::forward);
    r.out_port = pc.kernel_egress_port;
    from_tap(s, pc.kernel_egress_port, m, batch);
  } else {
    r.decision = static_cast<uint8_t>(trace_decision::encap);
    r.out_port = s->tun[pc.kernel_egress_tunnel].port;
    from_tun(s, pc.kernel_egress_tunnel, m, batch);
  }
  tracing_ = nullptr;
  trace_submit(ts, r);
}

void slowpath_thread::run() {
  rte_rcu_qsbr *qsbr = shared_->qsbr;
  rte_rcu_qsbr_thread_register(qsbr, qsbr_id_);
  rte_rcu_qsbr_thread_online(qsbr, qsbr_id_);
  std::vector<observation> batch;
  observation drained[RECORDS_PER_DRAIN];
  while (running_.load(std::memory_order_relaxed)) {
    // The workers' punt records first, all of them: a packet's punt record then reaches
    // the learner before the record of its egress from the kernel, read below.
    unsigned work = 0;
    for (rte_ring *r : rings_) {
      unsigned n;
      do {
        n = rte_ring_sc_dequeue_burst_elem(r, drained, sizeof(observation), RECORDS_PER_DRAIN, nullptr);
        batch.insert(batch.end(), drained, drained + n);
        work += n;
      } while (n == RECORDS_PER_DRAIN);
    }
    const snapshot *s = __atomic_load_n(&shared_->snap, __ATOMIC_ACQUIRE);
    if (s->generation != armed_generation_) rearm_epoll(s);
    trace_session *ts = __atomic_load_n(&shared_->trace, __ATOMIC_ACQUIRE);
    uint16_t facing[MAX_ETHPORTS];
    unsigned n_facing = 0;
    for (uint16_t p = 0; p < MAX_ETHPORTS; p++) {
      const port_conf &pc = s->port[p];
      if (!kernel_facing(pc)) continue;
      facing[n_facing++] = p;
      rte_mbuf *pkts[BURST_SIZE];
      uint16_t n = rte_eth_rx_burst(p, 0, pkts, BURST_SIZE);
      work += n;
      stats_.kernel_rx_packets += n;
      for (uint16_t i = 0; i < n; i++) {
        if (unlikely(ts != nullptr))
          traced(s, *ts, p, pkts[i], batch);
        else if (pc.kernel_egress_port != PORT_NONE)
          from_tap(s, pc.kernel_egress_port, pkts[i], batch);
        else
          from_tun(s, pc.kernel_egress_tunnel, pkts[i], batch);
      }
    }
    if (batch.size() > OBSERVATIONS_MAX_WAITING) {
      stats_.observations_lost += batch.size() - OBSERVATIONS_MAX_WAITING;
      batch.resize(OBSERVATIONS_MAX_WAITING);
    }
    if (!batch.empty() && sink_ && sink_.ready()) {
      size_t n = batch.size();
      auto out = std::make_unique<std::vector<observation>>(std::move(batch));
      batch = std::vector<observation>();
      if (sink_.deliver(std::move(out)))
        stats_.observations += n;
      else
        stats_.observations_lost += n;
    } else if (!batch.empty() && !sink_) {
      stats_.observations_lost += batch.size();
      batch.clear();
    }
    // Done with the snapshot for this round: s must not be read below.
    rte_rcu_qsbr_quiescent(qsbr, qsbr_id_);
    // Waiting records wake us again soon enough through the idle wait below.
    if (work != 0) continue;

    // Rx interrupts back on while still online: facing[] comes from the snapshot read
    // above, and once we are offline the control thread's publish() no longer waits for
    // us, so remove_port() may go on to stop and release one of these ports (port_release
    // after publish) while we touch its interrupt; online, it cannot pass its grace period
    // until we are done. A packet that arrives after this wakes the epoll_wait below.
    if (all_ports_have_interrupts_)
      for (unsigned i = 0; i < n_facing; i++) rte_eth_dev_rx_intr_enable(facing[i], 0);
    rte_rcu_qsbr_thread_offline(qsbr, qsbr_id_);
    if (all_ports_have_interrupts_) {
      epoll_event events[8];
      int n = epoll_wait(epoll_fd_, events, 8, IDLE_WAIT_MS);
      for (int i = 0; i < n; i++) {
        if (events[i].data.fd == wake_fd_) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = read(wake_fd_, &v, sizeof(v));
        }
      }
    } else {
      rte_delay_us_sleep(IDLE_SLEEP_US_WITHOUT_INTERRUPTS);
    }
    rte_rcu_qsbr_thread_online(qsbr, qsbr_id_);
  }
  rte_rcu_qsbr_thread_offline(qsbr, qsbr_id_);
  rte_rcu_qsbr_thread_unregister(qsbr, qsbr_id_);
}

}  // namespace fg
