#include "stress/stress.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>

#include "dp/error.h"
#include "dp/flow_manager.h"
#include "dp/flowtable.h"
#include "dp/memory.h"
#include "dp/packet.h"
#include "dp/pipeline.h"
#include "dp/snapshot.h"

namespace fg::stress {
namespace {

struct heap_deleter {
  void operator()(void *p) const { free(p); }
};

template <typename T>
using heap_ptr = std::unique_ptr<T, heap_deleter>;

template <typename T>
heap_ptr<T> heap_new(size_t n = 1) {
  heap_ptr<T> p(static_cast<T *>(heap_mem.alloc(sizeof(T) * n, CACHE_LINE, 0)));
  if (p == nullptr) throw dp_error(ERR_NO_MEMORY, "stress: out of memory");
  return p;
}

heap_ptr<rte_rcu_qsbr> make_qsbr(unsigned readers) {
  heap_ptr<rte_rcu_qsbr> q(static_cast<rte_rcu_qsbr *>(heap_mem.alloc(rte_rcu_qsbr_get_memsize(readers), CACHE_LINE, 0)));
  if (q == nullptr || rte_rcu_qsbr_init(q.get(), readers) != 0) throw dp_error(ERR_NO_MEMORY, "stress: qsbr");
  return q;
}

}  // namespace

flowtable_result flowtable_concurrency(const flowtable_options &o) {
  heap_ptr<rte_rcu_qsbr> qsbr = make_qsbr(o.readers);
  flowtable ft;
  if (ft.create(o.capacity, o.readers, qsbr.get(), heap_mem, 0, o.buckets) != 0)
    throw dp_error(ERR_INVALID_ARGUMENT, "stress: flowtable");

  std::mt19937 rng(5);
  std::vector<flow_key> keys(o.stable + o.churn);
  for (auto &k : keys) {
    flow_key_zero(&k);
    k.l3proto = FLOW_L3_IPV4;
    k.l4proto = IPPROTO_TCP;
    k.ip4.src = rng();
    k.ip4.dst = rng();
    k.sport = static_cast<uint16_t>(rng());
  }
  auto insert = [&](uint32_t i) {
    uint32_t e = ft.alloc();
    if (e == FLOW_NONE) return FLOW_NONE;
    ft.entry(e).key = keys[i];
    ft.entry(e).last_seen = i;  // the key's number, checked by readers
    if (ft.publish(e) != 0) {
      ft.discard(e);
      return FLOW_NONE;
    }
    return e;
  };
  for (uint32_t i = 0; i < o.stable; i++)
    if (insert(i) == FLOW_NONE) throw dp_error(ERR_FLOWTABLE_FULL, "stable keys do not fit");

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stable_misses{0}, reused{0}, lookups{0}, churn_hits{0};
  std::vector<std::thread> threads;
  for (unsigned r = 0; r < o.readers; r++) {
    threads.emplace_back([&, r] {
      rte_rcu_qsbr_thread_register(qsbr.get(), r);
      rte_rcu_qsbr_thread_online(qsbr.get(), r);
      uint64_t misses = 0, bad = 0, n = 0, hits = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (uint32_t base = 0; base < keys.size(); base += flowtable::MAX_LOOKUP) {
          unsigned cnt = std::min<uint32_t>(flowtable::MAX_LOOKUP, static_cast<uint32_t>(keys.size()) - base);
          uint32_t out[flowtable::MAX_LOOKUP];
          ft.lookup_bulk(&keys[base], cnt, out);
          // Hold the entries a while, as an lcore does while it acts on its burst: until
          // the quiescent state below, none of them may change.
          for (volatile unsigned spin = 0; spin < 200; spin++) {
          }
          for (unsigned j = 0; j < cnt; j++) {
            uint32_t i = base + j;
            if (out[j] == FLOW_NONE) {
              if (i < o.stable) misses++;
              continue;
            }
            if (i >= o.stable) hits++;
            const flow_entry &e = ft.entry(out[j]);
            if (__atomic_load_n(&e.last_seen, __ATOMIC_RELAXED) != i || !flow_key_equal(&e.key, &keys[i])) bad++;
          }
          n += cnt;
          rte_rcu_qsbr_quiescent(qsbr.get(), r);
        }
      }
      rte_rcu_qsbr_thread_offline(qsbr.get(), r);
      stable_misses += misses;
      reused += bad;
      lookups += n;
      churn_hits += hits;
    });
  }
  flowtable_result res{};
  std::vector<uint32_t> live;
  for (uint32_t round = 0; round < o.rounds; round++) {
    for (uint32_t i = o.stable; i < keys.size(); i++) {
      uint32_t e = insert(i);
      if (e == FLOW_NONE)
        res.insert_failures++;
      else
        live.push_back(e);
    }
    res.max_spilled = std::max(res.max_spilled, ft.spilled());
    for (uint32_t e : live) ft.remove(e);
    live.clear();
    ft.reclaim();
  }
  stop = true;
  for (auto &t : threads) t.join();
  res.stable_misses = stable_misses;
  res.reused = reused;
  res.lookups = lookups;
  res.churn_hits = churn_hits;
  return res;
}

