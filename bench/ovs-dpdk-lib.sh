# Functions of bench/ovs-dpdk.sh that read the machine rather than drive OVS, in a file of
# their own so that test/bench/ovs-dpdk.test.ts can source them and feed them made-up input.
# Sourced: sets no shell options.

# The CPUs (Cpus_allowed_list) of the PMD threads among the threads in TASK_DIR
# (/proc/PID/task), sorted and space-separated on one line; nothing when there is none.
# Succeeds whatever the threads are: a thread that is not a PMD thread is no failure. (The
# loop used to end in `grep -q ... && awk ...`, so when the last thread was not a PMD thread
# the loop, and under set -e and pipefail the script, failed without a word.) A thread that
# ends while it is read is skipped: the caller checks the CPUs it gets.
pmd_thread_cpus() {
  local task
  for task in "$1"/*; do
    if grep -q '^pmd' "$task/comm" 2>/dev/null; then
      awk '/^Cpus_allowed_list:/ {print $2}' "$task/status" 2>/dev/null || true
    fi
  done | sort -u | paste -sd' '
}

# The ERR trap: every failure that stops the script says where and what, instead of an
# exit status alone (`trap 'report_failure "$?" "$LINENO" "$BASH_COMMAND"' ERR`, with set -E
# so that it also fires inside functions and command substitutions).
report_failure() {
  printf 'ovs-dpdk.sh: line %s: `%s` failed with exit status %s\n' "$2" "$3" "$1" >&2
}
