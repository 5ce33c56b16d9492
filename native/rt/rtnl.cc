#include "rt/rtnl.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/nexthop.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <unordered_map>

#include "nl/netlink.h"

namespace fg::rt {

namespace {

// <linux/if.h> has it, but clashes with <net/if.h>.
#ifndef IFF_LOWER_UP
constexpr unsigned IFF_LOWER_UP = 1 << 16;
#endif

constexpr int REQUEST_RCVBUF = 4 << 20;
constexpr int EVENT_RCVBUF_DEFAULT = 8 << 20;
// A dump datagram is at most 32 KiB (netlink_dump() caps its skb there).
constexpr size_t REPLY_BUFFER_BYTES = 64 * 1024;
constexpr unsigned EVENT_DATAGRAMS = 16;
constexpr size_t EVENT_DATAGRAM_BYTES = 32 * 1024;
// Event records handed over at most in one batch.
constexpr size_t EVENT_BATCH_MAX = 4096;
// Batches handed to the consumer at most at once, and events held back meanwhile before the
// thread gives up on them and resynchronises instead (a million route events is ~100 MB).
constexpr int EVENT_BATCHES_IN_FLIGHT = 2;
constexpr size_t EVENT_BACKLOG_MAX = 1 << 18;
// How soon a held-back batch is offered again.
constexpr int EVENT_HOLD_RETRY_MS = 5;
// A reply that stops coming (which the kernel should never do) fails after this.
constexpr int REPLY_TIMEOUT_MS = 10000;
// The routes of a link set down or removed are recounted this long after its event: the
// kernel flushes them after announcing the link (__dev_notify_flags()).
constexpr int RECOUNT_SETTLE_MS = 200;
// A resync that failed or could not be queued is retried after this.
constexpr int RESYNC_RETRY_MS = 50;
constexpr unsigned EVENT_GROUPS[] = {RTNLGRP_LINK,       RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR,
                                     RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE,  RTNLGRP_IPV4_RULE,
                                     RTNLGRP_IPV6_RULE,  RTNLGRP_NEIGH,       RTNLGRP_NEXTHOP};

// ---- route keys ---------------------------------------------------------------------
// What tells two routes of a namespace apart. IPv4 (fib_table_insert()): table, prefix,
// tos and metric; a second route with all four equal is refused. IPv6 (fib6_add_rt2node())
// also keeps routes that differ only in their next hop (fe80::/64 on every interface): its
// key adds the next hop, the nexthop object or else the device and gateway, of a multipath
// route the first one's, so that appending a sibling leaves the key as it was. `used` is
// last: the bytes before it are the key, without padding.

struct route_key4 {
  uint32_t table;
  uint32_t priority;
  uint8_t dst[4];
  uint8_t len;
  uint8_t tos;
  uint8_t used;  // 0: an empty slot of the set
};
static_assert(sizeof(route_key4) == 16 && offsetof(route_key4, used) == 14, "an IPv4 route key is 14 bytes in 16");

struct route_key6 {
  uint32_t table;
  uint32_t priority;
  uint32_t nexthop;  // the nexthop object, or else the device
  uint8_t dst[16];
  uint8_t gateway[16];
  uint8_t len;
  uint8_t tos;
  uint8_t by_nhid;
  uint8_t used;
};
static_assert(sizeof(route_key6) == 48 && offsetof(route_key6, used) == 47, "an IPv6 route key is 47 bytes in 48");

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

template <typename Key>
uint64_t hash_of(const Key &k) {
  constexpr size_t n = offsetof(Key, used);
  uint8_t bytes[(n + 7) / 8 * 8] = {};
  memcpy(bytes, &k, n);
  uint64_t h = n;
  for (size_t i = 0; i < sizeof(bytes); i += 8) {
    uint64_t w;
    memcpy(&w, bytes + i, 8);
    h = mix64(h ^ w);
  }
  return h;
}

template <typename Key>
bool same(const Key &a, const Key &b) {
  return memcmp(&a, &b, offsetof(Key, used)) == 0;
}

// An open-addressing set (linear probing, backward-shift deletion): one slot per key, no
// node allocations, load at most 3/4.
template <typename Key>
class route_set {
 public:
  bool insert(const Key &k) {
    if ((size_ + 1) * 4 > slots_.size() * 3) grow();
    size_t mask = slots_.size() - 1;
    for (size_t i = hash_of(k) & mask;; i = (i + 1) & mask) {
      if (!slots_[i].used) {
        slots_[i] = k;
        slots_[i].used = 1;
        size_++;
        return true;
      }
      if (same(slots_[i], k)) return false;
    }
  }

  bool erase(const Key &k) {
    size_t mask = slots_.size() - 1;
    size_t i = hash_of(k) & mask;
    for (;; i = (i + 1) & mask) {
      if (!slots_[i].used) return false;
      if (same(slots_[i], k)) break;
    }
    // Close the hole: a later key of the same run moves into it unless its home slot lies
    // cyclically in (hole, its slot], where a lookup would still find it.
    for (size_t j = i;;) {
      j = (j + 1) & mask;
      if (!slots_[j].used) break;
      size_t home = hash_of(slots_[j]) & mask;
      bool reachable = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (!reachable) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i].used = 0;
    size_--;
    return true;
  }

  void clear() {
    slots_.assign(MIN_SLOTS, Key{});
    slots_.shrink_to_fit();
    size_ = 0;
  }

 private:
  static constexpr size_t MIN_SLOTS = 64;