namespace {

constexpr uint16_t LAN = 0;
constexpr uint16_t WAN = 1;
constexpr uint16_t FRAME_LEN = ETH_HLEN + IP4_HLEN + sizeof(rte_udp_hdr) + 18;
constexpr uint16_t MBUF_ROOM = 256;

// What a flow direction is: 0 orig (LAN -> WAN), 1 reply, 2 the orig of a clashing pair.
enum direction : uint8_t { ORIG, REPLY, CLASH };

// Next hops of their own per flow and direction: a packet's MACs name its flow.
void flow_macs(uint32_t flow, direction d, uint8_t dst[6], uint8_t src[6]) {
  const uint8_t base[6] = {0x02, static_cast<uint8_t>(d), 0, 0, static_cast<uint8_t>(flow >> 8), static_cast<uint8_t>(flow)};
  memcpy(dst, base, 6);
  memcpy(src, base, 6);
  src[0] = 0x06;
}

struct tuple {
  uint32_t src, dst;  // host order
  uint16_t sport, dport;
};

tuple tuple_of(uint32_t flow, direction d) {
  uint32_t lan = (d == CLASH ? 0x0a010000u : 0x0a000000u) + flow;
  tuple t{lan, 0xc0a80001u, static_cast<uint16_t>(1024 + flow), 53};
  if (d == REPLY) t = {t.dst, t.src, t.dport, t.sport};
  return t;
}

flow_spec spec_of(uint32_t flow, direction d) {
  // A clashing pair's reply is flow's own orig: its key is installed.
  direction key_dir = d == CLASH ? ORIG : d;
  tuple t = tuple_of(flow, key_dir);
  flow_spec f;
  flow_key_zero(&f.key);
  f.key.in_port = key_dir == REPLY ? WAN : LAN;
  f.key.l3proto = FLOW_L3_IPV4;
  f.key.l4proto = IPPROTO_UDP;
  f.key.ip4.src = rte_cpu_to_be_32(t.src);
  f.key.ip4.dst = rte_cpu_to_be_32(t.dst);
  f.key.sport = rte_cpu_to_be_16(t.sport);
  f.key.dport = rte_cpu_to_be_16(t.dport);
  f.action = FLOW_ACT_FWD4;
  f.out_port = key_dir == REPLY ? LAN : WAN;
  flow_macs(flow, d, f.dst_mac, f.src_mac);
  f.has_src_mac = true;
  return f;
}

flow_spec clash_orig(uint32_t flow) {
  tuple t = tuple_of(flow, CLASH);
  flow_spec f = spec_of(flow, ORIG);
  f.key.ip4.src = rte_cpu_to_be_32(t.src);
  flow_macs(flow, CLASH, f.dst_mac, f.src_mac);
  return f;
}

struct frame {
  uint8_t bytes[FRAME_LEN];
  uint16_t port;
  uint8_t dst[6], src[6];  // what the flow's next hop writes
};

// The gateway's own address on a port: the frames' destination.
void gateway_mac(uint16_t port, uint8_t mac[6]) {
  const uint8_t gw[6] = {0x02, 0xfe, 0, 0, 0, static_cast<uint8_t>(port)};
  memcpy(mac, gw, 6);
}

frame make_frame(uint32_t flow, direction d) {
  frame f{};
  tuple t = tuple_of(flow, d);
  f.port = d == REPLY ? WAN : LAN;
  flow_macs(flow, d, f.dst, f.src);
  const uint8_t host[6] = {0x02, 0xfd, 0, 0, 0, 1};
  gateway_mac(f.port, f.bytes);
  memcpy(f.bytes + 6, host, 6);
  const rte_be16_t ipv4 = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  memcpy(f.bytes + 12, &ipv4, 2);
  auto *ip = reinterpret_cast<rte_ipv4_hdr *>(f.bytes + ETH_HLEN);
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(FRAME_LEN - ETH_HLEN);
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_UDP;
  ip->src_addr = rte_cpu_to_be_32(t.src);
  ip->dst_addr = rte_cpu_to_be_32(t.dst);
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  auto *udp = reinterpret_cast<rte_udp_hdr *>(f.bytes + ETH_HLEN + IP4_HLEN);
  udp->src_port = rte_cpu_to_be_16(t.sport);
  udp->dst_port = rte_cpu_to_be_16(t.dport);
  udp->dgram_len = rte_cpu_to_be_16(FRAME_LEN - ETH_HLEN - IP4_HLEN);
  return f;
}

// The calling thread stops at random instructions, as when the scheduler takes its CPU
// away: a timer signal to this thread whose handler spins for a while. The control thread
// (the JavaScript thread, never pinned) and lcores that share CPUs are preempted like that
// in production. A removal's steps are a few dozen nanoseconds apart, and a reader holds a
// lookup's result for a microsecond: only such pauses make a reader run between two steps
// and use what it found after the control thread moved on, often enough for a test to see.
class preemption {
 public:
  preemption(unsigned period_us, unsigned pause_us) {
    static const bool installed = [] {
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      return sigaction(SIGNAL, &sa, nullptr) == 0;
    }();
    if (!installed) throw dp_error(ERR_STATE, "stress: cannot install the preemption signal handler");
    pause_ns_.store(int64_t{pause_us} * 1000, std::memory_order_relaxed);
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGNAL;
    sev._sigev_un._tid = static_cast<pid_t>(gettid());
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer_) != 0) throw dp_error(ERR_STATE, "stress: timer_create failed");
    itimerspec its{};
    its.it_interval.tv_nsec = its.it_value.tv_nsec = static_cast<long>(period_us) * 1000;
    timer_settime(timer_, 0, &its, nullptr);
  }
  ~preemption() {
    timer_delete(timer_);
    // A signal still pending finds the handler in place and pauses no more.
    pause_ns_.store(0, std::memory_order_relaxed);
  }
  preemption(const preemption &) = delete;
  preemption &operator=(const preemption &) = delete;

 private:
  static inline const int SIGNAL = SIGRTMIN + 7;
  static inline std::atomic<int64_t> pause_ns_{0};

  static int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
  }
  static void on_signal(int) {
    int64_t until = now_ns() + pause_ns_.load(std::memory_order_relaxed);
    while (now_ns() < until) {
    }
  }

  timer_t timer_;
};

