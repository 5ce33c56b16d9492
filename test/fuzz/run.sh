#!/usr/bin/env bash
# Fuzz the fast path: build the libFuzzer target if it is missing or stale, then run it on
# the committed seed corpus plus the working corpus it grows in .cache/fuzz/corpus.
#
#   npm run fuzz -- --seconds N        fuzz for N seconds (default 60)
#   npm run fuzz -- --runs N           fuzz for N executions instead
#   npm run fuzz -- ... -- -flag=value more libFuzzer flags (e.g. -jobs, -seed)
#   test/fuzz/run.sh --reproduce FILE  run one input (a crash file) and say what happened
#
# A finding (crash, sanitizer report, failed oracle) stops the run with a non-zero status
# and leaves the input in .cache/fuzz/artifacts/. Run it as `nice -n 19` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=60
runs=
reproduce=
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --reproduce) reproduce="$2"; shift 2 ;;
    --) shift; extra+=("$@"); break ;;
    *) echo "run.sh: unknown argument '$1' (expected --seconds N, --runs N, --reproduce FILE or -- libFuzzer flags)" >&2; exit 2 ;;
  esac
done

out=.cache/fuzz
make -s -C test/fuzz OUT="$PWD/$out" >&2
if [ -n "$reproduce" ]; then
  FG_FUZZ_TRACE=1 exec "$out/pipeline_fuzz" "$reproduce"
fi
mkdir -p "$out/corpus" "$out/artifacts"
limit=(-max_total_time="$seconds")
[ -n "$runs" ] && limit=(-runs="$runs")
# -timeout: a burst takes microseconds; one that runs for seconds is a hang, and a finding.
exec "$out/pipeline_fuzz" "${limit[@]}" -max_len=4096 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "${extra[@]}" "$out/corpus" test/fuzz/corpus
