#!/usr/bin/env bash
# Runs every fuzz target, one after the other (never two at once: the machine is shared),
# each for RUNS inputs or MAX_TIME seconds, whichever ends first, and writes a summary to
# fuzz/results.md: inputs run, execs/s, coverage, crashes.
#
#   fuzz/run.sh                      # all targets, 10 million inputs each, no time limit
#   MAX_TIME=600 fuzz/run.sh         # ... at most 10 minutes each
#   fuzz/run.sh spiffe_id trace_b3   # some targets (results.md then lists only those)
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

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

for t in "${targets[@]}"; do
  nice -n "$NICE" cargo +nightly fuzz build "${FUZZ_FLAGS[@]}" "$t"
done
bin_dir=target/x86_64-unknown-linux-gnu/release

mkdir -p logs
rows=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="logs/$t.log"
  echo "== $t ($(date -u +%H:%M:%S))" >&2
  status=0
  nice -n "$NICE" "$bin_dir/$t" "corpus/$t" "seeds/$t" \
    -runs="$RUNS" -max_total_time="$MAX_TIME" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  if [ -z "$runs" ]; then runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last"); fi
  if [ -z "$eps" ]; then eps=$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$last"); fi
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9A-Za-z]+).*/\1/p' <<<"$last")
  crashes=$(find "artifacts/$t" -type f | wc -l)
  secs=$(( ${runs:-0} / (${eps:-1} > 0 ? ${eps:-1} : 1) ))
  verdict="ok"
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    verdict="**crash** (exit $status): $(find "artifacts/$t" -type f -printf '%f ' | head -c 200)"
  fi
  rows+=("| \`$t\` | ${runs:-?} | ${eps:-?} | ~${secs} s | ${cov:-?} | ${ft:-?} | ${corp:-?} | $verdict |")
  echo "   runs=${runs:-?} exec/s=${eps:-?} cov=${cov:-?} ft=${ft:-?} -> $verdict" >&2
done

{
  echo "# Fuzzing results"
  echo
  echo "Written by \`fuzz/run.sh\` on $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'),"
  echo "$(nproc)-core machine shared with other work (nice $NICE, one target at a time)."
  echo "Limits per target: $RUNS inputs$([ "$MAX_TIME" -gt 0 ] && echo " or $MAX_TIME s, whichever came first")."
  echo "Build: \`cargo +nightly fuzz build ${FUZZ_FLAGS[*]}\` (optimized, debug assertions and"
  echo "overflow checks on, no sanitizer). Each run starts from \`seeds/<target>\` plus the"
  echo "working corpus \`corpus/<target>\` of earlier runs."
  echo
  echo "| target | inputs run | execs/s | time | coverage (edges) | features | corpus (units/size) | result |"
  echo "|---|---:|---:|---:|---:|---:|---|---|"
  printf '%s\n' "${rows[@]}"
} >results.md
echo "wrote fuzz/results.md" >&2