  void grow() {
    std::vector<Key> old(slots_.size() * 2);
    old.swap(slots_);
    size_ = 0;
    for (const auto &k : old)
      if (k.used) insert(k);
  }

  std::vector<Key> slots_ = std::vector<Key>(MIN_SLOTS);
  size_t size_ = 0;
};

// ---- decoding -----------------------------------------------------------------------

template <int MAX>
struct attrs {
  const nlattr *tb[MAX + 1] = {};

  void parse(const nlmsghdr *nlh, size_t header) {
    parse_range(mnl_nlmsg_get_payload_offset(nlh, header), mnl_nlmsg_get_payload_tail(nlh));
  }
  void parse_nested(const nlattr *nest) {
    parse_range(mnl_attr_get_payload(nest), static_cast<const char *>(mnl_attr_get_payload(nest)) + mnl_attr_get_payload_len(nest));
  }
  // libmnl's mnl_attr_for_each, which C++ does not compile (void * to nlattr *).
  void parse_range(const void *begin, const void *end) {
    const auto *a = static_cast<const nlattr *>(begin);
    while (mnl_attr_ok(a, static_cast<int>(static_cast<const char *>(end) - reinterpret_cast<const char *>(a)))) {
      uint16_t t = mnl_attr_get_type(a);
      if (t <= MAX) tb[t] = a;
      a = mnl_attr_next(a);
    }
  }
  const nlattr *operator[](int t) const { return tb[t]; }
};

uint32_t u32_of(const nlattr *a, uint32_t fallback = 0) {
  return a != nullptr && mnl_attr_get_payload_len(a) >= 4 ? mnl_attr_get_u32(a) : fallback;
}

std::string str_of(const nlattr *a) {
  if (a == nullptr) return {};
  const char *p = static_cast<const char *>(mnl_attr_get_payload(a));
  return std::string(p, strnlen(p, mnl_attr_get_payload_len(a)));
}

// Copies an address attribute of the family's length; false when it has another length.
bool copy_addr(uint8_t *out, const nlattr *a, uint8_t family) {
  size_t len = family == 6 ? 16 : 4;
  if (a == nullptr || mnl_attr_get_payload_len(a) != len) return false;
  memcpy(out, mnl_attr_get_payload(a), len);
  return true;
}

uint8_t family_of(int af) { return af == AF_INET ? 4 : af == AF_INET6 ? 6 : 0; }

template <typename H>
const H *header_of(const nlmsghdr *nlh) {
  if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(H))) return nullptr;
  return static_cast<const H *>(mnl_nlmsg_get_payload(nlh));
}

using names_t = std::unordered_map<uint32_t, std::string>;

// The name of interface `index`: from the link events and dumps seen so far, else asked of
// the kernel (a link newer than the last event read).
std::string name_of(names_t &names, uint32_t index) {
  if (index == 0) return {};
  auto it = names.find(index);
  if (it != names.end()) return it->second;
  char buf[IF_NAMESIZE] = {};
  if (if_indextoname(index, buf) == nullptr) return {};
  return names.emplace(index, buf).first->second;
}

bool decode_link(const nlmsghdr *nlh, record &r) {
  const auto *ifi = header_of<ifinfomsg>(nlh);
  // AF_BRIDGE link messages describe bridge ports, not the links themselves.
  if (ifi == nullptr || ifi->ifi_family != AF_UNSPEC) return false;
  attrs<IFLA_MAX> tb;
  tb.parse(nlh, sizeof(*ifi));
  r.kind = record_kind::link;
  r.ifindex = static_cast<uint32_t>(ifi->ifi_index);
  r.dev = str_of(tb[IFLA_IFNAME]);
  r.mtu = u32_of(tb[IFLA_MTU]);
  r.up = (ifi->ifi_flags & IFF_UP) != 0;
  r.carrier = (ifi->ifi_flags & IFF_LOWER_UP) != 0;
  if (tb[IFLA_ADDRESS] != nullptr && mnl_attr_get_payload_len(tb[IFLA_ADDRESS]) == 6) {
    r.has_mac = true;
    memcpy(r.mac, mnl_attr_get_payload(tb[IFLA_ADDRESS]), 6);
  }
  if (tb[IFLA_LINKINFO] != nullptr) {
    attrs<IFLA_INFO_MAX> info;
    info.parse_nested(tb[IFLA_LINKINFO]);
    r.link_kind = str_of(info[IFLA_INFO_KIND]);
  }
  return true;
}

bool decode_addr(const nlmsghdr *nlh, record &r, names_t &names) {
  const auto *ifa = header_of<ifaddrmsg>(nlh);
  if (ifa == nullptr || family_of(ifa->ifa_family) == 0) return false;
  attrs<IFA_MAX> tb;
  tb.parse(nlh, sizeof(*ifa));
  r.kind = record_kind::addr;
  r.family = family_of(ifa->ifa_family);
  r.ifindex = ifa->ifa_index;
  r.dev = name_of(names, ifa->ifa_index);
  // IFA_LOCAL is the address of a point-to-point interface; IFA_ADDRESS its peer then.
  r.has_dst = copy_addr(r.dst, tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS], r.family);
  r.dst_len = ifa->ifa_prefixlen;
  return r.has_dst;
}

