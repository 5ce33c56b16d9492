#!/usr/bin/env bash
# Regenerates bench/RESULTS.md, bench/results.json and bench/results.svg: builds the
# TypeScript, then runs every scenario at 1k/100k/1M flows with testpmd in the same runs
# and the OVS-DPDK comparison (lib/bench/results.ts; about 45 minutes on two cores).
#
#   bench/results.sh [--seconds S] [--warmup S] [--repeat N] [--no-ovs] [--render-only]
set -euo pipefail
cd "$(dirname "$0")/.."
# tsc emits even when files elsewhere in the tree have type errors; say so rather than stop.
node_modules/.bin/tsc -p . >&2 || echo "results.sh: tsc reported errors (above); using what it emitted" >&2
exec node dist/lib/bench/results.js "$@"