// How often each thread is paused, and for how long: a pause spans several of the other
// thread's steps.
constexpr unsigned PREEMPT_PERIOD_US = 60;
constexpr unsigned PREEMPT_PAUSE_US = 20;

// The forwarding thread: bursts of every flow's packets, in turn from both ports, through
// the real process_burst; a quiescent state after each round of bursts, as worker_main.
class forwarder {
 public:
  forwarder(flow_manager &fm, const snapshot *snap, rte_rcu_qsbr *qsbr, const std::vector<frame> &frames)
      : frames_(frames), qsbr_(qsbr) {
    pl_ = std::make_unique<pipeline>();
    stats_ = heap_new<worker_stats>();
    bufs_ = heap_new<uint8_t>(size_t{BURST_SIZE} * MBUF_ROOM);
    mbufs_ = heap_new<rte_mbuf>(BURST_SIZE);
    pl_->snap = snap;
    pl_->ft = &fm.table();
    pl_->counters = fm.table().worker_counters(0);
    pl_->adj = fm.adjacencies();
    pl_->stats = stats_.get();
    for (uint16_t p : {LAN, WAN}) {
      std::vector<uint32_t> &ids = by_port_[p];
      for (uint32_t i = 0; i < frames.size(); i++)
        if (frames[i].port == p) ids.push_back(i);
    }
  }

