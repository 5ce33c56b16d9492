#include "ct/conntrack.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>

#include <cerrno>
#include <cstring>

#include "nl/netlink.h"

namespace fg::ct {

namespace {

// Requests go out in chunks of at most this many messages, one sendmsg each (the kernel
// handles a sendmsg synchronously, so a chunk's replies are queued when it returns), and
// the next chunk is only sent once every reply of this one is read: the replies of a
// chunk must fit in the request socket's receive buffer, or the kernel drops them.
constexpr size_t CHUNK_MESSAGES = 512;
constexpr size_t CHUNK_BYTES = 64 * 1024;  // below the default SO_SNDBUF (212992)
constexpr int REQUEST_RCVBUF = 8 << 20;
constexpr int EVENT_RCVBUF_DEFAULT = 8 << 20;
// Replies and events are one netlink message per datagram; read many per syscall.
constexpr unsigned RECV_DATAGRAMS = 64;
constexpr size_t RECV_DATAGRAM_BYTES = 8192;
constexpr size_t DUMP_BUFFER_BYTES = 128 * 1024;
// Event records handed over at most in one batch.
constexpr size_t EVENT_BATCH_MAX = 4096;
// A request whose replies stop coming (which the kernel should never do) fails after this.
constexpr int REPLY_TIMEOUT_MS = 10000;
// A resync whose batch could not be queued is retried after this.
constexpr int RESYNC_RETRY_MS = 50;

struct nfct_deleter {
  void operator()(nf_conntrack *ct) const { nfct_destroy(ct); }
};
using nfct_ptr = std::unique_ptr<nf_conntrack, nfct_deleter>;

nfct_ptr new_ct() {
  nf_conntrack *ct = nfct_new();
  if (ct == nullptr) throw std::bad_alloc();
  return nfct_ptr(ct);
}

void set_tuple(nf_conntrack *ct, const ct_tuple &t) {
  nfct_set_attr_u8(ct, ATTR_L3PROTO, t.family == 6 ? AF_INET6 : AF_INET);
  if (t.family == 6) {
    nfct_set_attr(ct, ATTR_IPV6_SRC, t.src);
    nfct_set_attr(ct, ATTR_IPV6_DST, t.dst);
  } else {
    uint32_t s, d;
    memcpy(&s, t.src, 4);
    memcpy(&d, t.dst, 4);
    nfct_set_attr_u32(ct, ATTR_IPV4_SRC, s);
    nfct_set_attr_u32(ct, ATTR_IPV4_DST, d);
  }
  nfct_set_attr_u8(ct, ATTR_L4PROTO, t.l4proto);
  nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(t.sport));
  nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(t.dport));
  if (t.zone != 0) nfct_set_attr_u16(ct, ATTR_ZONE, t.zone);
}

nlmsghdr *put_header(void *buf, uint8_t type, uint16_t flags, uint32_t seq, uint8_t family) {
  nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | type;
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  nlh->nlmsg_seq = seq;
  auto *nfh = static_cast<nfgenmsg *>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfh->nfgen_family = family;
  nfh->version = NFNETLINK_V0;
  nfh->res_id = 0;
  return nlh;
}

void copy_addr(uint8_t *out, const nf_conntrack *ct, bool v6, int attr4, int attr6) {
  if (v6) {
    const void *p = nfct_get_attr(ct, static_cast<nf_conntrack_attr>(attr6));
    if (p != nullptr) memcpy(out, p, 16);
  } else {
    uint32_t a = nfct_get_attr_u32(ct, static_cast<nf_conntrack_attr>(attr4));
    memcpy(out, &a, 4);
  }
}