bool decode_neigh(const nlmsghdr *nlh, record &r, names_t &names) {
  const auto *ndm = header_of<ndmsg>(nlh);
  if (ndm == nullptr || family_of(ndm->ndm_family) == 0 || (ndm->ndm_flags & NTF_PROXY)) return false;
  attrs<NDA_MAX> tb;
  tb.parse(nlh, sizeof(*ndm));
  r.kind = record_kind::neigh;
  r.family = family_of(ndm->ndm_family);
  r.ifindex = static_cast<uint32_t>(ndm->ndm_ifindex);
  r.dev = name_of(names, r.ifindex);
  r.has_dst = copy_addr(r.dst, tb[NDA_DST], r.family);
  r.dst_len = r.family == 6 ? 128 : 32;
  r.state = ndm->ndm_state;
  if (tb[NDA_LLADDR] != nullptr && mnl_attr_get_payload_len(tb[NDA_LLADDR]) == 6) {
    r.has_mac = true;
    memcpy(r.mac, mnl_attr_get_payload(tb[NDA_LLADDR]), 6);
  }
  return r.has_dst;
}

// Cached clones (PMTU exceptions) are not routes of a table: skipped unless `clone`, as
// for the answer to a route lookup.
bool decode_route(const nlmsghdr *nlh, record &r, names_t &names, bool clone = false) {
  const auto *rtm = header_of<rtmsg>(nlh);
  if (rtm == nullptr || family_of(rtm->rtm_family) == 0 || ((rtm->rtm_flags & RTM_F_CLONED) && !clone)) return false;
  attrs<RTA_MAX> tb;
  tb.parse(nlh, sizeof(*rtm));
  r.kind = record_kind::route;
  r.family = family_of(rtm->rtm_family);
  r.type = rtm->rtm_type;
  r.protocol = rtm->rtm_protocol;
  r.scope = rtm->rtm_scope;
  r.tos = rtm->rtm_tos;
  r.flags = rtm->rtm_flags;
  r.table = u32_of(tb[RTA_TABLE], rtm->rtm_table);
  r.has_dst = true;  // a default route has no RTA_DST
  copy_addr(r.dst, tb[RTA_DST], r.family);
  r.dst_len = rtm->rtm_dst_len;
  r.has_gateway = copy_addr(r.gateway, tb[RTA_GATEWAY], r.family);
  r.has_prefsrc = copy_addr(r.prefsrc, tb[RTA_PREFSRC], r.family);
  r.ifindex = u32_of(tb[RTA_OIF]);
  r.dev = name_of(names, r.ifindex);
  r.priority = u32_of(tb[RTA_PRIORITY]);
  r.nhid = u32_of(tb[RTA_NH_ID]);
  r.multipath = tb[RTA_MULTIPATH] != nullptr;
  if (r.multipath && mnl_attr_get_payload_len(tb[RTA_MULTIPATH]) >= sizeof(rtnexthop)) {
    // The first next hop stands for the route in its key (see route_key6).
    const auto *first = static_cast<const rtnexthop *>(mnl_attr_get_payload(tb[RTA_MULTIPATH]));
    if (first->rtnh_len >= sizeof(rtnexthop) && first->rtnh_len <= mnl_attr_get_payload_len(tb[RTA_MULTIPATH])) {
      r.ifindex = static_cast<uint32_t>(first->rtnh_ifindex);
      attrs<RTA_MAX> hop;
      hop.parse_range(reinterpret_cast<const char *>(first) + RTNH_LENGTH(0), reinterpret_cast<const char *>(first) + first->rtnh_len);
      r.has_gateway = copy_addr(r.gateway, hop[RTA_GATEWAY], r.family);
    }
  }
  return true;
}

bool decode_rule(const nlmsghdr *nlh, record &r) {
  const auto *frh = header_of<fib_rule_hdr>(nlh);
  if (frh == nullptr || family_of(frh->family) == 0) return false;
  attrs<FRA_MAX> tb;
  tb.parse(nlh, sizeof(*frh));
  r.kind = record_kind::rule;
  r.family = family_of(frh->family);
  r.type = frh->action;
  r.tos = frh->tos;
  r.table = u32_of(tb[FRA_TABLE], frh->table);
  r.priority = u32_of(tb[FRA_PRIORITY]);
  r.has_dst = copy_addr(r.dst, tb[FRA_DST], r.family);
  r.dst_len = frh->dst_len;
  r.has_src = copy_addr(r.src, tb[FRA_SRC], r.family);
  r.src_len = frh->src_len;
  r.iif = str_of(tb[FRA_IIFNAME]);
  r.oif = str_of(tb[FRA_OIFNAME]);
  r.fwmark = u32_of(tb[FRA_FWMARK]);
  r.fwmask = u32_of(tb[FRA_FWMASK], tb[FRA_FWMARK] ? 0xffffffff : 0);
  return true;
}

bool decode_nexthop(const nlmsghdr *nlh, record &r, names_t &names) {
  const auto *nhm = header_of<nhmsg>(nlh);
  if (nhm == nullptr) return false;
  attrs<NHA_MAX> tb;
  tb.parse(nlh, sizeof(*nhm));
  r.kind = record_kind::nexthop;
  r.family = family_of(nhm->nh_family);
  r.protocol = nhm->nh_protocol;
  r.nhid = u32_of(tb[NHA_ID]);
  r.blackhole = tb[NHA_BLACKHOLE] != nullptr;
  r.ifindex = u32_of(tb[NHA_OIF]);
  r.dev = name_of(names, r.ifindex);
  if (r.family != 0) r.has_gateway = copy_addr(r.gateway, tb[NHA_GATEWAY], r.family);
  if (tb[NHA_GROUP] != nullptr) {
    const auto *members = static_cast<const nexthop_grp *>(mnl_attr_get_payload(tb[NHA_GROUP]));
    size_t n = mnl_attr_get_payload_len(tb[NHA_GROUP]) / sizeof(nexthop_grp);
    for (size_t i = 0; i < n; i++) r.group.push_back(members[i].id);
  }
  return true;
}