  // clock: the control thread's seconds, for last_seen.
  void run(const std::atomic<bool> &stop, const std::atomic<uint32_t> &clock, std::atomic<bool> &started) {
    rte_rcu_qsbr_thread_register(qsbr_, 0);
    rte_rcu_qsbr_thread_online(qsbr_, 0);
    size_t cursor[2] = {0, 0};
    // Paused at random points too, also between a burst's lookup and its rewrites.
    preemption preempted(PREEMPT_PERIOD_US, PREEMPT_PAUSE_US);
    while (!stop.load(std::memory_order_relaxed)) {
      pl_->now_s = clock.load(std::memory_order_relaxed);
      for (uint16_t p : {LAN, WAN}) burst(p, &cursor[p]);
      rte_rcu_qsbr_quiescent(qsbr_, 0);
      started.store(true, std::memory_order_relaxed);
    }
    rte_rcu_qsbr_thread_offline(qsbr_, 0);
    rte_rcu_qsbr_thread_unregister(qsbr_, 0);
  }

  uint64_t bursts = 0, forwarded = 0, wrong_mac = 0;

 private:
  void burst(uint16_t port, size_t *cursor) {
    const std::vector<uint32_t> &ids = by_port_[port];
    rte_mbuf *pkts[BURST_SIZE];
    uint32_t which[BURST_SIZE];
    for (unsigned i = 0; i < BURST_SIZE; i++) {
      which[i] = ids[*cursor];
      *cursor = (*cursor + 1) % ids.size();
      rte_mbuf *m = &mbufs_.get()[i];
      memset(m, 0, sizeof(*m));
      m->buf_addr = bufs_.get() + size_t{i} * MBUF_ROOM;
      m->buf_len = MBUF_ROOM;
      m->data_off = RTE_PKTMBUF_HEADROOM;
      m->data_len = FRAME_LEN;
      m->pkt_len = FRAME_LEN;
      m->nb_segs = 1;
      rte_mbuf_refcnt_set(m, 1);
      memcpy(rte_pktmbuf_mtod(m, uint8_t *), frames_[which[i]].bytes, FRAME_LEN);
      pkts[i] = m;
    }
    process_burst(*pl_, port, pkts, BURST_SIZE);
    bursts++;
    for (unsigned d = 0; d < pl_->n_dirty; d++) {
      uint16_t out = pl_->dirty[d];
      tx_buffer &b = pl_->tx[out];
      for (unsigned k = 0; k < b.n; k++) {
        const frame &f = frames_[which[b.pkts[k] - mbufs_.get()]];
        const uint8_t *eth = rte_pktmbuf_mtod(b.pkts[k], const uint8_t *);
        forwarded++;
        if (memcmp(eth, f.dst, 6) != 0 || memcmp(eth + 6, f.src, 6) != 0 || out == f.port) wrong_mac++;
      }
      b.n = 0;
    }
    pl_->n_dirty = 0;
    pl_->n_drops = 0;
  }

  const std::vector<frame> &frames_;
  rte_rcu_qsbr *qsbr_;
  std::unique_ptr<pipeline> pl_;
  heap_ptr<worker_stats> stats_;
  heap_ptr<uint8_t> bufs_;
  heap_ptr<rte_mbuf> mbufs_;
  std::vector<uint32_t> by_port_[2];
};

}  // namespace