void fill_record(ct_record *r, const nf_conntrack *ct) {
  bool v6 = nfct_get_attr_u8(ct, ATTR_L3PROTO) == AF_INET6;
  r->id = nfct_get_attr_u32(ct, ATTR_ID);
  r->status = nfct_get_attr_u32(ct, ATTR_STATUS);
  r->timeout = nfct_get_attr_u32(ct, ATTR_TIMEOUT);
  r->mark = nfct_get_attr_u32(ct, ATTR_MARK);
  r->zone = nfct_get_attr_u16(ct, ATTR_ZONE);
  r->family = v6 ? 6 : 4;
  r->l4proto = nfct_get_attr_u8(ct, ATTR_L4PROTO);
  r->tcp_state = r->l4proto == IPPROTO_TCP && nfct_attr_is_set(ct, ATTR_TCP_STATE) > 0
                     ? nfct_get_attr_u8(ct, ATTR_TCP_STATE)
                     : CT_TCP_STATE_NONE;
  r->tcp_flags_orig = nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_ORIG);
  r->tcp_flags_reply = nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_REPL);
  copy_addr(r->orig.src, ct, v6, ATTR_IPV4_SRC, ATTR_IPV6_SRC);
  copy_addr(r->orig.dst, ct, v6, ATTR_IPV4_DST, ATTR_IPV6_DST);
  r->orig.sport = ntohs(nfct_get_attr_u16(ct, ATTR_PORT_SRC));
  r->orig.dport = ntohs(nfct_get_attr_u16(ct, ATTR_PORT_DST));
  copy_addr(r->reply.src, ct, v6, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC);
  copy_addr(r->reply.dst, ct, v6, ATTR_REPL_IPV4_DST, ATTR_REPL_IPV6_DST);
  r->reply.sport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC));
  r->reply.dport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST));
  if (nfct_attr_is_set(ct, ATTR_HELPER_NAME) > 0) {
    const char *name = nfct_get_attr(ct, ATTR_HELPER_NAME) ? static_cast<const char *>(nfct_get_attr(ct, ATTR_HELPER_NAME)) : "";
    r->has_helper = 1;
    strncpy(r->helper, name, sizeof(r->helper) - 1);
  }
}

// Decodes a ctnetlink conntrack message into r (zeroed); false when it is not one.
bool decode(const nlmsghdr *nlh, ct_record *r) {
  if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return false;
  uint8_t type = NFNL_MSG_TYPE(nlh->nlmsg_type);
  if (type != IPCTNL_MSG_CT_NEW && type != IPCTNL_MSG_CT_DELETE) return false;
  nfct_ptr ct = new_ct();
  if (nfct_nlmsg_parse(nlh, ct.get()) < 0) return false;
  fill_record(r, ct.get());
  if (type == IPCTNL_MSG_CT_DELETE)
    r->event = CT_EVENT_DESTROY;
  else
    r->event = (nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) ? CT_EVENT_NEW : CT_EVENT_UPDATE;
  return true;
}

failure fail(const char *code, const std::string &what, int err) {
  return failure{code, what + (err ? std::string(": ") + strerror(err) : std::string()), err};
}

}  // namespace

struct conntrack::request {
  enum kind_t { GET, UPDATE, DUMP } kind;
  std::vector<ct_tuple> tuples;
  std::vector<ct_update> updates;
  records_done records_cb;
  update_done update_cb;

  void fail_with(failure f) {
    if (records_cb) records_cb({}, std::move(f));
    if (update_cb) update_cb({}, std::move(f));
  }
};

struct conntrack::sockets {
  mnl_socket *req = nullptr;
  mnl_socket *ev = nullptr;
  uint32_t req_portid = 0;
  uint32_t seq = 1;
  bool resync_pending = false;
  nl::datagrams<RECV_DATAGRAMS, RECV_DATAGRAM_BYTES> req_dgrams, ev_dgrams;
  std::vector<uint8_t> batch_buf = std::vector<uint8_t>(CHUNK_BYTES + MNL_SOCKET_BUFFER_SIZE);
  std::vector<uint8_t> dump_buf = std::vector<uint8_t>(DUMP_BUFFER_BYTES);

  ~sockets() {
    if (req) mnl_socket_close(req);
    if (ev) mnl_socket_close(ev);
  }
};

