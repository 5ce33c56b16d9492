// The concurrency stress tests under ThreadSanitizer: the fast path's flowtable, flow
// management and process_burst, built with -fsanitize=thread (Makefile), must run without a
// single report. Driven by tsan.test.ts; exits non-zero when a test's own checks fail.
#include <cstdio>
#include <exception>

#include "stress/stress.h"

int main() {
  using namespace fg::stress;
  try {
    // Buckets loaded to 93 %, so that inserts displace keys to their secondary bucket.
    flowtable_result ft = flowtable_concurrency({2048, 700, 250, 150, 2, 128});
    std::printf("flowtable: lookups %llu churn hits %llu stable misses %llu reused %llu spilled %u\n",
                static_cast<unsigned long long>(ft.lookups), static_cast<unsigned long long>(ft.churn_hits),
                static_cast<unsigned long long>(ft.stable_misses), static_cast<unsigned long long>(ft.reused),
                ft.max_spilled);
    if (ft.lookups == 0 || ft.churn_hits == 0 || ft.max_spilled == 0 || ft.stable_misses != 0 || ft.reused != 0)
      return 1;
    churn_result ch = flow_churn({32, 8000, 3});
    std::printf("churn: bursts %llu forwarded %llu wrong %llu clashes %llu reaped %llu\n",
                static_cast<unsigned long long>(ch.bursts), static_cast<unsigned long long>(ch.forwarded),
                static_cast<unsigned long long>(ch.wrong_mac), static_cast<unsigned long long>(ch.clashes),
                static_cast<unsigned long long>(ch.reaped));
    if (ch.forwarded == 0 || ch.clashes == 0 || ch.reaped == 0 || ch.wrong_mac != 0) return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
