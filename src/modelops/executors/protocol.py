"""Length-prefixed pickle messages over a pair of pipe descriptors.

The parent and a child talk only over dedicated descriptors, never stdout, so a
model that prints cannot corrupt the protocol.
"""

from __future__ import annotations

import os
import pickle
import select
import time

_HEADER = 8

# cold fork: the zygote's control socket carries FORK_REQUEST bytes (one per spare wanted);
# a forked child answers ACK on its socket as soon as it has read its task
FORK_REQUEST = b"F"
ACK = b"\x01"


def send(fd: int, obj: object) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(len(payload).to_bytes(_HEADER, "big") + payload)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("no reply before the deadline")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv(fd: int, deadline: float | None = None) -> object:
    """Read one message; EOFError if the peer closed, TimeoutError past `deadline` (monotonic)."""
    size = int.from_bytes(_read_exact(fd, _HEADER, deadline), "big")
    return pickle.loads(_read_exact(fd, size, deadline))
