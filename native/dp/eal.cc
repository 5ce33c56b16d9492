#include "eal.h"

#include <atomic>
#include <cstring>

#include <rte_eal.h>
#include <rte_errno.h>

#include "error.h"
#include "log.h"

namespace fg {
namespace {

enum eal_state : int { EAL_NONE, EAL_RUNNING, EAL_FINISHED };
// Process-wide, not per addon instance: worker_threads may load the addon again.
std::atomic<int> state{EAL_NONE};

}  // namespace

void eal_init(const std::vector<std::string> &args) {
  int expected = EAL_NONE;
  if (!state.compare_exchange_strong(expected, EAL_RUNNING)) {
    if (expected == EAL_RUNNING)
      throw dp_error(ERR_EAL_ALREADY_INITIALIZED,
                     "DPDK EAL is already initialised in this process; EAL can be initialised "
                     "once per process (start another process for another dataplane)");
    throw dp_error(ERR_EAL_FINISHED,
                   "DPDK EAL was initialised and cleaned up in this process and cannot be "
                   "initialised again (start another process)");
  }
  // rte_eal_init permutes argv and keeps pointers into it: give it storage that lives on.
  static std::vector<std::string> storage;
  static std::vector<char *> argv;
  storage = args;
  argv.clear();
  for (auto &a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  route_dpdk_log();
  if (rte_eal_init(static_cast<int>(storage.size()), argv.data()) < 0) {
    int err = rte_errno;
    // EAL keeps some state after a failed init and refuses a second attempt (EALREADY).
    state = EAL_FINISHED;
    std::string joined;
    for (const auto &a : args) joined += (joined.empty() ? "" : " ") + a;
    throw dp_error(ERR_EAL_INIT,
                   std::string("DPDK EAL initialisation failed: ") + rte_strerror(err) +
                       " (arguments: " + joined + ")",
                   err);
  }
}

void eal_cleanup() {
  int expected = EAL_RUNNING;
  if (state.compare_exchange_strong(expected, EAL_FINISHED)) rte_eal_cleanup();
}

}  // namespace fg
