#!/usr/bin/env bash
# The control-plane benchmarks behind docs/benchmarks.md: translator micro-benchmarks,
# xds-bench (simulated proxies) over a matrix of mesh sizes, and apply-bench (one real
# Envoy with 10,000 clusters). Writes JSON results and a markdown table to $OUT.
#
#   scripts/bench.sh            # the matrix in docs/benchmarks.md (~25 minutes on 2 cores)
#   scripts/bench.sh quick      # two small rows, to check the tooling (~2 minutes)
#   scripts/bench.sh dataplane  # the data path: rudder-proxy against Envoy and the direct
#                               # floor, then config apply and memory (~20 minutes)
#
# Not part of the tests: numbers from a shared, noisy machine are compared as ratios
# within one run, never asserted.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${1:-full}"
out="${OUT:-$root/target/bench}"
mkdir -p "$out"
scripts/setup.sh
cargo build --release --quiet -p xds-server -p conformance -p testbed --bins

if [[ "$mode" == dataplane ]]; then
  echo "== dataplane-bench"
  target/release/dataplane-bench --json "$out/dataplane.json" | tee "$out/dataplane.md"
  echo "== apply-bench, both proxies"
  target/release/apply-bench --clusters 10,1000,10000 --reps 3 --json "$out/apply.json" | tee "$out/apply.md"
  exit 0
fi

xb() {
  local name="$1"
  shift
  echo "== xds-bench $name: $*"
  target/release/xds-bench "$@" --json "$out/$name.json"
}

if [[ "$mode" == quick ]]; then
  xb s100-p100-delta --services 100 --proxies 100 --changes 3 --floor
  xb s100-p100-sotw --services 100 --proxies 100 --changes 3 --stream sotw
else
  cargo bench --quiet -p translator -- --warm-up-time 1 --measurement-time 3 | tee "$out/criterion.txt"
  xb s100-p100-delta --services 100 --proxies 100 --changes 10 --floor
  xb s1000-p1000-delta --services 1000 --proxies 1000 --changes 10 --floor --storm
  xb s1000-p1000-sotw --services 1000 --proxies 1000 --changes 10 --stream sotw --floor
  xb s1000-p1000-delta-fullresend --services 1000 --proxies 1000 --changes 5 --full-resend --workloads endpoint
  xb s1000-p2000-delta --services 1000 --proxies 2000 --changes 10 --floor
  xb s5000-p1000-delta --services 5000 --proxies 1000 --changes 5 --floor --workloads endpoint,rollout
  xb s1000e100-p1000-delta --services 1000 --endpoints 100 --proxies 1000 --changes 5 --floor --workloads endpoint,rollout
  xb s1000-p5000-delta --services 1000 --proxies 5000 --changes 5 --floor --workloads endpoint
  echo "== apply-bench envoy delta"
  target/release/apply-bench --proxy envoy --clusters 10000 --changes 40 --json "$out/envoy-delta.json"
  echo "== apply-bench envoy sotw"
  target/release/apply-bench --proxy envoy --clusters 10000 --changes 40 --stream sotw --json "$out/envoy-sotw.json"
fi
python3 scripts/bench_table.py "$out" | tee "$out/table.md"
