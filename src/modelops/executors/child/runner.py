"""Main of an exec'd child (warm, cold spawn): run tasks read from a pipe, reply on another.

`python -m modelops.executors.child.runner IN_FD OUT_FD MAX_TASKS MEMORY_LIMIT_MB FAULT_FD`
Runs inside the child. `limit_memory` and `run_and_reply` are also what a forked child runs
(`forked.py`).
MAX_TASKS=1 is a cold runner (one task, then exit); 0 means serve until EOF (warm). A warm child also
takes a chunk (`protocol.ChunkMessage`): several tasks in one message, one reply per task.
FAULT_FD: where faulthandler writes the Python traceback of a fatal signal (the worker reads it).
"""

from __future__ import annotations

import faulthandler
import os
import resource
import sys
import threading
import time

from modelops.executors.invoke import failure, run_job
from modelops.executors.protocol import ChunkMessage, TaskMessage, recv, send


def watch_parent(original_parent: int, interval: float = 0.5) -> None:
    """Exit when the parent dies, so a killed worker never leaves orphans running tasks."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != original_parent:
                os._exit(70)

    threading.Thread(target=loop, name="modelops-parent-watch", daemon=True).start()


def enable_faulthandler(fd: int) -> None:
    """A SIGSEGV/SIGBUS/SIGFPE/SIGABRT/SIGILL in a task writes every thread's Python traceback
    to `fd`, so the failed result says where the crash happened, not only which signal."""
    faulthandler.enable(file=fd, all_threads=True)


def limit_memory(megabytes: int) -> None:
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_and_reply(out_fd: int, message: TaskMessage, ready_at: float | None = None) -> None:
    """Run one task message and send its reply; outputs pickle cannot carry fail the task.

    The reply also carries this process's peak resident memory so far (`max_rss_kb`), and, for
    the first task of an exec'd child, when the child became ready for it (`ready_at`, epoch s)."""
    reply = run_job(message.job, message.bundle)
    reply = reply.from_process(os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, ready_at)
    # flush before replying: once the worker has the reply it may kill the process group
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        send(out_fd, reply)
    except Exception as exc:
        send(out_fd, failure("serialization", exc).from_process(os.getpid()))


def serve(in_fd: int, out_fd: int, max_tasks: int) -> None:
    """Run each message's tasks: a TaskMessage is one task, a ChunkMessage several (one reply each, sent as
    each finishes; the worker never sends a chunk larger than what MAX_TASKS leaves)."""
    done = 0
    ready_at: float | None = time.time()
    while True:
        try:
            message = recv(in_fd)
        except EOFError:
            return
        for task_message in message.messages() if isinstance(message, ChunkMessage) else [message]:
            run_and_reply(out_fd, task_message, ready_at)
            ready_at = None
            done += 1
        if max_tasks and done >= max_tasks:
            return


def child_main(argv: list[str]) -> None:
    in_fd, out_fd, max_tasks, memory_mb, fault_fd = (int(a) for a in argv[1:6])
    os.dup2(2, 1)  # model prints go to stderr; the protocol has its own descriptors
    enable_faulthandler(fault_fd)
    watch_parent(os.getppid())
    limit_memory(memory_mb)
    serve(in_fd, out_fd, max_tasks)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    child_main(sys.argv)