// Decodes an rtnetlink message of the kinds this module deals in; false for any other.
bool decode(const nlmsghdr *nlh, record &r, names_t &names) {
  switch (nlh->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK:
      r.deleted = nlh->nlmsg_type == RTM_DELLINK;
      return decode_link(nlh, r);
    case RTM_NEWADDR:
    case RTM_DELADDR:
      r.deleted = nlh->nlmsg_type == RTM_DELADDR;
      return decode_addr(nlh, r, names);
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH:
      r.deleted = nlh->nlmsg_type == RTM_DELNEIGH;
      return decode_neigh(nlh, r, names);
    case RTM_NEWROUTE:
    case RTM_DELROUTE:
      r.deleted = nlh->nlmsg_type == RTM_DELROUTE;
      return decode_route(nlh, r, names);
    case RTM_NEWRULE:
    case RTM_DELRULE:
      r.deleted = nlh->nlmsg_type == RTM_DELRULE;
      return decode_rule(nlh, r);
    case RTM_NEWNEXTHOP:
    case RTM_DELNEXTHOP:
      r.deleted = nlh->nlmsg_type == RTM_DELNEXTHOP;
      return decode_nexthop(nlh, r, names);
    default:
      return false;
  }
}

failure fail(const std::string &what, int err) {
  return failure{ERR_RTNL, what + (err ? std::string(": ") + strerror(err) : std::string()), err};
}

nlmsghdr *put_request(void *buf, uint16_t type, uint16_t flags) {
  nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  return nlh;
}

// A dump request with the family header the kernel's strict checking expects (all zero
// but the family), returned for filters to be set in it.
template <typename H>
H *put_dump(void *buf, uint16_t type) {
  nlmsghdr *nlh = put_request(buf, type, NLM_F_DUMP);
  return static_cast<H *>(mnl_nlmsg_put_extra_header(nlh, sizeof(H)));
}

}  // namespace

// ---- names and text --------------------------------------------------------------------

std::string format_ip(uint8_t family, const uint8_t *b) {
  char out[64];
  if (family != 6) {
    snprintf(out, sizeof(out), "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
    return out;
  }
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(b, mapped, 12) == 0) {
    snprintf(out, sizeof(out), "::ffff:%u.%u.%u.%u", b[12], b[13], b[14], b[15]);
    return out;
  }
  // RFC 5952: the first longest run of two or more zero groups becomes '::'.
  uint16_t g[8];
  for (int i = 0; i < 8; i++) g[i] = static_cast<uint16_t>(b[2 * i] << 8 | b[2 * i + 1]);
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      i++;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best = -1;
  std::string s;
  for (int i = 0; i < 8; i++) {
    if (i == best) {
      s += "::";
      i += best_len - 1;
      continue;
    }
    if (!s.empty() && s.back() != ':') s += ':';
    snprintf(out, sizeof(out), "%x", g[i]);
    s += out;
  }
  return s;
}

const char *route_type_name(uint8_t type) {
  static const char *const names[] = {"none",      "unicast",     "local",    "broadcast", "anycast", "multicast",
                                      "blackhole", "unreachable", "prohibit", "throw",     "nat",     "xresolve"};
  return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
}

const char *nud_state_name(uint16_t state) {
  // In the order iproute2 prints them (print_neigh_state()).
  static const struct {
    uint16_t bit;
    const char *name;
  } states[] = {{NUD_INCOMPLETE, "INCOMPLETE"}, {NUD_REACHABLE, "REACHABLE"}, {NUD_STALE, "STALE"},
                {NUD_DELAY, "DELAY"},           {NUD_PROBE, "PROBE"},         {NUD_FAILED, "FAILED"},
                {NUD_NOARP, "NOARP"},           {NUD_PERMANENT, "PERMANENT"}};
  for (const auto &s : states)
    if (state & s.bit) return s.name;
  return "NONE";
}

const char *rule_action_name(uint8_t action) {
  switch (action) {
    case FR_ACT_TO_TBL: return "lookup";
    case FR_ACT_GOTO: return "goto";
    case FR_ACT_NOP: return "nop";
    case FR_ACT_BLACKHOLE: return "blackhole";
    case FR_ACT_UNREACHABLE: return "unreachable";
    case FR_ACT_PROHIBIT: return "prohibit";
    default: return "unknown";
  }
}

