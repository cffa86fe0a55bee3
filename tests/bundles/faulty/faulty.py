"""Fails on demand in the ways real models fail: params["fault"] picks how."""

import ctypes
import os
import signal
import subprocess
import sys
import time


def simulate(params, seed):
    fault = params.get("fault", "none")
    if fault == "exception":
        raise ValueError(f"bad parameter set {params}")
    if fault == "exit":
        os._exit(3)
    if fault == "segfault":
        ctypes.string_at(0)
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "sleep":
        if params.get("grandchild"):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            with open(params["grandchild"], "w") as fh:
                fh.write(str(child.pid))
        time.sleep(float(params.get("seconds", 600)))
    if fault == "memory":
        hog = bytearray(int(params.get("mb", 4096)) * 1024 * 1024)
        return {"size": len(hog)}
    if fault == "unserialisable":
        return {"value": object()}
    if fault == "not_a_dict":
        return [1, 2, 3]
    return {"pid": os.getpid(), "seed": seed}
