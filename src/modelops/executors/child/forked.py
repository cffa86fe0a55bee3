"""The main of a child forked by the zygote: become a clean one-task process, wait, run, `_exit`.

Runs inside the forked child only (`zygote.Zygote.fork_spare` calls `forked_child_main` right after
`fork()` returns 0). It never returns into the zygote's loop.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import signal
import sys
import traceback

from modelops.executors.protocol import ACK

_PR_SET_PDEATHSIG = 1
# loaded once in the zygote (which imports this module before forking), not in every child
_LIBC = ctypes.CDLL(None, use_errno=True)


def prewarm(spec: dict) -> None:
    """Task-independent work a spare does while it waits, so that the copy-on-write page
    faults and cold caches on the path every task takes are paid before the task arrives.
    Nothing here can change a result: run_job reseeds the global RNGs from the task seed."""
    try:
        from modelops.bundles.bundle import Bundle
        from modelops.executors.invoke import check_outputs
        from modelops.executors.protocol import Job, Reply, TaskMessage
        from modelops.seeding import seed_global_rngs

        entrypoint = spec.get("entrypoint") or ""
        bundle = Bundle(
            name=spec.get("bundle", ""), version="", entrypoint=entrypoint, source="",
            digest="", import_path=spec.get("import_path"),
        )
        message = TaskMessage(Job(entrypoint, {"p": 0.5, "n": 1}, 1), bundle)
        pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        if entrypoint.partition(":")[0] in sys.modules:  # never retry a failed import here
            bundle.load_entrypoint(entrypoint)
        seed_global_rngs(0)
        outputs = {"series": [1.0, 2.0], "n": 1, "name": "x"}
        check_outputs(outputs)
        pickle.dumps(Reply.succeeded(outputs).from_process(0), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an optimisation only
        pass


def forked_child_main(zygote_pid: int, spec: dict, fd: int, fault_fd: int) -> None:  # pragma: no cover - real processes
    """`fd`: this child's socket (the worker holds the other end); `fault_fd`: its faulthandler memfd."""
    code = 0
    try:
        os.setsid()  # own session and process group: a timeout kills the whole group
        # die with the zygote, so a dead zygote never leaves unmanaged spares behind
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != zygote_pid:
            os._exit(0)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        low, high = sorted((fd, fault_fd))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
        os.set_inheritable(fault_fd, False)
        faulthandler.enable(file=fault_fd, all_threads=True)
        from modelops.executors.child.runner import limit_memory, run_and_reply
        from modelops.executors.protocol import recv

        limit_memory(int(spec.get("memory_limit_mb") or 0))
        prewarm(spec)
        try:
            message = recv(fd)
        except EOFError:  # a spare that was never used
            os._exit(0)
        os.write(fd, ACK)
        run_and_reply(fd, message)
    except BaseException:  # noqa: BLE001 - report, never return into the zygote's loop
        code = 70
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)