namespace {

// Sends n messages built by build(i, buf, seq) in chunks and hands every reply to
// on_reply(i, nlh) (a NLMSG_ERROR for errors and acks, else the data). A message that
// got no reply (lost to an overrun or a timeout) gets on_lost(i, errno).
template <typename Sockets, typename Build, typename OnReply, typename OnLost, typename Between>
void transact(Sockets &s, size_t n, Build &&build, OnReply &&on_reply, OnLost &&on_lost, Between &&between) {
  int fd = mnl_socket_get_fd(s.req);
  std::vector<uint8_t> answered;
  for (size_t first = 0; first < n;) {
    uint32_t base = s.seq;
    mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(s.batch_buf.data(), CHUNK_BYTES);
    size_t count = 0;
    while (first + count < n && count < CHUNK_MESSAGES) {
      build(first + count, mnl_nlmsg_batch_current(b), base + static_cast<uint32_t>(count));
      count++;
      if (!mnl_nlmsg_batch_next(b)) {
        count--;  // the last message did not fit: it goes in the next chunk
        break;
      }
    }
    s.seq = base + static_cast<uint32_t>(count);
    ssize_t sent = mnl_socket_sendto(s.req, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b));
    mnl_nlmsg_batch_stop(b);
    if (sent < 0) {
      int e = errno;
      for (size_t i = 0; i < count; i++) on_lost(first + i, e);
      first += count;
      continue;
    }
    answered.assign(count, 0);
    size_t pending = count;
    while (pending > 0) {
      pollfd p{fd, POLLIN, 0};
      int pr = poll(&p, 1, REPLY_TIMEOUT_MS);
      int got = pr > 0 ? s.req_dgrams.recv(fd, true) : (pr == 0 ? -ETIMEDOUT : -errno);
      if (got == -EINTR || got == 0) continue;
      if (got < 0) {
        // Replies lost (ENOBUFS) or none coming: the rest of this chunk failed.
        for (size_t i = 0; i < count; i++)
          if (!answered[i]) on_lost(first + i, -got);
        pending = 0;
        break;
      }
      for (int d = 0; d < got; d++) {
        s.req_dgrams.each(d, [&](const nlmsghdr *nlh) {
          uint32_t i = nlh->nlmsg_seq - base;
          if (i >= count || answered[i]) return;  // a late reply to an earlier chunk
          if (nlh->nlmsg_type == NLMSG_DONE || nlh->nlmsg_type == NLMSG_NOOP) return;
          answered[i] = 1;
          pending--;
          on_reply(first + i, nlh);
        });
      }
    }
    first += count;
    between();
  }
}

}  // namespace

conntrack::conntrack(options o)
    : opts_(std::move(o)), socks_(std::make_unique<sockets>()), thread_("conntrack", ERR_CONNTRACK) {
  thread_.start([this](std::shared_ptr<std::promise<void>> started) { run(std::move(started)); });
}

conntrack::~conntrack() { close(); }

void conntrack::submit(std::unique_ptr<request> r) {
  if (auto refused = thread_.submit(std::move(r))) refused->fail_with(failure{ERR_CONNTRACK_CLOSED, "conntrack: closed", 0});
}

void conntrack::get(std::vector<ct_tuple> tuples, records_done done) {
  auto r = std::make_unique<request>();
  r->kind = request::GET;
  r->tuples = std::move(tuples);
  r->records_cb = std::move(done);
  submit(std::move(r));
}

void conntrack::update(std::vector<ct_update> updates, update_done done) {
  auto r = std::make_unique<request>();
  r->kind = request::UPDATE;
  r->updates = std::move(updates);
  r->update_cb = std::move(done);
  submit(std::move(r));
}

void conntrack::dump(records_done done) {
  auto r = std::make_unique<request>();
  r->kind = request::DUMP;
  r->records_cb = std::move(done);
  submit(std::move(r));
}

