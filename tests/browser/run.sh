#!/usr/bin/env bash
# The console's end-to-end test in headless Chromium. Installs Debian's chromium and the
# playwright-core driver if missing, starts the release build with an API key, runs the test,
# and leaves screenshots in target/browser/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/browser"
mkdir -p "$out"
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm install --no-audit --no-fund --silent)
fi
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
key="browser-test-key"
PORT=0 HOST=127.0.0.1 LOG_LEVEL=${LOG_LEVEL:-info} API_KEY=$key "$root/target/release/pubsub" 2>"$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(grep -o '"addr":"[^"]*"' "$out/server.log" | head -1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "browser: the server did not start"; cat "$out/server.log"; exit 1; }
PUBSUB_URL="http://$addr" PUBSUB_API_KEY=$key SCREENSHOT_DIR="$out" node "$here/console.test.mjs"