churn_result flow_churn(const churn_options &o) {
  if (o.flows < 2 || o.flows > 4096) throw dp_error(ERR_INVALID_ARGUMENT, "stress: flows must be 2..4096");
  heap_ptr<rte_rcu_qsbr> qsbr = make_qsbr(1);
  flow_manager fm;
  // Room for the entries still in their grace period, so that adds seldom wait for one.
  fm.create(16 * o.flows + 64, 1, qsbr.get(), heap_mem, 0);
  heap_ptr<snapshot> snap = heap_new<snapshot>();
  for (auto &pc : snap->port) pc.slowpath = PORT_NONE;
  for (auto &t : snap->tun) t.slowpath_port = PORT_NONE;
  for (uint16_t p : {LAN, WAN}) {
    snap->port[p].active = 1;
    snap->port[p].mtu = 1500;
    uint8_t mac[6];
    gateway_mac(p, mac);
    snap->port[p].mac = port_mac_word(mac);
  }
  snap->count_flows = 1;

  std::vector<frame> frames;
  for (uint32_t k = 0; k < o.flows; k++)
    for (direction d : {ORIG, REPLY, CLASH}) frames.push_back(make_frame(k, d));

  churn_result res{};
  std::mt19937 rng(o.seed);
  std::vector<uint64_t> handle(o.flows, 0);
  std::vector<uint32_t> on, off;  // installed flows, the others
  uint32_t now = 0;
  auto add = [&](uint32_t k) {
    flow_spec orig = spec_of(k, ORIG), reply = spec_of(k, REPLY);
    handle[k] = fm.add_pair(orig, &reply, now);
    on.push_back(k);
    res.added++;
  };
  auto take = [&](std::vector<uint32_t> &v) {
    size_t i = rng() % v.size();
    uint32_t k = v[i];
    v[i] = v.back();
    v.pop_back();
    return k;
  };
  for (uint32_t k = 0; k < o.flows; k++) {
    if (k % 2 == 0)
      add(k);
    else
      off.push_back(k);
  }

  forwarder fwd(fm, snap.get(), qsbr.get(), frames);
  std::atomic<bool> stop{false}, started{false};
  std::atomic<uint32_t> clock{0};
  std::thread thread([&] { fwd.run(stop, clock, started); });
  try {
    while (!started.load(std::memory_order_relaxed)) std::this_thread::yield();
    preemption preempted(PREEMPT_PERIOD_US, PREEMPT_PAUSE_US);
    for (uint32_t round = 0; round < o.rounds; round++) {
      now = round / 256;
      clock.store(now, std::memory_order_relaxed);
      uint32_t gone = take(on);
      fm.remove(handle[gone]);
      off.push_back(gone);
      res.removed++;
      add(take(off));
      if (round % 16 == 0) {
        uint32_t k = on[rng() % on.size()];
        flow_spec orig = clash_orig(k), reply = spec_of(k, ORIG);
        try {
          fm.remove(fm.add_pair(orig, &reply, now));  // not reached: the reply key is k's
        } catch (const dp_error &e) {
          if (strcmp(e.code, ERR_FLOW_EXISTS) == 0) res.clashes++;
        }
      }
      if (round % 1024 == 1023) {
        // Everything is idle with a timeout of 0 s; half comes back at once.
        res.reaped += fm.reap(0, 0, now).size();
        on.clear();
        off.clear();
        for (uint32_t k = 0; k < o.flows; k++) {
          if (rng() % 2 == 0 && off.size() < o.flows - 1)
            off.push_back(k);
          else
            add(k);
        }
        if (on.empty()) add(take(off));
      }
    }
  } catch (...) {
    stop = true;
    thread.join();
    throw;
  }
  stop = true;
  thread.join();
  res.bursts = fwd.bursts;
  res.forwarded = fwd.forwarded;
  res.wrong_mac = fwd.wrong_mac;
  return res;
}

}  // namespace fg::stress
