#!/usr/bin/env bash
# CPU profiles of services A and B under the end-to-end benchmark, one flame graph per
# protocol, written to benches/results/flame-<scenario>-<protocol>.svg (with FOLDED=DIR,
# the folded stacks too, for `inferno-diff-folded` between two runs; kernel frames end
# in `_[k]`).
#
#   benches/profile.sh                       # mesh (STRICT mTLS), http1 http2 grpc
#   SCENARIO=mesh-plain benches/profile.sh http1
#   RATE=2000 SECONDS_=6 benches/profile.sh grpc
#
# Needs `perf` and inferno (`cargo install inferno`). Builds the e2e binary in release
# (debug = 1 in the workspace profile, so frames have names), runs it at a fixed rate,
# skips the first seconds (start-up and the pool's first connections), then samples both
# service processes with DWARF call graphs.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${SCENARIO:-mesh}
RATE=${RATE:-2000}
SAMPLE=${SECONDS_:-6}
FREQ=${FREQ:-799}
protocols=("$@")
[ "${#protocols[@]}" -gt 0 ] || protocols=(http1 http2 grpc)

for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool not found" >&2; exit 2; }
done

cargo build --release -p mesh-benches --bin e2e
bin=${CARGO_TARGET_DIR:-target}/release/e2e
out=benches/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for proto in "${protocols[@]}"; do
  "$bin" --rates "$RATE" --protocols "$proto" --scenarios "$SCENARIO" --no-scale \
    --duration $((SAMPLE + 6)) --max-duration 1 --out "$tmp/e2e.json" >"$tmp/e2e.log" 2>&1 &
  runner=$!
  # Wait for both services, then past the warm-up and the first seconds at RATE.
  pids=""
  for _ in $(seq 1 100); do
    pids=$(pgrep -f "e2e serve-" | paste -sd, || true)
    [ "$(tr ',' '\n' <<<"$pids" | grep -c .)" -ge 2 ] && break
    sleep 0.1
  done
  sleep 3
  perf record -F "$FREQ" --call-graph dwarf,16384 -p "$pids" -o "$tmp/perf.data" \
    -- sleep "$SAMPLE" >/dev/null 2>&1
  wait "$runner" || true
  folded=${FOLDED:-$tmp}/flame-$SCENARIO-$proto.folded
  perf script -i "$tmp/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$folded"
  inferno-flamegraph --title "$SCENARIO $proto at $RATE req/s: services A and B" \
    --minwidth 0.2 <"$folded" >"$out/flame-$SCENARIO-$proto.svg"
  grep -E "^\| $proto \| $SCENARIO \| $RATE" "$tmp/e2e.md" || true
  echo "profile.sh: wrote $out/flame-$SCENARIO-$proto.svg" >&2
done
