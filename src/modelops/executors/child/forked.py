"""The main of a child forked by the zygote: become a clean one-task process, wait, run, `_exit`.

Runs inside the forked child only (`zygote.Zygote.fork_spare` calls `forked_child_main` right after
`fork()` returns 0). It never returns into the zygote's loop.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
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


def touch_while_waiting(spec: dict, fd: int) -> None:
    """A spare repeats the bundle's declared warm-up while it waits for its task, unless a task is already
    there. Why: after fork() the child shares every page with the zygote, and the first write to each (a
    reference count, a type's cache, a malloc arena the model's allocations reuse) is a copy-on-write fault
    paid inside the task (a few hundred per task on the Mesa and numba examples). Running the model's own
    path once here pays those faults before dispatch, off the task's critical path. The warm-up
    is the one the zygote already ran (spec["spare_warmup"]: declared, succeeded, short), it leaves what it
    left in the zygote, and run_job reseeds the global RNGs from the task seed after it, so a task's result
    does not change: a spare is the zygote's state plus one more identical warm-up call. Its garbage is
    collected and what stays is frozen, so the task's collections do not walk it."""
    warmup = spec.get("warmup")
    if not (warmup and spec.get("spare_warmup")):
        return
    import select

    if select.select([fd], [], [], 0)[0]:  # the task is already here: do not make it wait
        return
    try:
        from modelops.bundles.warmup import run_warmup

        run_warmup(warmup, spec.get("entrypoint") or "", spec.get("import_path"))
    except Exception:  # noqa: BLE001 - an optimisation only; the zygote's own warm-up succeeded
        pass
    gc.collect()
    gc.freeze()


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
        touch_while_waiting(spec, fd)
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