namespace {

// /etc/iproute2/rt_tables and rt_protos as iproute2 ships them.
struct named {
  uint32_t number;
  const char *name;
};
constexpr named TABLES[] = {{RT_TABLE_DEFAULT, "default"}, {RT_TABLE_MAIN, "main"}, {RT_TABLE_LOCAL, "local"}};
constexpr named PROTOCOLS[] = {{0, "unspec"},    {1, "redirect"},   {2, "kernel"}, {3, "boot"},   {4, "static"},
                               {8, "gated"},     {9, "ra"},         {10, "mrt"},   {11, "zebra"}, {12, "bird"},
                               {13, "dnrouted"}, {14, "xorp"},      {15, "ntk"},   {16, "dhcp"},  {18, "keepalived"},
                               {42, "babel"},    {99, "openr"},     {186, "bgp"},  {187, "isis"}, {188, "ospf"},
                               {189, "rip"},     {192, "eigrp"}};

template <size_t N>
std::string name_in(const named (&list)[N], uint32_t number) {
  for (const auto &n : list)
    if (n.number == number) return n.name;
  return std::to_string(number);
}

template <size_t N>
int64_t number_in(const named (&list)[N], const std::string &name, uint32_t max) {
  for (const auto &n : list)
    if (name == n.name) return n.number;
  if (name.empty() || name.size() > 10 || name.find_first_not_of("0123456789") != std::string::npos) return -1;
  uint64_t v = std::stoull(name);
  return v <= max ? static_cast<int64_t>(v) : -1;
}

}  // namespace

std::string table_name(uint32_t table) { return name_in(TABLES, table); }
std::string protocol_name(uint8_t protocol) { return name_in(PROTOCOLS, protocol); }
int64_t table_number(const std::string &name) { return number_in(TABLES, name, UINT32_MAX); }
int64_t protocol_number(const std::string &name) { return number_in(PROTOCOLS, name, 255); }

// ---- the thread -------------------------------------------------------------------------

struct rtnl::request {
  enum kind_t { LINKS, ADDRESSES, NEIGHBOURS, NEIGHBOUR_GET, ROUTES, RULES, NEXTHOPS, ROUTE_GET, COUNT_ROUTES } kind;
  route_filter filter;
  uint8_t family = 0;
  uint8_t address[16] = {};
  std::string dev;
  records_done records_cb;
  counts_done counts_cb;

  void fail_with(failure f) {
    if (records_cb) records_cb({}, std::move(f));
    if (counts_cb) counts_cb({}, std::move(f));
  }
};

struct rtnl::state {
  mnl_socket *req = nullptr;
  mnl_socket *ev = nullptr;
  uint32_t seq = 1;
  bool resync_pending = false;
  bool recount_pending = false;
  std::chrono::steady_clock::time_point recount_at;
  nl::datagrams<EVENT_DATAGRAMS, EVENT_DATAGRAM_BYTES> ev_dgrams;
  std::vector<uint8_t> reply = std::vector<uint8_t>(REPLY_BUFFER_BYTES);
  std::vector<uint8_t> request = std::vector<uint8_t>(MNL_SOCKET_BUFFER_SIZE);
  names_t names;
  std::unordered_map<uint32_t, bool> links_up;
  route_set<route_key4> routes4;
  route_set<route_key6> routes6;
  route_counts counts;

  ~state() {
    if (req) mnl_socket_close(req);
    if (ev) mnl_socket_close(ev);
  }

  // Counts a route in or out of the namespace's routes, by its key (route_key4, route_key6).
  void count(const record &r) {
    bool changed;
    if (r.family == 4) {
      route_key4 k{};
      k.table = r.table;
      k.priority = r.priority;
      memcpy(k.dst, r.dst, 4);
      k.len = r.dst_len;
      k.tos = r.tos;
      changed = r.deleted ? routes4.erase(k) : routes4.insert(k);
    } else {
      route_key6 k{};
      k.table = r.table;
      k.priority = r.priority;
      k.by_nhid = r.nhid != 0;
      k.nexthop = r.nhid != 0 ? r.nhid : r.ifindex;
      if (r.nhid == 0 && r.has_gateway) memcpy(k.gateway, r.gateway, 16);
      memcpy(k.dst, r.dst, 16);
      k.len = r.dst_len;
      k.tos = r.tos;
      changed = r.deleted ? routes6.erase(k) : routes6.insert(k);
    }
    if (!changed) return;
    uint64_t &total = r.family == 4 ? counts.ipv4 : counts.ipv6;
    auto &tables = r.family == 4 ? counts.tables4 : counts.tables6;
    if (!r.deleted) {
      total++;
      tables[r.table]++;
    } else {
      total--;
      if (--tables[r.table] == 0) tables.erase(r.table);
    }
  }

  // What an event changes in the thread's own state: interface names and route keys.
  void apply(const record &r) {
    if (r.kind == record_kind::link) {
      // A link set down or removed takes its routes with it, and neither IPv4
      // (fib_table_flush()) nor IPv6 (fib6_ifdown()) reports them: the routes are recounted,
      // once the kernel is done (it announces the link before it flushes).
      auto was_up = links_up.find(r.ifindex);
      if ((r.deleted || (was_up != links_up.end() && was_up->second && !r.up)) && !recount_pending) {
        recount_pending = true;
        recount_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(RECOUNT_SETTLE_MS);
      }
      if (r.deleted) {
        names.erase(r.ifindex);
        links_up.erase(r.ifindex);
      } else {
        know_link(r);
      }
    } else if (r.kind == record_kind::route) {
      count(r);
    }
  }

  void know_link(const record &r) {
    if (!r.dev.empty()) names[r.ifindex] = r.dev;
    links_up[r.ifindex] = r.up;
  }

