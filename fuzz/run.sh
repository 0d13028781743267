#!/usr/bin/env bash
# Runs every fuzz target from its checked-in corpus for a bounded time; any crash fails.
#   fuzz/run.sh              # 30 s each (what CI runs)
#   SECONDS_EACH=1800 RUNS=10000000 fuzz/run.sh connection   # a long run of one target
# New inputs go to target/fuzz-corpus/<target>, so the checked-in seeds stay small.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${SECONDS_EACH:-30}
runs=${RUNS:-0}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(http_request ws_handshake ws_frame ws_session client_message broker_ops connection resp mirror dns)
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in "${targets[@]}"; do
  work="$root/target/fuzz-corpus/$t"
  mkdir -p "$work"
  extra=()
  case $t in
    http_request|ws_handshake|connection) extra=(-dict=fuzz/dict/http.dict) ;;
    client_message) extra=(-dict=fuzz/dict/json.dict) ;;
    resp) extra=(-dict=fuzz/dict/resp.dict) ;;
  esac
  # broker_ops: 200 operations reach every state of its 3 topics x 6 connections x 5-slot rings;
  # longer inputs only slow it (it checks both indexes in full after every operation).
  [ "$t" = broker_ops ] && extra=(-max_len=600)
  limit=(-max_total_time="$seconds")
  [ "$runs" -gt 0 ] && limit+=(-runs="$runs")
  log="$root/target/fuzz-$t.log"
  echo "fuzz: $t for ${seconds}s"
  if ! cargo fuzz run -O "$t" "$work" "fuzz/corpus/$t" -- \
      "${limit[@]}" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED; the crashing input is in fuzz/artifacts/$t/"
    exit 1
  fi
  echo "fuzz: $t ok: $(grep -E '^#[0-9]+.*(cov|ft):' "$log" | tail -1 | sed 's/ *corp.*//') $(grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" | tr '\n' ' ')"
done
