#!/usr/bin/env python3
"""Starts the release build with an API key, makes some traffic (REST and a hand-rolled
WebSocket client), and checks /metrics with Prometheus' own text parser: it must parse, carry a
TYPE for every family, and move with the traffic. Then the same in cluster mode, on a
redis-server started here (skipped with a message when none is installed, unless
PUBSUB_REQUIRE_REDIS=1), where the pubsub_cluster_* families must be there and move too."""
import base64, json, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time, urllib.request

from prometheus_client.parser import text_string_to_metric_families

BIN = sys.argv[1]
KEY = "metrics-check-key"


def check(extra_env, cluster):
    env = dict(os.environ, PORT="0", HOST="127.0.0.1", API_KEY=KEY, **extra_env)
    server = subprocess.Popen([BIN], env=env, stderr=subprocess.PIPE, text=True)
    try:
        addr = None
        for line in server.stderr:
            event = json.loads(line)
            if event["event"] == "listening":
                addr = event["addr"]
                break
        host, port = addr.rsplit(":", 1)
        # Whatever it logs from now on is read, so a full pipe never blocks it.
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

        def http(method, path, body=None, key=True):
            req = urllib.request.Request(f"http://{addr}{path}", method=method, data=body and json.dumps(body).encode())
            if key:
                req.add_header("X-API-Key", KEY)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        def families():
            status, text = http("GET", "/metrics")
            assert status == 200, status
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            return fams

        def value(fams, name, **labels):
            for fam in fams.values():
                for s in fam.samples:
                    if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                        return s.value
            raise KeyError(name)

        assert http("GET", "/metrics", key=False)[0] == 401, "metrics must need the key"
        if cluster:
            deadline = time.monotonic() + 20
            while http("GET", "/health")[0] != 200:
                assert time.monotonic() < deadline, "the instance never came up on Redis"
                time.sleep(0.05)
        before = families()
        assert http("POST", "/topics", {"name": "metrics"})[0] == 201

        sock = socket.create_connection((host, int(port)), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-API-Key: {KEY}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

        def send(msg):
            data = json.dumps(msg).encode()
            mask = os.urandom(4)
            hdr = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(data)))
            sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

        def recv_exact(n):
            data = b""
            while len(data) < n:
                chunk = sock.recv(n - len(data))
                assert chunk, "the server closed the WebSocket"
                data += chunk
            return data

        def recv_text():
            """The next text frame's JSON (server frames are unmasked; pings are skipped)."""
            while True:
                b0, b1 = recv_exact(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", recv_exact(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", recv_exact(8))[0]
                payload = recv_exact(n)
                if b0 & 0x0F == 1:
                    return json.loads(payload)

        send({"type": "subscribe", "topic": "metrics", "client_id": "check"})
        assert recv_text()["type"] == "ack"
        for i in range(5):
            send({"type": "publish", "topic": "metrics", "message": {"id": "550e8400-e29b-41d4-a716-44665544000%d" % i, "payload": i}})
        # Each publish's own event before its ack (in cluster mode a batch's events may all come
        # before its acks): once all ten are here, the server counted them.
        frames = [recv_text() for _ in range(10)]
        kinds = [f["type"] for f in frames]
        assert sorted(kinds) == ["ack"] * 5 + ["event"] * 5, kinds
        for seq in range(1, 6):
            event = next(i for i, f in enumerate(frames) if f["type"] == "event" and f["seq"] == seq)
            ack = next(i for i, f in enumerate(frames) if f["type"] == "ack" and f.get("seq") == seq)
            assert event < ack, kinds
        after = families()
        for name in ["pubsub_connections", "pubsub_topics", "pubsub_messages_published", "pubsub_loop_events_per_tick"]:
            assert name in after, f"{name} family missing"
        assert value(after, "pubsub_messages_published_total") == value(before, "pubsub_messages_published_total") + 5
        assert value(after, "pubsub_messages_delivered_total") == 5
        assert value(after, "pubsub_connections", phase="websocket") == 1
        assert value(after, "pubsub_bytes_received_total") > value(before, "pubsub_bytes_received_total")
        assert value(after, "pubsub_loop_ticks_total") > value(before, "pubsub_loop_ticks_total")
        assert value(after, "pubsub_loop_frames_per_write_count") > 0
        if cluster:
            assert value(after, "pubsub_cluster_engine_up") == 1
            # The create and five publishes, each answered by Redis, timed.
            trips = value(after, "pubsub_cluster_round_trip_microseconds_count")
            assert trips >= 6, trips
            assert value(after, "pubsub_cluster_in_flight") == 0
            for name in ["pubsub_cluster_lag_seconds", "pubsub_cluster_reconnects", "pubsub_cluster_gaps_filled",
                         "pubsub_cluster_resets", "pubsub_cluster_unavailable", "pubsub_cluster_probes"]:
                assert name in after, f"{name} family missing"
        else:
            assert not any(name.startswith("pubsub_cluster") for name in after), "cluster families outside cluster mode"
        sock.close()
        mode = "cluster mode" if cluster else "one server"
        print("metrics (%s): %d families parsed by prometheus_client, counters moved with traffic" % (mode, len(after)))
    finally:
        server.terminate()
        server.wait(timeout=10)


check({}, cluster=False)
passed = 1
redis = shutil.which("redis-server")
if redis is None:
    assert os.environ.get("PUBSUB_REQUIRE_REDIS") != "1", "redis-server is not installed (PUBSUB_REQUIRE_REDIS=1)"
    print("metrics: cluster mode skipped: redis-server is not installed")
else:
    with tempfile.TemporaryDirectory() as tmp:
        sock_path = os.path.join(tmp, "redis.sock")
        r = subprocess.Popen([redis, "--port", "0", "--unixsocket", sock_path, "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL)
        try:
            check({"REDIS_URL": "unix://" + sock_path, "INSTANCE_ID": "metrics"}, cluster=True)
            passed += 1
        finally:
            r.terminate()
            r.wait(timeout=10)
print("metrics: %d passed, 0 failed" % passed)
