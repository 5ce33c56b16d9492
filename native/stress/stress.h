// Concurrency stress tests of the fast path's lock-free structures: real lookups (and the
// real process_burst) on reader threads against the real control-thread code, without EAL.
// No N-API here: the addon's test-only exports run them (native/addon/testing.cc), and so
// does a standalone ThreadSanitizer build (test/tsan/), which must see no data race.
#pragma once

#include <cstdint>

namespace fg::stress {

// Readers look up keys that are always present and keys that the control thread inserts
// and removes in rounds (with displacement under load and RCU-deferred reuse of entries).
struct flowtable_options {
  uint32_t capacity;
  uint32_t stable;
  uint32_t churn;
  uint32_t rounds;
  unsigned readers;   // 1..8
  uint32_t buckets;   // 0: sized for the capacity
};

struct flowtable_result {
  uint64_t stable_misses;  // a key that was always present was not found
  uint64_t reused;         // an entry found for a key held another key's number
  uint64_t lookups;
  uint64_t churn_hits;
  uint32_t insert_failures;
  uint32_t max_spilled;
};

flowtable_result flowtable_concurrency(const flowtable_options &o);

// A forwarding thread runs process_burst() on packets of every flow while the control
// thread churns the flows through flow_manager: removes and adds (each flow with next hops
// of its own, so that a freed adjacency is soon reused for another flow), pairs whose
// reply clashes with an installed key (the add's failure path after the orig direction was
// published), and reaps. Every forwarded packet must carry its own flow's MAC addresses.
struct churn_options {
  uint32_t flows;   // distinct connections, about half installed at a time; 1..4096
  uint32_t rounds;  // remove + add steps of the control thread
  uint32_t seed;
};

struct churn_result {
  uint64_t bursts;       // process_burst calls of the forwarding thread
  uint64_t forwarded;    // packets forwarded
  uint64_t wrong_mac;    // forwarded with MAC addresses that are not their flow's
  uint64_t removed;      // pairs removed by handle
  uint64_t added;        // pairs added
  uint64_t clashes;      // adds refused because the reply key was installed (as intended)
  uint64_t reaped;       // pairs reaped
};

churn_result flow_churn(const churn_options &o);

}  // namespace fg::stress
