#!/usr/bin/env bash
# Proves the container image's assumptions without a Docker engine: builds the binary exactly as
# the Dockerfile does (static, stripped), puts it alone in an empty directory, and runs it there
# under chroot as the image's unprivileged user, on port 8080. Then /health answers, the
# --healthcheck mode exits 0 (and 1 once the server is gone), and SIGTERM exits 0.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
  cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu --bin pubsub \
  --target-dir target/static
bin=target/static/x86_64-unknown-linux-gnu/release/pubsub
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
  echo "static: the binary is dynamically linked"; ldd "$bin"; exit 1
fi
echo "static: $(stat -c %s "$bin") bytes, $(file -b "$bin" | cut -d, -f1-3)"

jail=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$jail"' EXIT
chmod 755 "$jail"
cp "$bin" "$jail/pubsub"
echo "static: root holds only: $(cd "$jail" && find . -mindepth 1 | tr '\n' ' ')"
port=${STATIC_PORT:-8080}
chroot=$(command -v chroot)
env -i PORT="$port" "$chroot" --userspec=65532:65532 "$jail" /pubsub 2>"$root/target/static/server.log" &
server=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
body=$(curl -sf "http://127.0.0.1:$port/health")
echo "static: /health -> $body"
echo "$body" | grep -q '"uptime_sec"'
env -i PORT="$port" "$chroot" --userspec=65532:65532 "$jail" /pubsub --healthcheck
echo "static: --healthcheck exits 0 while serving"
kill -TERM $server
wait $server
echo "static: SIGTERM -> exit 0"
if env -i PORT="$port" "$chroot" --userspec=65532:65532 "$jail" /pubsub --healthcheck 2>/dev/null; then
  echo "static: --healthcheck passed with no server"; exit 1
fi
echo "static: --healthcheck exits 1 with no server"

# Cluster mode in the empty root: REDIS_URL's host found through /etc/hosts, then through a
# nameserver at Docker's address (127.0.0.11) named in /etc/resolv.conf, as Docker writes both.
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis=$!
python3 "$root/tests/static/dns.py" 127.0.0.11 redis.cluster.test 127.0.0.1 >"$jail.dns" &
dns=$!
trap 'kill $server $redis $dns 2>/dev/null || true; rm -rf "$jail" "$jail.dns"' EXIT
for _ in $(seq 50); do grep -q ready "$jail.dns" 2>/dev/null && break; sleep 0.1; done
mkdir -p "$jail/etc"
printf '127.0.0.1 localhost\n127.0.0.1 redis-by-hosts\n' >"$jail/etc/hosts"
printf 'nameserver 127.0.0.11\noptions ndots:0\n' >"$jail/etc/resolv.conf"
chmod 755 "$jail/etc" && chmod 644 "$jail/etc/hosts" "$jail/etc/resolv.conf"
for host in redis-by-hosts redis.cluster.test; do
  env -i PORT="$port" REDIS_URL="redis://$host:$redis_port" INSTANCE_ID=static \
    "$chroot" --userspec=65532:65532 "$jail" /pubsub 2>>"$root/target/static/server.log" &
  server=$!
  body=""
  for _ in $(seq 100); do
    body=$(curl -s "http://127.0.0.1:$port/health" || true)
    echo "$body" | grep -q '"engine":"up"' && break
    sleep 0.1
  done
  echo "static: REDIS_URL=redis://$host:$redis_port -> /health $body"
  echo "$body" | grep -q '"engine":"up"' || { echo "static: not in step with Redis"; tail -5 "$root/target/static/server.log"; exit 1; }
  kill -TERM $server
  wait $server
done
echo "static: 2 passed, 0 failed"
