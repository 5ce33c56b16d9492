#include "trace.h"

#include <algorithm>

namespace fg {

#define FG_X(name, text) #name,
const char *const kernel_drop_reason_names[KERNEL_DROP_REASON_COUNT] = {FG_KERNEL_DROP_REASONS(FG_X)};
#undef FG_X

bool trace_selects(const trace_session &ts, uint16_t port, const rte_mbuf *m, bool l3) {
  if (ts.port != PORT_NONE && ts.port != port) return false;
  const pcap_filter &f = l3 ? ts.ip_filter : ts.frame_filter;
  if (f.matches_all()) return true;
  if (l3 && !ts.ip_filter_valid) return false;
  if (m->nb_segs == 1) return f.matches(rte_pktmbuf_mtod(m, const uint8_t *), m->pkt_len, m->data_len);
  // A chain: the filter runs on its first bytes, gathered (libpcap's interpreter reads one
  // contiguous buffer).
  uint8_t buf[TRACE_FILTER_BYTES];
  const uint32_t caplen = std::min<uint32_t>(m->pkt_len, TRACE_FILTER_BYTES);
  const auto *p = static_cast<const uint8_t *>(rte_pktmbuf_read(m, 0, caplen, buf));
  return p != nullptr && f.matches(p, m->pkt_len, caplen);
}

bool trace_take(trace_session &ts, uint64_t *seq) {
  // A plain load first: once the budget is spent, packets still in flight on other lcores
  // do not keep writing its cache line.
  if (__atomic_load_n(&ts.budget, __ATOMIC_RELAXED) <= 0) return false;
  const int64_t left = __atomic_fetch_sub(&ts.budget, 1, __ATOMIC_RELAXED);
  if (left <= 0) return false;
  *seq = ts.count - static_cast<uint64_t>(left);
  // The last one: tracing turns itself off. The control thread frees the session later,
  // after a grace period, so lcores that loaded it just before still may use it.
  if (left == 1) __atomic_store_n(ts.slot, static_cast<trace_session *>(nullptr), __ATOMIC_RELEASE);
  return true;
}

uint8_t trace_copy(const rte_mbuf *m, uint8_t *out) {
  const uint32_t n = std::min<uint32_t>(m->pkt_len, TRACE_BYTES);
  const void *p = rte_pktmbuf_read(m, 0, n, out);
  if (p == nullptr) return 0;
  if (p != out) memcpy(out, p, n);
  return static_cast<uint8_t>(n);
}

void trace_set_tx(trace_record &r, const rte_mbuf *m, bool l3) {
  r.flags |= TRACE_F_TX;
  if (l3) r.flags |= TRACE_F_TX_L3;
  r.tx_len = m->pkt_len;
  r.tx_caplen = trace_copy(m, r.tx);
}

void trace_submit(trace_session &ts, const trace_record &r) {
  if (rte_ring_mp_enqueue_elem(ts.ring, const_cast<trace_record *>(&r), sizeof(r)) != 0)
    __atomic_fetch_add(&ts.lost, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&ts.written, 1, __ATOMIC_RELEASE);
}

}  // namespace fg
