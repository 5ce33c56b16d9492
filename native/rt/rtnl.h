// The kernel's links, addresses, neighbours, routes, rules and nexthop objects through
// rtnetlink (libmnl), for the kernel mirror and the gateway: dumps and route lookups on
// request, and every change as an event.
//
// One thread owns both NETLINK_ROUTE sockets (events and requests), as fg::ct::conntrack
// does. Callers queue requests and get their result through a callback run on that thread;
// events are decoded into records and handed over in batches. After an overrun of the event
// socket (ENOBUFS) the consumer gets a resync instead: fresh links and neighbours, and the
// route counts rebuilt from a dump. The thread keeps one key per route of the namespace
// (family, table, destination, tos, metric; for IPv6 also the next hop), so that the route counts are exact with a full
// Internet table without a route ever crossing into JavaScript. No N-API here: the binding
// is native/addon/rtnl.cc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dp/error.h"
#include "nl/request_thread.h"

namespace fg::rt {

inline constexpr const char *ERR_RTNL = "ERR_FLOWGATE_RTNL";
inline constexpr const char *ERR_RTNL_CLOSED = "ERR_FLOWGATE_RTNL_CLOSED";

enum class record_kind : uint8_t { link, addr, neigh, route, rule, nexthop };

// One object of the kernel, from a dump, an event or a route lookup. Which fields mean
// something depends on the kind; addresses are in network order, IPv4 in the first 4 bytes.
struct record {
  record_kind kind = record_kind::link;
  bool deleted = false;
  uint8_t family = 0;  // 4 or 6; 0 for links and for nexthop groups and blackholes
  uint32_t ifindex = 0;
  std::string dev;     // the interface (a link's own name); empty: none

  // link
  uint32_t mtu = 0;
  bool up = false;        // IFF_UP
  bool carrier = false;   // IFF_LOWER_UP
  bool has_mac = false;
  uint8_t mac[6] = {};    // neighbours too
  std::string link_kind;  // IFLA_INFO_KIND: "veth", "tun"...; empty without IFLA_LINKINFO

  // addr: the local address (IFA_LOCAL, else IFA_ADDRESS); neigh: its address; route and
  // rule: the destination.
  bool has_dst = false;
  uint8_t dst[16] = {};
  uint8_t dst_len = 0;
  // rule: the source selector
  bool has_src = false;
  uint8_t src[16] = {};
  uint8_t src_len = 0;
  // route and nexthop: the gateway, in the record's family
  bool has_gateway = false;
  uint8_t gateway[16] = {};
  // route lookups and dumps: RTA_PREFSRC
  bool has_prefsrc = false;
  uint8_t prefsrc[16] = {};

