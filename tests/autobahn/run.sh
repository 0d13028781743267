#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client against the server's /echo route and fails on any
# case that is not OK (or INFORMATIONAL / UNIMPLEMENTED for the compression groups left out).
#
#   tests/autobahn/run.sh            # all cases but 12.* and 13.* (permessage-deflate)
#   CASES='["1.*","2.*"]' tests/autobahn/run.sh
#
# The suite is Python 2 code: it is installed once into a virtualenv (AUTOBAHN_VENV).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${AUTOBAHN_VENV:-$root/target/autobahn-venv}
py27=${PYTHON27:-/root/.pyenv/versions/2.7.18/bin/python2.7}
port=${AUTOBAHN_PORT:-9001}
cases=${CASES:-'["*"]'}
out=${AUTOBAHN_REPORTS:-$root/target/autobahn-reports}

if [ ! -x "$venv/py27/bin/wstest" ]; then
  echo "autobahn: installing the suite into $venv"
  mkdir -p "$venv"
  python3 -m venv "$venv/py3"
  "$venv/py3/bin/pip" install -q 'virtualenv==20.21.1'
  "$venv/py3/bin/virtualenv" -q -p "$py27" "$venv/py27"
  "$venv/py27/bin/pip" install -q --disable-pip-version-check -r "$here/requirements-py27.txt"
fi

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
rm -rf "$out"
mkdir -p "$out"
# Cases 9.* send messages of up to 16 MiB: the limit is raised to fit them.
HOST=127.0.0.1 PORT=$port ENABLE_ECHO=true MAX_MESSAGE_BYTES=20971520 LOG_LEVEL=warn "$root/target/release/pubsub" 2>"$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done

cat >"$out/fuzzingclient.json" <<JSON
{
  "outdir": "$out/report",
  "servers": [{"agent": "pubsub", "url": "ws://127.0.0.1:$port/echo"}],
  "cases": $cases,
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
(cd "$out" && "$venv/py27/bin/wstest" -m fuzzingclient -s "$out/fuzzingclient.json" >"$out/wstest.log" 2>&1)

kill -TERM $server
wait $server || { echo "autobahn: the server did not exit cleanly"; exit 1; }
trap - EXIT

python3 - "$out/report/index.json" <<'PY'
import json, sys, collections
results = json.load(open(sys.argv[1]))["pubsub"]
groups = collections.OrderedDict()
bad = []
def key(case):
    return [int(p) for p in case.split(".")]
for case in sorted(results, key=key):
    r = results[case]
    group = case.split(".")[0]
    g = groups.setdefault(group, collections.Counter())
    g[r["behavior"]] += 1
    if r["behavior"] not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED") or r["behaviorClose"] not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED"):
        bad.append((case, r["behavior"], r["behaviorClose"]))
for group, counts in groups.items():
    print("autobahn group %-3s %s" % (group, ", ".join("%s=%d" % kv for kv in sorted(counts.items()))))
total = sum(sum(c.values()) for c in groups.values())
for case, behavior, close in bad:
    print("autobahn case %s: %s (close: %s)" % (case, behavior, close))
print("autobahn: %d passed, %d failed" % (total - len(bad), len(bad)))
sys.exit(1 if bad else 0)
PY