  // Sends the request in `request` and hands each message answering it to on_msg, until
  // the dump is done (NLM_F_DUMP) or the first answer of a single request.
  template <typename F>
  failure exchange(const std::string &what, F &&on_msg) {
    auto *nlh = reinterpret_cast<nlmsghdr *>(request.data());
    uint32_t my_seq = seq++;
    nlh->nlmsg_seq = my_seq;
    bool dump = (nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
    if (mnl_socket_sendto(req, nlh, nlh->nlmsg_len) < 0) return fail(what + ": send", errno);
    int fd = mnl_socket_get_fd(req);
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      int pr = poll(&p, 1, REPLY_TIMEOUT_MS);
      if (pr == 0) return fail(what, ETIMEDOUT);
      if (pr < 0) {
        if (errno == EINTR) continue;
        return fail(what + ": poll", errno);
      }
      ssize_t len = mnl_socket_recvfrom(req, reply.data(), reply.size());
      if (len < 0) {
        if (errno == EINTR) continue;
        return fail(what + ": receive", errno);
      }
      int left = static_cast<int>(len);
      for (const auto *m = reinterpret_cast<const nlmsghdr *>(reply.data()); mnl_nlmsg_ok(m, left); m = mnl_nlmsg_next(m, &left)) {
        if (m->nlmsg_seq != my_seq) continue;  // a late answer to an earlier request
        if (m->nlmsg_type == NLMSG_DONE) {
          // With strict checking, a dump that failed says so in its DONE.
          int e = m->nlmsg_len >= mnl_nlmsg_size(sizeof(int)) ? -*static_cast<const int *>(mnl_nlmsg_get_payload(m)) : 0;
          return e > 0 ? fail(what, e) : failure{};
        }
        if (m->nlmsg_type == NLMSG_ERROR) {
          int e = nl::nlmsg_error(m);
          if (e != 0 || !dump) return e != 0 ? fail(what, e) : failure{};
          continue;
        }
        on_msg(m);
        if (!dump) return {};
      }
    }
  }

  // A dump whose decoded records go to out (when given) and through apply() (link names).
  failure dump_records(const std::string &what, std::vector<record> *out) {
    return exchange(what, [&](const nlmsghdr *m) {
      record r;
      if (!decode(m, r, names)) return;
      if (r.kind == record_kind::link) know_link(r);
      if (out != nullptr) out->push_back(std::move(r));
    });
  }

  failure dump_links(std::vector<record> *out) {
    put_dump<ifinfomsg>(request.data(), RTM_GETLINK);
    return dump_records("rtnl link dump", out);
  }

  failure dump_neighbours(std::vector<record> *out) {
    put_dump<ndmsg>(request.data(), RTM_GETNEIGH);
    return dump_records("rtnl neighbour dump", out);
  }

  // Routes of one family, filtered by the kernel (NETLINK_GET_STRICT_CHK): table, protocol.
  template <typename F>
  failure dump_routes(const route_filter &f, F &&each) {
    auto *rtm = put_dump<rtmsg>(request.data(), RTM_GETROUTE);
    rtm->rtm_family = f.family == 6 ? AF_INET6 : AF_INET;
    rtm->rtm_protocol = f.protocol;
    auto *nlh = reinterpret_cast<nlmsghdr *>(request.data());
    if (f.table != 0) {
      if (f.table < 256) rtm->rtm_table = static_cast<uint8_t>(f.table);
      else mnl_attr_put_u32(nlh, RTA_TABLE, f.table);
    }
    return exchange("rtnl route dump", [&](const nlmsghdr *m) {
      record r;
      if (decode(m, r, names) && r.kind == record_kind::route) each(r);
    });
  }

  // Recounts every route of the namespace from a dump.
  failure recount() {
    recount_pending = false;
    routes4.clear();
    routes6.clear();
    counts = {};
    for (uint8_t family : {4, 6}) {
      failure f = dump_routes(route_filter{family, 0, 0}, [&](const record &r) { count(r); });
      if (f) return f;
    }
    return {};
  }
};

rtnl::rtnl(options o) : opts_(std::move(o)), st_(std::make_unique<state>()), thread_("rtnl", ERR_RTNL) {
  thread_.start([this](std::shared_ptr<std::promise<void>> started) { run(std::move(started)); });
}

rtnl::~rtnl() { close(); }

void rtnl::submit(std::unique_ptr<request> r) {
  if (auto refused = thread_.submit(std::move(r))) refused->fail_with(failure{ERR_RTNL_CLOSED, "rtnl: closed", 0});
}

namespace {
std::unique_ptr<rtnl::request> records_request(rtnl::request::kind_t kind, rtnl::records_done done) {
  auto r = std::make_unique<rtnl::request>();
  r->kind = kind;
  r->records_cb = std::move(done);
  return r;
}
}  // namespace

void rtnl::links(records_done done) { submit(records_request(request::LINKS, std::move(done))); }
void rtnl::addresses(records_done done) { submit(records_request(request::ADDRESSES, std::move(done))); }
void rtnl::neighbours(records_done done) { submit(records_request(request::NEIGHBOURS, std::move(done))); }
void rtnl::rules(records_done done) { submit(records_request(request::RULES, std::move(done))); }
void rtnl::nexthops(records_done done) { submit(records_request(request::NEXTHOPS, std::move(done))); }

void rtnl::routes(route_filter filter, records_done done) {
  auto r = records_request(request::ROUTES, std::move(done));
  r->filter = filter;
  submit(std::move(r));
}

void rtnl::route_get(uint8_t family, const uint8_t *address, records_done done) {
  auto r = records_request(request::ROUTE_GET, std::move(done));
  r->family = family;
  memcpy(r->address, address, family == 6 ? 16 : 4);
  submit(std::move(r));
}

