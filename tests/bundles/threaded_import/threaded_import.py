"""Starts a thread at import: a process holding it cannot be forked safely."""

import os
import threading
import time

threading.Thread(target=time.sleep, args=(600,), name="import-thread", daemon=True).start()


def simulate(params, seed):
    return {"pid": os.getpid(), "ppid": os.getppid()}
