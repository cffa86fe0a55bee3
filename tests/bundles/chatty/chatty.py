"""Writes megabytes to stdout and stderr, as a noisy model does."""

import os
import sys


def simulate(params, seed):
    line = "x" * 1023 + "\n"
    for _ in range(int(params.get("kib", 2048))):
        sys.stdout.write(line)
        sys.stderr.write(line)
    sys.stdout.flush()
    return {"pid": os.getpid(), "seed": seed}
