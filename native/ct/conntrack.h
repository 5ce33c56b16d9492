// The kernel's conntrack through ctnetlink (libnetfilter_conntrack + libmnl), for the
// learner: the fast path is a cache of conntrack's decisions, so it asks conntrack about
// connections, hears their NEW/UPDATE/DESTROY events and refreshes them while offloaded.
//
// One thread owns both netlink sockets (events and requests). Callers queue requests
// (get, update, dump) and get their result through a callback run on that thread; events
// are decoded into packed records and handed over in batches. No N-API here: the binding
// is native/addon/conntrack.cc, the records are decoded by lib/conntrack.ts.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dp/error.h"
#include "nl/request_thread.h"

namespace fg::ct {

inline constexpr const char *ERR_CONNTRACK = "ERR_FLOWGATE_CONNTRACK";
inline constexpr const char *ERR_CONNTRACK_UNAVAILABLE = "ERR_FLOWGATE_CONNTRACK_UNAVAILABLE";
inline constexpr const char *ERR_CONNTRACK_EVENTS = "ERR_FLOWGATE_CONNTRACK_EVENTS";
inline constexpr const char *ERR_CONNTRACK_CLOSED = "ERR_FLOWGATE_CONNTRACK_CLOSED";

// A tuple as JavaScript packs it for get() and update(): addresses in network order
// (IPv4 in the first 4 bytes), ports in host (little-endian) order.
struct ct_tuple {
  uint8_t family;   // 4 or 6
  uint8_t l4proto;  // IPPROTO_TCP or IPPROTO_UDP
  uint16_t zone;
  uint16_t sport;
  uint16_t dport;
  uint8_t src[16];
  uint8_t dst[16];
};
static_assert(sizeof(ct_tuple) == 40, "a conntrack request tuple is 40 bytes");

enum : uint8_t {
  CT_UPDATE_TIMEOUT = 1 << 0,
  CT_UPDATE_TCP_STATE = 1 << 1,
  CT_UPDATE_LIBERAL = 1 << 2,
};

struct ct_update {
  ct_tuple orig;
  uint32_t timeout;   // seconds, with CT_UPDATE_TIMEOUT
  uint8_t flags;      // CT_UPDATE_*
  uint8_t tcp_state;  // TCP_CONNTRACK_*, with CT_UPDATE_TCP_STATE
  uint8_t pad[2];
};
static_assert(sizeof(ct_update) == 48, "a conntrack update is 48 bytes");

// One direction of a connection in a record: ports in host order.
struct ct_record_tuple {
  uint8_t src[16];
  uint8_t dst[16];
  uint16_t sport;
  uint16_t dport;
};
static_assert(sizeof(ct_record_tuple) == 36, "a record tuple is 36 bytes");

enum : uint8_t { CT_EVENT_NONE = 0, CT_EVENT_NEW = 1, CT_EVENT_UPDATE = 2, CT_EVENT_DESTROY = 3 };
inline constexpr uint8_t CT_TCP_STATE_NONE = 0xff;  // not a TCP connection

// A connection as it crosses into JavaScript: packed, little-endian, fixed size.
struct ct_record {
  uint32_t id;
  uint32_t status;  // IPS_* bits
  uint32_t timeout; // seconds left
  uint32_t mark;
  uint16_t zone;
  uint8_t family;   // 4 or 6; 0 in a get result that found nothing
  uint8_t l4proto;
  uint8_t tcp_state;        // TCP_CONNTRACK_*, or CT_TCP_STATE_NONE
  uint8_t event;            // CT_EVENT_*, in event batches
  uint8_t tcp_flags_orig;   // IP_CT_TCP_FLAG_* of each direction (BE_LIBERAL is 0x08)
  uint8_t tcp_flags_reply;
  ct_record_tuple orig;
  ct_record_tuple reply;
  char helper[16];          // NUL-terminated, empty without a helper
  uint8_t found;            // get results: 1 when the connection exists
  uint8_t has_helper;
  uint16_t error;           // get results: the errno of a failed lookup other than ENOENT
  uint8_t pad[4];
};
static_assert(sizeof(ct_record) == 120, "a conntrack record is 120 bytes");

struct ct_update_result {
  uint32_t ok = 0;
  uint32_t not_found = 0;
  uint32_t failed = 0;
};

struct ct_stats {
  uint64_t events = 0;
  uint64_t enobufs = 0;
  uint64_t resyncs = 0;
  uint64_t gets = 0;
  uint64_t updates = 0;
  uint64_t errors = 0;
};

enum class batch_kind { events, resync };

struct options {
  bool ev_new = false, ev_update = false, ev_destroy = false;
  uint32_t rcvbuf = 0;  // event socket SO_RCVBUF in bytes; 0: a large default
  std::string netns;    // a path such as /run/netns/NAME: open the sockets there; empty: ours
  // Called on the conntrack thread with a batch of event records, or the whole table after
  // events were lost. Returns false when the batch could not be queued (it is dropped and
  // the table resynchronised instead).
  std::function<bool(std::vector<ct_record> &&, batch_kind)> deliver;
};

// A request's outcome: error empty (code == nullptr) on success.
struct failure {
  const char *code = nullptr;
  std::string message;
  int err = 0;
  explicit operator bool() const { return code != nullptr; }
};

class conntrack {
 public:
  using records_done = std::function<void(std::vector<ct_record> &&, failure)>;
  using update_done = std::function<void(ct_update_result, failure)>;

  // Starts the thread, which opens the sockets (in options.netns) and checks that
  // ctnetlink answers; throws dp_error when it cannot.
  explicit conntrack(options o);
  ~conntrack();
  conntrack(const conntrack &) = delete;
  conntrack &operator=(const conntrack &) = delete;

  // Each request's callback runs once, on the conntrack thread (or, after close(), with an
  // ERR_CONNTRACK_CLOSED failure).
  void get(std::vector<ct_tuple> tuples, records_done done);
  void update(std::vector<ct_update> updates, update_done done);
  void dump(records_done done);
  ct_stats stats() const;
  // Stops and joins the thread; requests still queued fail. Idempotent.
  void close();

 private:
  struct request;
  struct sockets;

  void run(std::shared_ptr<std::promise<void>> started);
  void submit(std::unique_ptr<request> r);

  options opts_;
  std::unique_ptr<sockets> socks_;
  nl::request_thread<request> thread_;

  struct counters {
    std::atomic<uint64_t> events{0}, enobufs{0}, resyncs{0}, gets{0}, updates{0}, errors{0};
  } counters_;
};

}  // namespace fg::ct
