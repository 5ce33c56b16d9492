// Netlink socket plumbing shared by the ctnetlink (native/ct) and rtnetlink (native/rt)
// threads: entering a namespace, buffer sizes, batched reads, error replies.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "dp/error.h"

namespace fg::nl {

// Moves the calling thread into the network namespace at `path` (sockets belong to the
// namespace they are created in, and setns() moves only this thread). `what` names the
// caller in messages; `code` is the error code of a failed setns().
inline void enter_netns(const std::string &path, const char *what, const char *code) {
  int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) throw dp_error(ERR_INVALID_ARGUMENT, std::string(what) + ": netns " + path + ": " + strerror(errno), errno);
  int rc = setns(nsfd, CLONE_NEWNET);
  int e = errno;
  close(nsfd);
  if (rc < 0) throw dp_error(code, std::string(what) + ": setns " + path + ": " + strerror(e), e);
}

inline void set_rcvbuf(int fd, int bytes) {
  // FORCE goes past net.core.rmem_max (we are root); plain SO_RCVBUF is the fallback.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

// A netlink socket of `bus` (named `bus_name` in errors), bound. Its receive buffer:
// `asked` bytes when asked for, as plain SO_RCVBUF (which the kernel doubles and clamps to
// its minimum, as any application would get: tests provoke overruns with a small one),
// else `fallback` bytes, past net.core.rmem_max.
inline mnl_socket *open_socket(int bus, const char *bus_name, uint32_t asked, int fallback, const char *what, const char *code) {
  mnl_socket *nl = mnl_socket_open2(bus, SOCK_CLOEXEC);
  if (nl == nullptr) throw dp_error(code, std::string(what) + ": cannot open a " + bus_name + " socket: " + strerror(errno), errno);
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    int e = errno;
    mnl_socket_close(nl);
    throw dp_error(code, std::string(what) + ": bind: " + strerror(e), e);
  }
  int fd = mnl_socket_get_fd(nl);
  set_rcvbuf(fd, asked ? static_cast<int>(asked) : fallback);
  if (asked) {
    int b = static_cast<int>(asked);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof(b));
  }
  return nl;
}

// The errno of a NLMSG_ERROR reply (0 for an ack), 0 for any other message.
inline int nlmsg_error(const nlmsghdr *nlh) {
  if (nlh->nlmsg_type != NLMSG_ERROR) return 0;
  const auto *e = static_cast<const nlmsgerr *>(mnl_nlmsg_get_payload(nlh));
  return -e->error;
}

// Up to COUNT datagrams of at most BYTES each per recvmmsg().
template <unsigned COUNT, size_t BYTES>
struct datagrams {
  std::vector<uint8_t> storage = std::vector<uint8_t>(COUNT * BYTES);
  mmsghdr msgs[COUNT];
  iovec iov[COUNT];

  // Reads up to COUNT datagrams; waits for the first unless nonblocking. Returns the
  // count, 0 when nothing is there (nonblocking), or -errno.
  int recv(int fd, bool nonblocking) {
    for (unsigned i = 0; i < COUNT; i++) {
      iov[i] = {storage.data() + i * BYTES, BYTES};
      memset(&msgs[i], 0, sizeof(msgs[i]));
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, msgs, COUNT, nonblocking ? MSG_DONTWAIT : MSG_WAITFORONE, nullptr);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    return n;
  }
  // Calls f(nlh) for each netlink message of datagram i.
  template <typename F>
  void each(int i, F &&f) {
    const auto *buf = static_cast<const nlmsghdr *>(iov[i].iov_base);
    int len = static_cast<int>(msgs[i].msg_len);
    for (const nlmsghdr *nlh = buf; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) f(nlh);
  }

  // Reads all that is queued on the event socket fd: on_message(nlh) for each message,
  // then after_read() after each batch of datagrams. An overrun (ENOBUFS: events were lost)
  // calls on_overrun() and reading goes on: the socket keeps working after reporting it.
  // Returns whether anything was read.
  template <typename OnMessage, typename OnOverrun, typename AfterRead>
  bool drain(int fd, OnMessage &&on_message, OnOverrun &&on_overrun, AfterRead &&after_read) {
    bool any = false;
    for (;;) {
      int got = recv(fd, true);
      if (got == -ENOBUFS) {
        on_overrun();
        continue;
      }
      if (got == -EINTR) continue;
      if (got <= 0) return any;
      any = true;
      for (int d = 0; d < got; d++) each(d, on_message);
      after_read();
    }
  }
};

}  // namespace fg::nl