  uint16_t state = 0;     // neigh: NUD_* bits
  uint8_t type = 0;       // route: RTN_*; rule: FR_ACT_*
  uint8_t protocol = 0;   // route: RTPROT_*
  uint8_t scope = 0;
  uint8_t tos = 0;
  uint32_t flags = 0;     // route: RTM_F_* and RTNH_F_*
  uint32_t table = 0;     // route and rule
  uint32_t priority = 0;  // route: the metric (RTA_PRIORITY); rule: its preference
  uint32_t nhid = 0;      // route: the nexthop object (0: none); nexthop: its id
  // route: RTA_MULTIPATH (or a group nhid): no single gateway and dev; ifindex and gateway
  // are then the first next hop's.
  bool multipath = false;
  bool blackhole = false; // nexthop
  std::vector<uint32_t> group;  // nexthop: member ids
  std::string iif, oif;   // rule
  uint32_t fwmark = 0, fwmask = 0;  // rule; fwmask 0: no fwmark selector
};

// Routes per family and table, as the kernel holds them (cached clones not included).
struct route_counts {
  uint64_t ipv4 = 0;
  uint64_t ipv6 = 0;
  std::map<uint32_t, uint64_t> tables4, tables6;
};

struct rt_stats {
  uint64_t events = 0;
  uint64_t enobufs = 0;
  uint64_t resyncs = 0;
  uint64_t errors = 0;
  route_counts routes;
  bool routes_synced = false;  // false until the start-up route dump is counted
};

// What a consumer gets after events were lost: its derived state is stale.
struct resync {
  uint64_t enobufs = 0;  // overruns so far
  std::vector<record> links;
  std::vector<record> neighbours;
  route_counts routes;
};

struct route_filter {
  uint8_t family = 4;     // 4 or 6
  uint32_t table = 0;     // 0: every table
  uint8_t protocol = 0;   // 0: every protocol
};

struct options {
  uint32_t rcvbuf = 0;  // event socket SO_RCVBUF in bytes; 0: a large default
  std::string netns;    // a path such as /run/netns/NAME: open the sockets there; empty: ours
  // Called on the rtnl thread; false when the batch could not be queued (the thread then
  // resynchronises, as after an overrun).
  std::function<bool(std::vector<record> &&)> deliver_events;
  std::function<bool(resync &&)> deliver_resync;
  // Event batches handed to deliver_events and not yet consumed (the consumer decrements
  // it). While the consumer is behind, the thread merges what it reads into the next batch
  // instead of queueing more: a routing daemon's burst arrives as a few large batches, and
  // only a backlog past EVENT_BACKLOG_MAX makes it resynchronise. Null: no flow control.
  std::shared_ptr<std::atomic<int>> events_in_flight;
};

// A request's outcome: code == nullptr on success.
struct failure {
  const char *code = nullptr;
  std::string message;
  int err = 0;
  explicit operator bool() const { return code != nullptr; }
};

// Text as iproute2 prints it (lib/net/addr.ts conventions for addresses).
std::string format_ip(uint8_t family, const uint8_t *bytes);
const char *route_type_name(uint8_t type);
const char *nud_state_name(uint16_t state);
const char *rule_action_name(uint8_t action);
// Tables and protocols by name ("main", "static") as /etc/iproute2 names them, else the
// number in decimal; the numbers of names (or decimal text), -1 for an unknown name.
std::string table_name(uint32_t table);
std::string protocol_name(uint8_t protocol);
int64_t table_number(const std::string &name);
int64_t protocol_number(const std::string &name);

class rtnl {
 public:
  using records_done = std::function<void(std::vector<record> &&, failure)>;
  using counts_done = std::function<void(route_counts, failure)>;

  // Starts the thread, which opens the sockets (in options.netns), joins the event groups
  // and then counts the routes; throws dp_error when the sockets cannot be opened.
  explicit rtnl(options o);
  ~rtnl();
  rtnl(const rtnl &) = delete;
  rtnl &operator=(const rtnl &) = delete;

  // Each callback runs once, on the rtnl thread (or with ERR_RTNL_CLOSED after close()).
  void links(records_done done);
  void addresses(records_done done);
  void neighbours(records_done done);
  // The neighbour entry of `address` (family 4 or 6) on interface `dev`: one record, or none.
  void neighbour(uint8_t family, const uint8_t *address, std::string dev, records_done done);
  void routes(route_filter filter, records_done done);
  void rules(records_done done);
  void nexthops(records_done done);
  // The kernel's decision for a packet to `address` (family 4 or 6), as `ip route get`:
  // one record, or none when the kernel answers that it would not forward (no route,
  // unreachable, prohibit, blackhole).
  void route_get(uint8_t family, const uint8_t *address, records_done done);
  // The route counts once the start-up dump and every event read so far are counted.
  void count_routes(counts_done done);
  rt_stats stats() const;
  // Stops and joins the thread; requests still queued fail. Idempotent.
  void close();

  // Defined in rtnl.cc; named here for the helpers there that build requests.
  struct request;

 private:
  struct state;

  void run(std::shared_ptr<std::promise<void>> started);
  void submit(std::unique_ptr<request> r);

  options opts_;
  std::unique_ptr<state> st_;
  nl::request_thread<request> thread_;

  struct counters {
    std::atomic<uint64_t> events{0}, enobufs{0}, resyncs{0}, errors{0};
  } counters_;
  // rtnl thread: writes; stats(): reads.
  mutable std::mutex counts_mu_;
  route_counts counts_;         // counts_mu_
  bool routes_synced_ = false;  // counts_mu_
};

}  // namespace fg::rt
