"""Executors: how a task is isolated. The folder follows the processes.

Worker side (these modules run in the Dask worker process):
    base.py           the Executor interface, RunOutcome, the children's environment
    direct.py         `direct`: runs the task in the worker itself
    warm.py           `isolated_warm`: a pool of long-lived children per bundle
    cold_spawn.py     `cold` + spawn: a new interpreter per task
    cold_fork.py      `cold` + fork: a zygote per bundle, one forked child per task
    fork_policy.py    may a bundle fork? its zygote's ready report -> fork, spawn (why) or refuse
    child_handle.py   ChildHandle: the worker's end of one exec'd child
    zygote_handle.py  ZygoteHandle, Spare: the worker's end of a zygote and of its forked children
    pidfd.py          signals through pidfds, never by reusable PID numbers
    events.py         hooks an executor calls on process events (the worker records metrics)
In the children (`child/`, run only inside processes the worker starts):
    child/runner.py   child_main of an exec'd child (warm, cold spawn)
    child/zygote.py   zygote_main: import a bundle once, fork spares, reap them
    child/fork_checks.py  the zygote's checks before forking (threads, generators made at import)
    child/forked.py   forked_child_main: one task, then _exit
On both sides:
    protocol.py       the typed messages (TaskMessage, ChunkMessage, Reply, ZygoteReady) and how they travel
    invoke.py         run_job: runs the task wherever a task runs (a child, or the worker for direct)

Processes, channels and messages:

    Dask worker process
    |-- WarmExecutor / ColdSpawnExecutor
    |     |  exec: python -m modelops.executors.child.runner
    |     |  task pipe  --> TaskMessage(job, bundle)         (protocol.send)
    |     |                 | ChunkMessage(jobs, bundle)     (warm: a chunk, one reply per job)
    |     |  reply pipe <-- Reply(status, outputs|error, pid, max_rss_kb, ready_at?)
    |     |  memfd      <-- faulthandler traceback of a fatal signal
    |     +--> child (runner.child_main): 1 task (cold spawn) or until EOF (warm)
    |
    +-- ColdForkExecutor --> ZygoteHandle (one per bundle name + digest)
          |  exec: python -m modelops.executors.child.zygote
          |  control socket (SOCK_SEQPACKET):
          |     worker --> zygote: b"F" x N (fork N spares); EOF = shut down
          |     zygote --> worker: ("ready", ZygoteReady) | ("spare", pid) + [socket, pidfd, memfd]
          |                        | ("exit", pid, code) | ("threaded", ZygoteThreaded) | ("fork_failed", msg)
          +--> zygote (zygote_main): never runs a task
                 | fork()
                 +--> forked child (forked_child_main; a spare repeats a short warm-up while it waits),
                        socket straight to the worker:
                        worker --> child: TaskMessage; child --> worker: ACK, then a Reply

Below the executors, used on both sides too: `modelops.failures` (the one Failure constructor) and
`modelops.seeding` (the task's seed into the global RNGs). Kept import-light: children import
`modelops.executors` before any task runs.
"""
