// DPDK's own log lines (EAL, PMDs) in flowgate's log format: one logfmt line per message on
// stderr, like the TypeScript logger's (lib/log.ts), so that journald and log shippers see
// one format and a PMD's complaint carries a level that can be filtered on.
#pragma once

namespace fg {

// Send DPDK's log stream through the logfmt writer. Call before rte_eal_init().
void route_dpdk_log();

}  // namespace fg