void rtnl::neighbour(uint8_t family, const uint8_t *address, std::string dev, records_done done) {
  auto r = records_request(request::NEIGHBOUR_GET, std::move(done));
  r->family = family;
  memcpy(r->address, address, family == 6 ? 16 : 4);
  r->dev = std::move(dev);
  submit(std::move(r));
}

void rtnl::count_routes(counts_done done) {
  auto r = std::make_unique<request>();
  r->kind = request::COUNT_ROUTES;
  r->counts_cb = std::move(done);
  submit(std::move(r));
}

rt_stats rtnl::stats() const {
  rt_stats s;
  s.events = counters_.events.load(std::memory_order_relaxed);
  s.enobufs = counters_.enobufs.load(std::memory_order_relaxed);
  s.resyncs = counters_.resyncs.load(std::memory_order_relaxed);
  s.errors = counters_.errors.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(counts_mu_);
  s.routes = counts_;
  s.routes_synced = routes_synced_;
  return s;
}

void rtnl::close() {
  for (auto &r : thread_.stop()) r->fail_with(failure{ERR_RTNL_CLOSED, "rtnl: closed", 0});
  st_.reset();
}

void rtnl::run(std::shared_ptr<std::promise<void>> started) {
  state &s = *st_;

  try {
    if (!opts_.netns.empty()) nl::enter_netns(opts_.netns, "rtnl", ERR_RTNL);
    auto open_socket = [](uint32_t asked, int fallback) {
      return nl::open_socket(NETLINK_ROUTE, "NETLINK_ROUTE", asked, fallback, "rtnl", ERR_RTNL);
    };
    s.req = open_socket(0, REQUEST_RCVBUF);
    int one = 1;
    int fd = mnl_socket_get_fd(s.req);
    // The kernel filters route dumps by the request's table and protocol only when asked
    // to check requests strictly; without it a filtered dump is a full one.
    if (setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof(one)) < 0)
      throw dp_error(ERR_RTNL, std::string("rtnl: NETLINK_GET_STRICT_CHK: ") + strerror(errno), errno);
    setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));

    s.ev = open_socket(opts_.rcvbuf, EVENT_RCVBUF_DEFAULT);
    for (unsigned group : EVENT_GROUPS)
      if (setsockopt(mnl_socket_get_fd(s.ev), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0)
        throw dp_error(ERR_RTNL, "rtnl: cannot join event group " + std::to_string(group) + ": " + strerror(errno), errno);
  } catch (...) {
    started->set_exception(std::current_exception());
    return;
  }
  started->set_value();

  auto publish_counts = [&] {
    std::lock_guard<std::mutex> lock(counts_mu_);
    counts_ = s.counts;
    routes_synced_ = true;
  };

  // Joined before the dumps: every change after them arrives as an event, and applying an
  // event the dump already holds changes nothing (a set of keys), so the counts converge.
  failure f = s.dump_links(nullptr);
  if (!f) f = s.recount();
  if (f) {
    counters_.errors.fetch_add(1, std::memory_order_relaxed);
    s.resync_pending = true;
  } else {
    publish_counts();
  }

  std::vector<record> batch;
  auto flush_events = [&] {
    if (batch.empty()) return;
    counters_.events.fetch_add(batch.size(), std::memory_order_relaxed);
    // Once events were lost, the resync to come stands for these too: a consumer that cannot
    // keep up is not handed more batches to fall further behind with.
    if (s.resync_pending) {
      batch.clear();
      return;
    }
    const auto &in_flight = opts_.events_in_flight;
    if (in_flight && in_flight->load(std::memory_order_acquire) >= EVENT_BATCHES_IN_FLIGHT) {
      // The consumer is behind: this batch grows until it catches up (the loop offers it
      // again soon), or is dropped for a resync once it is too large to be worth keeping.
      if (batch.size() > EVENT_BACKLOG_MAX) {
        batch.clear();
        s.resync_pending = true;
      }
      return;
    }
    if (in_flight) in_flight->fetch_add(1, std::memory_order_acq_rel);
    if (!opts_.deliver_events(std::move(batch))) {
      if (in_flight) in_flight->fetch_sub(1, std::memory_order_acq_rel);
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      s.resync_pending = true;
    }
    batch = {};
  };
  auto read_events = [&] {
    bool any = s.ev_dgrams.drain(
        mnl_socket_get_fd(s.ev),
        [&](const nlmsghdr *nlh) {
          record r;
          if (!decode(nlh, r, s.names)) return;
          s.apply(r);
          batch.push_back(std::move(r));
        },
        [&] {
          counters_.enobufs.fetch_add(1, std::memory_order_relaxed);
          s.resync_pending = true;
        },
        [&] {
          if (batch.size() >= EVENT_BATCH_MAX) flush_events();
        });
    flush_events();
    if (any) publish_counts();
  };
  auto recount = [&] {
    if (s.recount()) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      s.resync_pending = true;
    }
    publish_counts();
  };

  auto resync = [&] {
    s.resync_pending = false;
    rt::resync snapshot;
    failure f = s.recount();
    if (!f) f = s.dump_links(&snapshot.links);
    if (!f) f = s.dump_neighbours(&snapshot.neighbours);
    if (f) {
      counters_.errors.fetch_add(1, std::memory_order_relaxed);
      s.resync_pending = true;
      return;
    }
    publish_counts();
    snapshot.routes = s.counts;
    snapshot.enobufs = counters_.enobufs.load(std::memory_order_relaxed);
    if (opts_.deliver_resync(std::move(snapshot)))
      counters_.resyncs.fetch_add(1, std::memory_order_relaxed);
    else
      s.resync_pending = true;
  };

  auto serve = [&](request &r) {
    std::vector<record> out;
    failure f;
    switch (r.kind) {
      case request::LINKS:
        f = s.dump_links(&out);
        break;
      case request::ADDRESSES:
        put_dump<ifaddrmsg>(s.request.data(), RTM_GETADDR);
        f = s.dump_records("rtnl address dump", &out);
        break;
      case request::NEIGHBOURS:
        f = s.dump_neighbours(&out);
        break;
      case request::NEIGHBOUR_GET: {
        // One entry (neigh_get()), not the table: resolving a next hop polls this.
        unsigned index = if_nametoindex(r.dev.c_str());
        if (index == 0) break;  // no such interface: no entry
        nlmsghdr *nlh = put_request(s.request.data(), RTM_GETNEIGH, 0);
        auto *ndm = static_cast<ndmsg *>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
        ndm->ndm_family = r.family == 6 ? AF_INET6 : AF_INET;
        ndm->ndm_ifindex = static_cast<int>(index);
        mnl_attr_put(nlh, NDA_DST, r.family == 6 ? 16 : 4, r.address);
        f = s.exchange("rtnl neighbour get", [&](const nlmsghdr *m) {
          record rec;
          if (decode(m, rec, s.names) && rec.kind == record_kind::neigh) out.push_back(std::move(rec));
        });
        if (f.err == ENOENT) f = {};
        break;
      }
      case request::ROUTES:
        f = s.dump_routes(r.filter, [&](const record &rec) { out.push_back(rec); });
        // A table that does not exist (the kernel creates them with their first route)
        // holds no routes.
        if (f.err == ENOENT && r.filter.table != 0) f = {};
        break;
      case request::RULES:
        for (uint8_t af : {AF_INET, AF_INET6}) {
          put_dump<fib_rule_hdr>(s.request.data(), RTM_GETRULE)->family = af;
          if ((f = s.dump_records("rtnl rule dump", &out))) break;
        }
        break;
      case request::NEXTHOPS:
        put_dump<nhmsg>(s.request.data(), RTM_GETNEXTHOP);
        f = s.dump_records("rtnl nexthop dump", &out);
        break;
      case request::ROUTE_GET: {
        nlmsghdr *nlh = put_request(s.request.data(), RTM_GETROUTE, 0);
        auto *rtm = static_cast<rtmsg *>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
        rtm->rtm_family = r.family == 6 ? AF_INET6 : AF_INET;
        rtm->rtm_dst_len = r.family == 6 ? 128 : 32;
        // IPv4 tells the table the route was found in, as `ip route get` shows; IPv6
        // refuses the flag (inet6_rtm_valid_getroute_req()) and always tells it.
        if (r.family == 4) rtm->rtm_flags = RTM_F_LOOKUP_TABLE;
        mnl_attr_put(nlh, RTA_DST, r.family == 6 ? 16 : 4, r.address);
        f = s.exchange("rtnl route get", [&](const nlmsghdr *m) {
          record rec;
          if (m->nlmsg_type == RTM_NEWROUTE && decode_route(m, rec, s.names, true)) out.push_back(std::move(rec));
        });
        // What `ip route get` answers when the kernel would not forward: no route, or an
        // unreachable, prohibit or blackhole one (EINVAL, for IPv4).
        if (f && (f.err == ENETUNREACH || f.err == EHOSTUNREACH || f.err == EACCES || f.err == EINVAL)) f = {};
        if (!out.empty() && (out[0].type == RTN_UNREACHABLE || out[0].type == RTN_PROHIBIT || out[0].type == RTN_BLACKHOLE ||
                             out[0].type == RTN_THROW))
          out.clear();
        break;
      }
      case request::COUNT_ROUTES:
        // The caller's changes are complete, flushes included.
        if (s.recount_pending) recount();
        r.counts_cb(s.counts, {});
        return;
    }
    if (f) counters_.errors.fetch_add(1, std::memory_order_relaxed);
    r.records_cb(f ? std::vector<record>{} : std::move(out), std::move(f));
  };

  for (;;) {
    pollfd fds[2] = {{thread_.wake_fd(), POLLIN, 0}, {mnl_socket_get_fd(s.ev), POLLIN, 0}};
    int timeout = s.resync_pending ? RESYNC_RETRY_MS : !batch.empty() ? EVENT_HOLD_RETRY_MS : -1;
    if (s.recount_pending) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(s.recount_at - std::chrono::steady_clock::now()).count();
      int wait = static_cast<int>(std::max<int64_t>(0, left)) + 1;
      timeout = timeout < 0 ? wait : std::min(timeout, wait);
    }
    int pr = poll(fds, 2, timeout);
    if (pr < 0 && errno != EINTR) break;
    // Events and a pending resync first: a count request answers with every change read so far.
    read_events();
    if (s.resync_pending) resync();
    if (s.recount_pending && std::chrono::steady_clock::now() >= s.recount_at) recount();
    nl::request_thread<request>::queue work;
    if (!thread_.take(work)) break;
    for (auto &r : work) {
      try {
        serve(*r);
      } catch (const std::exception &e) {
        counters_.errors.fetch_add(1, std::memory_order_relaxed);
        r->fail_with(failure{ERR_RTNL, std::string("rtnl: ") + e.what(), 0});
      }
    }
  }
}

}  // namespace fg::rt
