#!/usr/bin/env bash
# The measurements quoted in README.md "Performance": every scenario, one JSON line each, in
# $OUT (default target/bench-results.jsonl). Takes about six minutes on a 2-core machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-target/bench-results.jsonl}
secs=${SECS:-3}
cargo build --release --quiet
(cd bench && cargo build --release --quiet)
b=bench/target/release/pubsub-bench
: >"$out"
run() { echo "+ pubsub-bench $*" >&2; "$b" "$@" --json | tee -a "$out" || echo "(that run reported a failure)" >&2; }
run fanout --duration "$secs"
run fanout --duration "$secs" --server bench/target/release/pubsub-counting
for n in 10 100 10000; do run fanout --subscribers "$n" --duration "$secs"; done
for p in 64 1024 16384 60000; do run fanout --payload "$p" --duration "$secs"; done
run latency --rate 2000 --duration 10
run latency --rate 2000 --duration 10 --busy-poll
run latency --rate 10000 --duration 10
run topics --duration "$secs"
run slow --duration "$secs"
run noisy --duration 5
run send-cost --duration 5
for n in 1000 10000 15000; do run conns --conns "$n"; done
echo "results in $out" >&2
