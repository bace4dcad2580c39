#!/usr/bin/env bash
# Runs fuzz targets one after the other (never two at once: the machine is shared), each
# for RUNS inputs or MAX_TIME seconds, whichever ends first, then writes fuzz/results.md:
# inputs run, execs/s, coverage and crashes of every target's latest run.
#
#   fuzz/run.sh                      # all targets, 10 million inputs each, no time limit
#   MAX_TIME=600 fuzz/run.sh         # ... at most 10 minutes each
#   fuzz/run.sh ads_core istio_yaml  # some targets again (the others keep their last row)
#   fuzz/run.sh --summary            # only rewrite results.md from fuzz/logs/
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Builds with
# optimizations plus debug assertions and overflow checks (-O -a), without a sanitizer
# (-s none): the workspace forbids `unsafe`, so the sanitizer would only slow the search.
# Crashes land in fuzz/artifacts/<target>/; libFuzzer's output in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

RUNS=${RUNS:-10000000}
MAX_TIME=${MAX_TIME:-0}
NICE=${NICE:-19}
FUZZ_FLAGS=(-O -a -s none)
COMMIT=${FUZZ_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}

all_targets=()
for f in fuzz_targets/*.rs; do all_targets+=("$(basename "$f" .rs)"); done

summary_only=false
if [ "${1:-}" = "--summary" ]; then
  summary_only=true
  targets=()
elif [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=("${all_targets[@]}")
fi

bin_dir=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release
mkdir -p logs
if ! $summary_only; then
  for t in "${targets[@]}"; do
    nice -n "$NICE" cargo +nightly fuzz build "${FUZZ_FLAGS[@]}" "$t"
  done
fi

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t ($(date -u +%H:%M:%S))" >&2
  limit="$RUNS inputs"
  [ "$MAX_TIME" -gt 0 ] && limit="$limit or $MAX_TIME s"
  echo "$(date -u +%Y-%m-%d)|$COMMIT|$limit" >"logs/$t.meta"
  status=0
  nice -n "$NICE" "$bin_dir/$t" "corpus/$t" "seeds/$t" \
    -runs="$RUNS" -max_total_time="$MAX_TIME" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    >"logs/$t.log" 2>&1 || status=$?
  echo "$status" >"logs/$t.status"
  echo "   exit $status: $(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)" >&2
done

# One row per target, from its latest log.
row() {
  local t=$1 log="logs/$1.log"
  if [ ! -f "$log" ]; then
    echo "| \`$t\` | not run | | | | | | | |"
    return
  fi
  local runs eps last cov ft corp status crashes secs verdict
  IFS='|' read -r date commit limit <"logs/$t.meta"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  [ -n "$runs" ] || runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  [ -n "$eps" ] || eps=$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$last")
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9A-Za-z]+).*/\1/p' <<<"$last")
  status=$(cat "logs/$t.status" 2>/dev/null || echo '?')
  crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
  secs=$(( ${runs:-0} / (${eps:-0} > 0 ? ${eps:-0} : 1) ))
  verdict="no crash"
  if [ "$status" = 72 ] && [ "$crashes" -eq 0 ]; then
    # libFuzzer's exit code after SIGINT: stopped by hand before its limit.
    verdict="no crash (stopped by hand)"
  elif [ "$status" != 0 ] || [ "$crashes" -gt 0 ]; then
    verdict="**crash** (exit $status, $crashes artifacts)"
  fi
  echo "| \`$t\` | $date, $commit | $limit | ${runs:-?} | ${eps:-?} | ~${secs} s | ${cov:-?} | ${ft:-?} | ${corp:-?} | $verdict |"
}

{
  echo "# Fuzzing results"
  echo
  echo "Written by \`fuzz/run.sh\` from \`fuzz/logs/\`: each target's latest run, one target at a"
  echo "time under \`nice -n $NICE\` on a $(nproc)-core machine shared with other work. Build:"
  echo "\`cargo +nightly fuzz build ${FUZZ_FLAGS[*]}\` (optimized, debug assertions and overflow"
  echo "checks on, no sanitizer). Each run starts from \`seeds/<target>\` plus the working corpus"
  echo "\`corpus/<target>\` that earlier runs grew (not committed). Coverage is libFuzzer's \`cov\`"
  echo "(edges reached) and \`ft\` (features) at the end of the run."
  echo
  echo "| target | run (date, commit) | limit | inputs run | execs/s | time | coverage (edges) | features | corpus (units/size) | result |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---|---|"
  for t in "${all_targets[@]}"; do row "$t"; done
} >results.md
echo "wrote fuzz/results.md" >&2
