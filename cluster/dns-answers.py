"""Exit 0 when the cluster DNS answers an A query for NAME (used by cluster/up.sh to wait for CoreDNS).

A Ready condition can be stale after a restart (it is read back from etcd), an answer cannot.
usage: python3 dns-answers.py SERVER_IP NAME
"""

import random
import socket
import struct
import sys


def query(server: str, name: str, timeout: float = 1.0) -> bool:
    ident = random.randrange(1 << 16)
    header = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = header + question + struct.pack(">HH", 1, 1)  # type A, class IN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        reply, _ = s.recvfrom(512)
    rid, flags, _, answers = struct.unpack(">HHHH", reply[:8])
    return rid == ident and flags & 0x000F == 0 and answers > 0


if __name__ == "__main__":
    try:
        sys.exit(0 if query(sys.argv[1], sys.argv[2]) else 1)
    except OSError:
        sys.exit(1)
