#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from real traffic: the reference document's
requests, RFC 6455's examples and PROTOCOL.md's JSON examples. Run from the repository root;
the files are checked in, so this only needs running when the seeds should change."""
import hashlib, json, os, re, struct

root = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(root, "corpus")

def write(target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def masked(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
body = b'{"name": "orders"}'
REQUESTS = [
    b"POST /topics HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    b"DELETE /topics/orders HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
    b"GET /topics HTTP/1.1\r\nHost: localhost:8080\r\n\r\nGET /health HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"nam\r\nb;x=y\r\ne\":\"orders\"}\r\n0\r\nTrailer: 1\r\n\r\n",
    b"POST /topics HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 18\r\n\r\n",
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://localhost:8080/health HTTP/1.1\r\n\r\n",
    b"DELETE /topics/a%3Ab HTTP/1.1\r\n\r\n",
    UPGRADE,
    b"HEAD /topics HTTP/1.1\r\n\r\nHEAD /ws HTTP/1.1\r\n\r\nOPTIONS /topics HTTP/1.1\r\nOrigin: http://localhost\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
]
# The first byte is the size of the pieces the target also feeds the request in.
for i, r in enumerate(REQUESTS):
    write("http_request", bytes([i * 7]) + r)

for variant in [UPGRADE,
                UPGRADE.replace(b"Version: 13", b"Version: 8"),
                UPGRADE.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),
                UPGRADE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\nOrigin: http://localhost\r\n\r\n")]:
    write("ws_handshake", variant)

# RFC 6455 section 5.7 examples.
RFC = [
    bytes([0x81, 0x05]) + b"Hello",
    bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]),
    bytes([0x01, 0x03]) + b"Hel" + bytes([0x80, 0x02]) + b"lo",
    bytes([0x89, 0x05]) + b"Hello",
    bytes([0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]),
    bytes([0x82, 0x7E, 0x01, 0x00]) + bytes(256),
    bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]) + bytes(16),
]
for i, frame in enumerate(RFC):
    write("ws_frame", bytes([i * 37 % 256]) + frame)

protocol_doc = open(os.path.join(root, "..", "PROTOCOL.md")).read()
examples = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", protocol_doc, re.S)]
client = [e for e in examples if e["type"] in ("subscribe", "unsubscribe", "publish", "ping")]
for e in examples:
    write("client_message", json.dumps(e).encode())
write("client_message", b'{"type":"publish","topic":"ord\\u0065rs","message":{"id":"{550e8400-e29b-41d4-a716-446655440000}","payload":[1,2.5e3,null,"\\u00e9"]}}')

session_streams = [
    masked(1, b"Hello"),
    masked(1, "κό".encode(), fin=False) + masked(9, b"ping") + masked(0, "σμε".encode()),
    masked(2, bytes(300)) + masked(10, b"") + masked(8, b"\x03\xe8bye"),
    masked(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"),
]
for s in session_streams:
    write("ws_session", bytes([3, 1, 7, 2]) + s)

write("broker_ops", bytes([0, 0, 0, 2, 0, 1, 2, 0, 0x52, 5, 0, 0, 5, 0, 0, 3, 0, 0xA3, 4, 0, 1, 1, 0, 0, 6, 0, 2]))
write("broker_ops", bytes(range(0, 90)))

def topic_session(extra):
    msgs = [{"type": "subscribe", "topic": "orders", "client_id": "s1", "last_n": 5}] + extra
    return b"".join(masked(1, json.dumps(m).encode()) for m in msgs)

create = b"POST /topics HTTP/1.1\r\nContent-Length: 18\r\n\r\n" + body
write("connection", bytes([0]) + create + UPGRADE + topic_session(client))
write("connection", bytes([1]) + b"".join(masked(1, json.dumps(m).encode()) for m in client) + masked(9, b"hb") + masked(8, b"\x03\xe8"))
write("connection", bytes([6, 5, 0, 200]) + REQUESTS[2] + REQUESTS[3])
write("connection", bytes([0]) + REQUESTS[-1] + UPGRADE)
write("connection", bytes([1]) + masked(1, b"{\"type\":\"ping\"}", fin=False) + masked(0, b"junk", fin=True) + masked(2, b"\x00\x01"))
# Replies as Redis 7 sends them: to PING, GET, SUBSCRIBE, EVALSHA, XRANGE and HELLO 3, errors,
# and a RESP3 push, each fed in pieces of a size the first byte sets.
resp_replies = [
    b"+PONG\r\n$-1\r\n$5\r\nhello\r\n:42\r\n",
    b"*3\r\n$9\r\nsubscribe\r\n$4\r\nps:t\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$4\r\nps:t\r\n$11\r\n{\"seq\":1}\r\n",
    b"-NOSCRIPT No matching script. Please use EVAL.\r\n*2\r\n:7\r\n$13\r\n19ac1d2b3f0-1\r\n",
    b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$2\r\n{}\r\n*2\r\n$3\r\n2-0\r\n*-1\r\n",
    b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n",
    b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n_\r\n#t\r\n,1.5\r\n(12345678901234567890\r\n!3\r\nbad\r\n=7\r\ntxt:abc\r\n~1\r\n:1\r\n|1\r\n+a\r\n:1\r\n+b\r\n",
]
for i, r in enumerate(resp_replies):
    write("resp", bytes([i * 5]) + r)
# A channel seen in order, with a repeat, a gap and its fill, a new epoch, a deletion.
write("mirror", bytes([0, 1, 0, 2, 0, 2, 0, 6, 2, 0, 0, 7, 0x80, 1, 3, 0]))
write("mirror", bytes(range(0, 64)))
# DNS: an answer for "redis" with a CNAME and two A records; resolver files as Docker writes them.
answer = (b"\x00\x07" + b"\x00\x07\x81\x80\x00\x01\x00\x03\x00\x00\x00\x00\x05redis\x00\x00\x01\x00\x01"
          + b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x05\x01r\x01x\x00"
          + b"\xc0\x1d\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xac\x12\x00\x02"
          + b"\xc0\x1d\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xac\x12\x00\x03")
write("dns", answer)
write("dns", b"\x00\x01redis\n127.0.0.11 redis\nnameserver 127.0.0.11\nsearch svc.cluster.local\noptions ndots:5\n")
print("corpus written to", corpus)
