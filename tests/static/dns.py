"""A nameserver that knows one name, as Docker's embedded DNS (127.0.0.11) knows service names:
answers A queries for NAME with ADDR, AAAA with no records, anything else NXDOMAIN.
Usage: dns.py LISTEN_IP NAME ADDR"""
import socket
import struct
import sys

listen, name, addr = sys.argv[1], sys.argv[2].lower().rstrip("."), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((listen, 53))
print("ready", flush=True)
while True:
    query, peer = sock.recvfrom(512)
    if len(query) < 12:
        continue
    qid = query[:2]
    labels, i = [], 12
    while i < len(query) and query[i] != 0:
        n = query[i]
        labels.append(query[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    question = query[12 : i + 5]
    qtype = struct.unpack(">H", query[i + 1 : i + 3])[0]
    known = ".".join(labels).lower() == name
    answers = b""
    count = 0
    if known and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(addr)
        count = 1
    rcode = 0 if known else 3
    header = qid + struct.pack(">HHHHH", 0x8180 | rcode, 1, count, 0, 0)
    sock.sendto(header + question + answers, peer)