ct_stats conntrack::stats() const {
  ct_stats s;
  s.events = counters_.events.load(std::memory_order_relaxed);
  s.enobufs = counters_.enobufs.load(std::memory_order_relaxed);
  s.resyncs = counters_.resyncs.load(std::memory_order_relaxed);
  s.gets = counters_.gets.load(std::memory_order_relaxed);
  s.updates = counters_.updates.load(std::memory_order_relaxed);
  s.errors = counters_.errors.load(std::memory_order_relaxed);
  return s;
}

void conntrack::close() {
  for (auto &r : thread_.stop()) r->fail_with(failure{ERR_CONNTRACK_CLOSED, "conntrack: closed", 0});
  socks_.reset();
}

void conntrack::run(std::shared_ptr<std::promise<void>> started) {
  sockets &s = *socks_;
  const bool want_events = opts_.ev_new || opts_.ev_update || opts_.ev_destroy;

  // Opening: in the requested namespace (sockets belong to the namespace they are created
  // in, and setns() moves only this thread), then a probe that ctnetlink answers.
  try {
    if (!opts_.netns.empty()) {
      nl::enter_netns(opts_.netns, "conntrack", ERR_CONNTRACK);
    }
    if (want_events && access("/proc/sys/net/netfilter/nf_conntrack_events", F_OK) != 0)
      throw dp_error(ERR_CONNTRACK_EVENTS,
                     "conntrack events: /proc/sys/net/netfilter/nf_conntrack_events is missing: this kernel was built "
                     "without CONFIG_NF_CONNTRACK_EVENTS (or nf_conntrack is not loaded)",
                     ENOENT);
    auto open_socket = [](uint32_t asked, int fallback) {
      return nl::open_socket(NETLINK_NETFILTER, "NETLINK_NETFILTER (nfnetlink)", asked, fallback, "conntrack", ERR_CONNTRACK_UNAVAILABLE);
    };
    s.req = open_socket(0, REQUEST_RCVBUF);
    s.req_portid = mnl_socket_get_portid(s.req);
    int one = 1;
    // Error replies without a copy of the request: smaller replies, more per buffer.
    setsockopt(mnl_socket_get_fd(s.req), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
    int sndbuf = 1 << 20;
    setsockopt(mnl_socket_get_fd(s.req), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

    // Probe: a lookup of a connection that cannot exist must say ENOENT.
    ct_tuple probe{};
    probe.family = 4;
    probe.l4proto = IPPROTO_UDP;
    int probe_err = -1;
    transact(
        s, 1,
        [&](size_t, void *buf, uint32_t seq) {
          nlmsghdr *nlh = put_header(buf, IPCTNL_MSG_CT_GET, 0, seq, AF_INET);
          nfct_ptr ct = new_ct();
          set_tuple(ct.get(), probe);
          nfct_nlmsg_build(nlh, ct.get());
        },
        [&](size_t, const nlmsghdr *nlh) { probe_err = nl::nlmsg_error(nlh); }, [&](size_t, int e) { probe_err = e; }, [] {});
    if (probe_err != ENOENT && probe_err != 0)
      throw dp_error(ERR_CONNTRACK_UNAVAILABLE,
                     std::string("conntrack: ctnetlink does not answer (is nf_conntrack_netlink loaded?): ") +
                         strerror(probe_err),
                     probe_err);

    if (want_events) {
      s.ev = open_socket(opts_.rcvbuf, EVENT_RCVBUF_DEFAULT);
      auto join = [&](unsigned group) {
        if (setsockopt(mnl_socket_get_fd(s.ev), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0)
          throw dp_error(ERR_CONNTRACK_UNAVAILABLE, std::string("conntrack: cannot join event group: ") + strerror(errno), errno);
      };
      if (opts_.ev_new) join(NFNLGRP_CONNTRACK_NEW);
      if (opts_.ev_update) join(NFNLGRP_CONNTRACK_UPDATE);
      if (opts_.ev_destroy) join(NFNLGRP_CONNTRACK_DESTROY);
    }
  } catch (...) {
    started->set_exception(std::current_exception());
    return;
  }
  started->set_value();

  // Events: read what is there, decode, hand over in batches. An overrun (ENOBUFS) means
  // events were lost: the consumer gets the whole table instead, to reconcile.
  std::vector<ct_record> batch;
  auto flush_events = [&] {
    if (batch.empty()) return;
    counters_.events.fetch_add(batch.size(), std::memory_order_relaxed);
    if (!opts_.deliver(std::move(batch), batch_kind::events)) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      s.resync_pending = true;
    }
    batch = {};
  };
  auto read_events = [&] {
    if (s.ev == nullptr) return;
    s.ev_dgrams.drain(
        mnl_socket_get_fd(s.ev),
        [&](const nlmsghdr *nlh) {
          ct_record r{};
          if (decode(nlh, &r)) batch.push_back(r);
        },
        [&] {
          counters_.enobufs.fetch_add(1, std::memory_order_relaxed);
          s.resync_pending = true;
        },
        [&] {
          if (batch.size() >= EVENT_BATCH_MAX) flush_events();
        });
    flush_events();
  };

  auto do_dump = [&](std::vector<ct_record> *out) -> failure {
    uint32_t seq = s.seq++;
    nlmsghdr *nlh = put_header(s.dump_buf.data(), IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, AF_UNSPEC);
    if (mnl_socket_sendto(s.req, nlh, nlh->nlmsg_len) < 0) return fail(ERR_CONNTRACK, "conntrack dump: send", errno);
    for (;;) {
      ssize_t len = mnl_socket_recvfrom(s.req, s.dump_buf.data(), s.dump_buf.size());
      if (len < 0) {
        if (errno == EINTR) continue;
        return fail(ERR_CONNTRACK, "conntrack dump: receive", errno);
      }
      int left = static_cast<int>(len);
      for (const auto *m = reinterpret_cast<const nlmsghdr *>(s.dump_buf.data()); mnl_nlmsg_ok(m, left);
           m = mnl_nlmsg_next(m, &left)) {
        if (m->nlmsg_seq != seq) continue;  // a late reply to an earlier request
        if (m->nlmsg_type == NLMSG_DONE) return {};
        if (m->nlmsg_type == NLMSG_ERROR) {
          int e = nl::nlmsg_error(m);
          if (e != 0) return fail(ERR_CONNTRACK, "conntrack dump", e);
          continue;
        }
        ct_record r{};
        if (decode(m, &r)) {
          r.event = CT_EVENT_NONE;
          out->push_back(r);
        }
      }
    }
  };

  auto resync = [&] {
    s.resync_pending = false;
    std::vector<ct_record> all;
    failure f = do_dump(&all);
    if (f) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      s.resync_pending = true;
      return;
    }
    if (opts_.deliver(std::move(all), batch_kind::resync))
      counters_.resyncs.fetch_add(1, std::memory_order_relaxed);
    else
      s.resync_pending = true;
  };

  auto serve = [&](request &r) {
    if (r.kind == request::DUMP) {
      std::vector<ct_record> all;
      failure f = do_dump(&all);
      if (f) counters_.errors.fetch_add(1, std::memory_order_relaxed);
      r.records_cb(std::move(all), std::move(f));
    } else if (r.kind == request::GET) {
      std::vector<ct_record> out(r.tuples.size());
      transact(
          s, r.tuples.size(),
          [&](size_t i, void *buf, uint32_t seq) {
            const ct_tuple &t = r.tuples[i];
            nlmsghdr *nlh = put_header(buf, IPCTNL_MSG_CT_GET, 0, seq, t.family == 6 ? AF_INET6 : AF_INET);
            nfct_ptr ct = new_ct();
            set_tuple(ct.get(), t);
            nfct_nlmsg_build(nlh, ct.get());
          },
          [&](size_t i, const nlmsghdr *nlh) {
            int e = nl::nlmsg_error(nlh);
            if (nlh->nlmsg_type == NLMSG_ERROR) {
              if (e != ENOENT && e != 0) {
                out[i].error = static_cast<uint16_t>(e);
                counters_.errors.fetch_add(1, std::memory_order_relaxed);
              }
              return;
            }
            if (decode(nlh, &out[i])) {
              out[i].event = CT_EVENT_NONE;
              out[i].found = 1;
            }
          },
          [&](size_t i, int e) {
            out[i].error = static_cast<uint16_t>(e);
            counters_.errors.fetch_add(1, std::memory_order_relaxed);
          },
          read_events);
      counters_.gets.fetch_add(r.tuples.size(), std::memory_order_relaxed);
      r.records_cb(std::move(out), {});
    } else {
      ct_update_result res;
      transact(
          s, r.updates.size(),
          [&](size_t i, void *buf, uint32_t seq) {
            const ct_update &u = r.updates[i];
            // CT_NEW without NLM_F_CREATE changes an existing connection, found by either
            // direction's tuple, and never creates one.
            nlmsghdr *nlh = put_header(buf, IPCTNL_MSG_CT_NEW, NLM_F_ACK, seq, u.orig.family == 6 ? AF_INET6 : AF_INET);
            nfct_ptr ct = new_ct();
            set_tuple(ct.get(), u.orig);
            if (u.flags & CT_UPDATE_TIMEOUT) nfct_set_attr_u32(ct.get(), ATTR_TIMEOUT, u.timeout);
            if (u.flags & CT_UPDATE_TCP_STATE) nfct_set_attr_u8(ct.get(), ATTR_TCP_STATE, u.tcp_state);
            if (u.flags & CT_UPDATE_LIBERAL) {
              nfct_set_attr_u8(ct.get(), ATTR_TCP_FLAGS_ORIG, IP_CT_TCP_FLAG_BE_LIBERAL);
              nfct_set_attr_u8(ct.get(), ATTR_TCP_MASK_ORIG, IP_CT_TCP_FLAG_BE_LIBERAL);
              nfct_set_attr_u8(ct.get(), ATTR_TCP_FLAGS_REPL, IP_CT_TCP_FLAG_BE_LIBERAL);
              nfct_set_attr_u8(ct.get(), ATTR_TCP_MASK_REPL, IP_CT_TCP_FLAG_BE_LIBERAL);
            }
            nfct_nlmsg_build(nlh, ct.get());
          },
          [&](size_t, const nlmsghdr *nlh) {
            int e = nl::nlmsg_error(nlh);
            if (nlh->nlmsg_type != NLMSG_ERROR) return;  // without NLM_F_ECHO the kernel only acks
            if (e == 0)
              res.ok++;
            else if (e == ENOENT)
              res.not_found++;
            else {
              res.failed++;
              counters_.errors.fetch_add(1, std::memory_order_relaxed);
            }
          },
          [&](size_t, int) {
            res.failed++;
            counters_.errors.fetch_add(1, std::memory_order_relaxed);
          },
          read_events);
      counters_.updates.fetch_add(r.updates.size(), std::memory_order_relaxed);
      r.update_cb(res, {});
    }
  };

  for (;;) {
    pollfd fds[2] = {{thread_.wake_fd(), POLLIN, 0}, {s.ev ? mnl_socket_get_fd(s.ev) : -1, POLLIN, 0}};
    int pr = poll(fds, s.ev ? 2 : 1, s.resync_pending ? RESYNC_RETRY_MS : -1);
    if (pr < 0 && errno != EINTR) break;
    nl::request_thread<request>::queue work;
    if (!thread_.take(work)) break;
    for (auto &r : work) {
      try {
        serve(*r);
      } catch (const std::exception &e) {
        counters_.errors.fetch_add(1, std::memory_order_relaxed);
        r->fail_with(failure{ERR_CONNTRACK, std::string("conntrack: ") + e.what(), 0});
      }
    }
    read_events();
    if (s.resync_pending) resync();
  }
}

}  // namespace fg::ct
