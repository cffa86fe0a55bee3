"""Calls a C library with a static counter: the value shows how many tasks ran in this process."""

import ctypes
import os
from pathlib import Path

_lib = ctypes.CDLL(str(Path(__file__).with_name("libcounter.so")))
_lib.counter_next.restype = ctypes.c_long
_python_calls = 0


def simulate(params, seed):
    global _python_calls
    _python_calls += 1
    return {
        "native_calls": _lib.counter_next(),
        "python_calls": _python_calls,
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
