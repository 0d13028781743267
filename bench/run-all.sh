#!/usr/bin/env bash
# The measurements quoted in README.md "Performance", as one report: every standard scenario,
# one process each, into $OUT (default target/bench-report): results.jsonl (one JSON line per
# run, with its exact command line), report.html (self-contained, with plots) and plots/*.svg.
# The two plots the README shows are copied to docs/bench/. Takes about six minutes on a 2-core
# machine. Extra arguments go to the report, e.g. --baseline path/to/other/pubsub to measure
# another build interleaved with this one and compare them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-target/bench-report}
cargo build --release --quiet
(cd bench && cargo build --release --quiet)
bench/target/release/pubsub-bench report --out "$out" "$@"
mkdir -p docs/bench
cp "$out/plots/latency-latency-rate-2000-duration-10.svg" docs/bench/latency-2000-per-sec.svg
cp "$out/plots/server-cpu-per-delivery-by-subscribers-128-payload-bytes.svg" docs/bench/cpu-by-subscribers.svg
echo "report in $out/report.html; README plots in docs/bench/" >&2
