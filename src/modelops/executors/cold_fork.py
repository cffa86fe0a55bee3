"""`cold` with start method `fork` (the default): a fresh forked process per task.

Per bundle (name + digest) this worker process runs one *zygote* (`zygote.py`), started
by exec, never by forking the multi-threaded Dask worker. The zygote imports the bundle's
entrypoint module and MODELOPS_COLD_PRELOAD_MODULES once (with OMP/OPENBLAS/MKL/NUMEXPR
threads = 1), `gc.freeze()`s, and never runs a task: it forks one child per task.

- Spares: the worker keeps `slots + 1` (its thread count, plus one) forked, never-used
  children ready, so dispatch does not wait for fork. A spare taken by a task is replaced
  as soon as that task has its reply (or failed): forking while the task runs measurably
  slows the task (the fork and the child's copy-on-write faults compete for the same
  pages and CPU), and the extra spare covers dispatches meanwhile.
- A spare waits for its task having already done the task-independent work every task
  does (unpickling, entrypoint lookup, RNG seeding, reply pickling), so the copy-on-write
  faults of that path are paid before dispatch (`Zygote.prewarm`).
- Each child is in its own session/process group, dies with the zygote (PDEATHSIG), has
  closed every inherited descriptor except its own socket (which the zygote handed to the
  worker with SCM_RIGHTS, with the child's PID), runs exactly one task via
  `invoke.run_job` (which reseeds `random` and numpy's global RNG from the task seed),
  replies and `_exit`s. The worker talks to the child directly and kills its process
  group on timeout, after the reply (leftover grandchildren) and on close.
- The zygote reaps its children and reports each exit status, so a child that dies in
  its task becomes a classified failure (`base.death_reply`).
- Single-threaded check: the zygote counts /proc/self/task before every fork. If it is
  multi-threaded it refuses every further fork and reports; the worker replaces it (the
  children it forked earlier, while single-threaded, finish their tasks). If a *fresh* zygote
  is already multi-threaded after its imports (the bundle starts a thread at import), or
  zygotes of a bundle had to be replaced for threads MAX_THREAD_REPLACEMENTS times, the
  bundle's tasks are served by cold spawn instead (a new interpreter per task: still
  fully isolated, only slower), with one WARNING naming the threads.
- A bundle whose digest changed gets a new zygote; the outdated one is closed once the
  tasks running in its children are done.
- A dead zygote is replaced by the next task. Tasks that had not started in a child of
  the dead zygote (spares killed with it) are transparently dispatched to the new one.
  A task that was running in a child when its zygote died is NOT retried: it fails with
  kind "runtime", type "ZygoteDied", retryable=True (a rerun with the same seed is safe).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from modelops.bundles import Bundle
from modelops.bundles.warmup import describe as describe_warmup
from modelops.executors import pidfd as pidfds
from modelops.executors.base import (
    Executor,
    ExecutorClosed,
    RunOutcome,
    child_env,
    deadline_for,
    job_message,
    remaining,
)
from modelops.executors.child_process import read_fault_text
from modelops.executors.cold_spawn import ColdSpawnExecutor
from modelops.executors.protocol import recv, send
from modelops.executors.replies import Failure, died, timed_out
from modelops.executors.zygote import ACK, FORK_REQUEST
from modelops.tasks import Task

logger = logging.getLogger("modelops.executor")

# a zygote replaced this many times because it became multi-threaded -> serve by spawn
MAX_THREAD_REPLACEMENTS = 3
# dispatch attempts for one task when spares die before accepting it (zygote death)
MAX_DISPATCH_ATTEMPTS = 4
# how long to wait for the zygote's report of a child's exit status
EXIT_REPORT_GRACE_S = 5.0


class ZygoteError(RuntimeError):
    """A zygote could not be started or could not fork."""


class ImportTimeout(ZygoteError):
    """A zygote did not finish importing the bundle within MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS."""


@dataclass
class Spare:
    """A forked child waiting for its task. Its fds belong to whoever holds the Spare: the
    zygote handle while it is idle, then the one thread that dispatches a task to it."""

    pid: int
    fd: int  # the worker's end of the child's socket
    pidfd: int  # signals reach this child only, even after its PID was reaped and reused
    fault_fd: int  # memfd the child's faulthandler writes to

    def kill(self) -> None:
        pidfds.send(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        for fd in (self.fd, self.pidfd, self.fault_fd):
            _close_fd(fd)


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class ZygoteHandle:
    """The worker's side of one zygote: its control socket, spares, and exit reports."""

    def __init__(self, bundle: Bundle, preload_modules: tuple[str, ...], memory_limit_mb: int):
        self.bundle = bundle
        module = bundle.entrypoint.partition(":")[0]
        spec = {
            "bundle": bundle.name,
            "entrypoint": bundle.entrypoint,
            "import_path": bundle.import_path,
            "modules": [module, *[m for m in preload_modules if m != module]],
            "bundle_modules": [module],
            "memory_limit_mb": memory_limit_mb,
            "warmup": bundle.warmup,  # bundle.json "warmup": run once in the zygote, before any fork
        }
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelops.executors.zygote", str(theirs.fileno()), json.dumps(spec)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=2,  # never the worker's stdout; stderr is inherited, never a pipe
                start_new_session=True,
                close_fds=True,
                env=child_env(),
            )
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.cond = threading.Condition()
        self._send_lock = threading.Lock()
        self.spares: deque[Spare] = deque()
        self.watched: dict[int, int] = {}  # children running a task -> pidfd; exit status wanted
        self.exits: dict[int, int] = {}
        self.info: dict | None = None
        self.threaded: dict | None = None
        self.fork_error: str | None = None
        self.alive = True
        self.closed = False
        self.retiring = False  # replaced: closed as soon as its running children are done
        self.returncode: int | None = None
        self._reader = threading.Thread(
            target=self._read_loop, name=f"modelops-zygote-{self.pid}", daemon=True
        )
        self._reader.start()

    # ---- control channel ------------------------------------------------------------
    def _read_loop(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 4, socket.MSG_CMSG_CLOEXEC)
            except OSError:
                break
            if not data:
                for fd in fds:
                    _close_fd(fd)
                break
            try:
                message = pickle.loads(data)
            except Exception:  # noqa: BLE001 - a torn message: treat as a dead zygote
                logger.exception("Cold fork zygote %d sent an unreadable message", self.pid)
                break
            self._handle(message, fds)
        try:
            self.returncode = self.proc.wait(timeout=EXIT_REPORT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        with self.cond:
            self.alive = False
            spares = list(self.spares)
            self.spares.clear()
            self.cond.notify_all()
        for spare in spares:  # PDEATHSIG killed them already; make sure (by pidfd), free the fds
            spare.kill()
            spare.close()

    def _handle(self, message: tuple, fds: list[int]) -> None:
        kind = message[0]
        replace = 0
        with self.cond:
            if kind == "spare":
                spare = Spare(pid=message[1], fd=fds[0], pidfd=fds[1], fault_fd=fds[2])
                if self.closed:
                    spare.kill()
                    spare.close()
                else:
                    self.spares.append(spare)
                    logger.debug("Cold fork spare ready: PID %d (zygote %d)", spare.pid, self.pid)
            elif kind == "exit":
                _, pid, code = message
                if pid in self.watched:
                    self.exits[pid] = code
                else:
                    for spare in list(self.spares):
                        if spare.pid == pid:  # an idle spare died: replace it
                            self.spares.remove(spare)
                            spare.close()
                            replace = 1
                            logger.warning(
                                "Cold fork spare PID %d died while idle (%s); replacing it", pid, code
                            )
            elif kind == "ready":
                self.info = message[1]
            elif kind == "threaded":
                self.threaded = message[1]
            elif kind == "fork_failed":
                self.fork_error = message[1]
            self.cond.notify_all()
        if replace and not self.closed:
            self.request_spares(replace)

    def request_spares(self, n: int) -> None:
        if n <= 0 or not self.usable:
            return
        try:
            with self._send_lock:
                self.ctl.send(FORK_REQUEST * n)
        except OSError:
            pass  # a dead zygote: the reader notices and the next task replaces it

    # ---- used by the executor ---------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> dict:
        """The zygote's ready report; TimeoutError after `timeout_s` (the caller kills it)."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self.info is None and self.alive:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"cold fork zygote {self.pid} did not finish its imports")
                self.cond.wait(wait)
            if self.info is None:
                raise ZygoteError(
                    f"cold fork zygote PID {self.pid} for bundle {self.bundle.name!r} exited "
                    f"(code {self.returncode}) before it was ready; see the worker's stderr"
                )
            return self.info

    @property
    def usable(self) -> bool:
        return self.alive and self.threaded is None and not self.retiring and not self.closed

    def take_spare(self, timeout_s: float) -> Spare | None:
        """A never-used child (its replacement is asked for when its task ends), or None if this
        zygote cannot serve any more (dead, multi-threaded, retired): the caller uses the next.
        TimeoutError when no spare came within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not self.spares and self.usable and self.fork_error is None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"no forked child of zygote {self.pid} became ready")
                self.cond.wait(wait)
            if not self.usable:
                return None
            if self.spares:
                spare = self.spares.popleft()
                self.watched[spare.pid] = spare.pidfd
            elif self.fork_error is not None and self.alive:
                error, self.fork_error = self.fork_error, None
                raise ZygoteError(error)
            else:
                return None
        return spare

    def wait_exit(self, pid: int, grace_s: float = EXIT_REPORT_GRACE_S) -> int | None:
        """The child's exit status as reported by the zygote; None if the zygote died first."""
        deadline = time.monotonic() + grace_s
        with self.cond:
            while pid not in self.exits and self.alive:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                self.cond.wait(wait)
            return self.exits.get(pid)

    def unwatch(self, pid: int) -> bool:
        """Forget a finished child (after this its pidfd may be closed); True when this zygote is
        retiring and now idle (close it)."""
        with self.cond:
            self.watched.pop(pid, None)
            self.exits.pop(pid, None)
            return self.retiring and not self.watched and not self.closed

    def retire(self) -> None:
        """Stop using this zygote: close it now if nothing runs in it, else after its last task."""
        with self.cond:
            self.retiring = True
            idle = not self.watched
            spares = list(self.spares)
            self.spares.clear()
            self.cond.notify_all()
        for spare in spares:
            spare.kill()
            spare.close()
        if idle or not self.alive:
            self.close()

    def pids(self) -> list[int]:
        with self.cond:
            if not self.alive:
                return []
            return [self.pid, *(s.pid for s in self.spares), *self.watched]

    def close(self, grace_s: float = 2.0) -> None:
        """Kill every child's group, tell the zygote to exit (EOF), reap it; no orphans."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            spares = list(self.spares)
            self.spares.clear()
            # under the lock: a dispatching thread closes a pidfd only after unwatch()
            for pidfd in self.watched.values():
                pidfds.send(pidfd, signal.SIGKILL)
        for spare in spares:
            spare.kill()
            spare.close()
        try:
            self.ctl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=grace_s)
        self.ctl.close()


def zygote_died(zygote: ZygoteHandle, pid: int, closed: bool) -> Failure:
    code = zygote.returncode
    how = (
        f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
        else f"exited with code {code}"
    )
    why = "the executor was closed" if closed else f"its zygote (PID {zygote.pid}) {how}"
    return Failure(
        kind="runtime",
        type="ZygoteDied",
        message=(
            f"cold fork child process {pid} (bundle {zygote.bundle.name!r}) was killed "
            f"mid-task because {why}; the task was not retried (rerunning it is safe)"
        ),
        retryable=True,
    )


_NOT_STARTED = object()


class _Refused(Exception):
    """This bundle's tasks fail without running: it cannot be forked safely (see `failure`)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


class ColdForkExecutor(Executor):
    name = "cold"
    cold_start = "fork"

    def __init__(
        self,
        slots: int,
        task_timeout_s: float,
        memory_limit_mb: int = 0,
        preload_modules: tuple[str, ...] | list[str] = (),
        spares: int | None = None,
        import_timeout_s: float = 300.0,
        import_rng: str = "refuse",
    ):
        self.slots = max(1, slots)
        # never-used children kept ready per zygote: one per thread, plus one that covers
        # the next dispatch while a used spare's replacement is being forked
        self.spares = self.slots + 1 if spares is None else max(1, spares)
        self.task_timeout_s = task_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.preload_modules = tuple(preload_modules)
        self.import_timeout_s = import_timeout_s
        self.import_rng = import_rng
        self._zygotes: dict[tuple[str, str], ZygoteHandle] = {}
        self._retired: list[ZygoteHandle] = []  # replaced zygotes still finishing tasks
        self._start_locks: dict[tuple[str, str], threading.Lock] = {}
        self._thread_replacements: dict[tuple[str, str], int] = {}
        self._spawn_bundles: dict[tuple[str, str], str] = {}  # served by spawn -> why
        self._spawn_tasks: dict[tuple[str, str], int] = {}  # tasks served by that fallback
        self._refused: dict[tuple[str, str], Failure] = {}  # not forkable, not allowed to spawn
        self._spawn = ColdSpawnExecutor(task_timeout_s=task_timeout_s, memory_limit_mb=memory_limit_mb)
        self._lock = threading.Lock()
        self._closed = False

    # ---- zygotes --------------------------------------------------------------------
    def _zygote(self, bundle: Bundle, deadline: float | None) -> ZygoteHandle | None:
        """The live zygote for this bundle (started or replaced as needed); None = serve by spawn.
        TimeoutError when the task's deadline passes while another thread starts the zygote."""
        key = (bundle.name, bundle.digest)
        with self._lock:
            if self._closed:
                raise ExecutorClosed("executor is closed")
            if key in self._refused:
                raise _Refused(self._refused[key])
            zygote = self._zygotes.get(key)
            if zygote is not None and zygote.usable:
                return zygote
            start_lock = self._start_locks.setdefault(key, threading.Lock())
        # another thread may be starting this zygote: wait no longer than the task may
        wait = remaining(deadline)
        if not start_lock.acquire(timeout=-1 if wait is None else wait):
            raise TimeoutError("task deadline passed waiting for the bundle's zygote")
        try:
            with self._lock:
                if key in self._refused:
                    raise _Refused(self._refused[key])
                if key in self._spawn_bundles:
                    return None
                old = self._zygotes.pop(key, None)
                if old is not None and old.usable:
                    self._zygotes[key] = old
                    return old
            if old is not None:
                self._retire(key, old)
                if key in self._spawn_bundles:
                    return None
            return self._start(key, bundle, deadline)
        finally:
            start_lock.release()

    def _retire(self, key: tuple[str, str], old: ZygoteHandle) -> None:
        old.retire()
        with self._lock:
            self._retired = [z for z in self._retired if not z.closed]
            if not old.closed:
                self._retired.append(old)
        if old.threaded is not None:
            count = self._thread_replacements.get(key, 0) + 1
            self._thread_replacements[key] = count
            logger.warning(
                "Cold fork zygote PID %d for bundle %r became multi-threaded (%d threads: %s) "
                "and refused to fork; replacing it",
                old.pid, key[0], old.threaded["threads"], ", ".join(old.threaded["thread_names"]),
            )
            if count >= MAX_THREAD_REPLACEMENTS:
                self._use_spawn(key, f"its zygotes became multi-threaded {count} times")
        else:
            logger.warning(
                "Cold fork zygote PID %d for bundle %r died (exit %s); starting a new one",
                old.pid, key[0], old.returncode,
            )

    def _use_spawn(self, key: tuple[str, str], why: str) -> None:
        with self._lock:
            self._spawn_bundles[key] = why
            self._zygotes.pop(key, None)
        logger.warning(
            "Bundle %r cannot be forked safely (%s): its tasks run with cold start spawn instead "
            "(a new interpreter per task; still isolated, slower)",
            key[0], why,
        )

    def spawn_fallbacks(self) -> dict[str, dict]:
        """Bundles this worker serves by cold spawn although it is configured for fork:
        "name@digest" -> {"reason", "tasks"} (tasks run by spawn so far)."""
        with self._lock:
            return {
                f"{name}@{digest[:19]}": {"reason": why, "tasks": self._spawn_tasks.get((name, digest), 0)}
                for (name, digest), why in self._spawn_bundles.items()
            }

    def refused_bundles(self) -> dict[str, str]:
        with self._lock:
            return {f"{name}@{digest[:19]}": f.message for (name, digest), f in self._refused.items()}

    def _start(self, key: tuple[str, str], bundle: Bundle, deadline: float | None) -> ZygoteHandle | None:
        zygote = ZygoteHandle(bundle, self.preload_modules, self.memory_limit_mb)
        task_wait = remaining(deadline)
        try:
            info = zygote.wait_ready(self.import_timeout_s if task_wait is None else min(task_wait, self.import_timeout_s))
        except TimeoutError:
            zygote.close()
            if task_wait is not None and task_wait < self.import_timeout_s:
                raise  # the task's own timeout
            raise ImportTimeout(
                f"bundle {bundle.name!r}: the cold fork zygote (PID {zygote.pid}) did not finish importing "
                f"{bundle.entrypoint.partition(':')[0]!r} within MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS="
                f"{self.import_timeout_s:g}; it was killed (does the bundle block at import?)"
            ) from None
        except BaseException:
            zygote.close()
            raise
        if info.get("warmup_error"):
            zygote.close()
            failure = Failure(
                kind="runtime",
                type="WarmupFailed",
                message=(
                    f"bundle {bundle.name!r} cannot run under cold fork: its warm-up "
                    f"(bundle.json \"warmup\": {describe_warmup(bundle.warmup)}) raised in the zygote "
                    f"(PID {zygote.pid}): {info['warmup_error']}\nFix the warm-up or remove it from bundle.json"
                ),
            )
            with self._lock:
                self._refused[key] = failure
            logger.error("%s", failure.message)
            raise _Refused(failure)
        if info["threads"] > 1:
            zygote.close()
            self._use_spawn(
                key,
                f"after importing its modules the zygote has {info['threads']} threads: "
                + ", ".join(info["thread_names"]) + "; avoid starting threads at import",
            )
            return None
        if info.get("import_rngs"):
            zygote.close()
            rngs = ", ".join(info["import_rngs"])
            if self.import_rng == "spawn":
                self._use_spawn(
                    key,
                    f"random generators created at import would be cloned into every forked child: {rngs}; "
                    "MODELOPS_COLD_IMPORT_RNG=spawn",
                )
                return None
            failure = Failure(
                kind="runtime",
                type="ForkUnsafeBundle",
                message=(
                    f"bundle {bundle.name!r} cannot run under cold fork: random generator(s) created at "
                    f"import, {rngs}, would be cloned into every forked child, so every task would draw "
                    "the same numbers. Create generators inside simulate() from the task's seed (e.g. "
                    "numpy.random.default_rng(seed), random.Random(seed)), or set "
                    "MODELOPS_COLD_IMPORT_RNG=spawn to run this bundle under cold spawn (slower)"
                ),
            )
            with self._lock:
                self._refused[key] = failure
            logger.error("%s", failure.message)
            raise _Refused(failure)
        for error in info["import_errors"]:
            logger.warning("Cold fork zygote PID %d could not import %s", zygote.pid, error)
        logger.info(
            "Cold fork zygote started: PID %d for bundle %r (%s), imports took %.2f s%s",
            zygote.pid, bundle.name, bundle.digest[:19], info["import_s"],
            "" if info.get("warmup_s") is None else f" (warm-up {info['warmup_s']:.2f} s of it)",
        )
        zygote.request_spares(self.spares)
        with self._lock:
            if self._closed:
                zygote.close()
                raise ExecutorClosed("executor is closed")
            self._zygotes[key] = zygote
            # the bundle changed (new digest): its old zygotes go once their tasks are done
            stale = [k for k in self._zygotes if k[0] == key[0] and k != key]
            outdated = [self._zygotes.pop(k) for k in stale]
        for old in outdated:
            logger.info(
                "Bundle %r changed (digest %s): retiring cold fork zygote PID %d",
                key[0], key[1][:19], old.pid,
            )
            old.retire()
            with self._lock:
                if not old.closed:
                    self._retired.append(old)
        return zygote

    # ---- tasks ----------------------------------------------------------------------
    def run(self, task: Task, bundle: Bundle) -> RunOutcome:
        started = time.time()
        t0 = time.perf_counter()
        # the task's timeout covers the whole task: waiting for the zygote and a spare too
        deadline = deadline_for(self.task_timeout_s)
        message = job_message(task, bundle)
        pid = os.getpid()

        def outcome(failure: Failure) -> RunOutcome:
            return RunOutcome(failure.reply(), pid, started, time.perf_counter() - t0)

        for _attempt in range(MAX_DISPATCH_ATTEMPTS):
            try:
                zygote = self._zygote(bundle, deadline)
                if zygote is None:
                    key = (bundle.name, bundle.digest)
                    with self._lock:
                        self._spawn_tasks[key] = self._spawn_tasks.get(key, 0) + 1
                    return self._spawn.run(task, bundle, deadline)
                task_wait = remaining(deadline)
                wait = self.import_timeout_s if task_wait is None else min(task_wait, self.import_timeout_s)
                try:
                    spare = zygote.take_spare(wait)
                except TimeoutError:
                    if task_wait is not None and task_wait <= self.import_timeout_s:
                        raise
                    return outcome(Failure(
                        kind="runtime", type="ZygoteError", retryable=True,
                        message=(
                            f"bundle {bundle.name!r}: no forked child of zygote PID {zygote.pid} became ready "
                            f"within MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS={self.import_timeout_s:g}"
                        ),
                    ))
            except TimeoutError:
                return outcome(timed_out(self.task_timeout_s))
            except _Refused as refused:
                return outcome(refused.failure)
            except ImportTimeout as exc:
                return outcome(Failure(kind="runtime", type="BundleImportTimeout", message=str(exc)))
            except ZygoteError as exc:
                return outcome(Failure(kind="runtime", type="ZygoteError", message=str(exc), retryable=True))
            if spare is None:  # the zygote died while this task waited: use its replacement
                continue
            pid = spare.pid
            logger.info("Cold runner started: PID %d", pid)
            logger.info("Child process PID %d running task %s", pid, task.task_id)
            reply = self._dispatch(zygote, spare, message, deadline)
            if reply is not _NOT_STARTED:
                return RunOutcome(reply, pid, started, time.perf_counter() - t0)
            logger.warning(
                "Cold fork child PID %d died before it accepted task %s; dispatching it again",
                pid, task.task_id,
            )
        return outcome(Failure(
            kind="runtime", type="ZygoteError", retryable=True,
            message=(
                f"no cold fork child of bundle {bundle.name!r} accepted the task in "
                f"{MAX_DISPATCH_ATTEMPTS} attempts (zygotes keep dying; see the worker's stderr)"
            ),
        ))

    def _dispatch(self, zygote: ZygoteHandle, spare: Spare, message: dict, deadline: float | None):
        """Run the task in `spare`. This thread owns the spare's fds and closes them at the end;
        the child is signalled only through its pidfd, never by its (reusable) PID."""
        pid, fd = spare.pid, spare.fd
        try:
            try:
                send(fd, message)
            except OSError:
                spare.kill()
                return _NOT_STARTED
            try:
                if deadline is not None and not select.select([fd], [], [], remaining(deadline))[0]:
                    raise TimeoutError
                ack = os.read(fd, 1)
                if ack != ACK:
                    spare.kill()
                    return _NOT_STARTED
                reply = recv(fd, deadline)
            except TimeoutError:
                spare.kill()  # the zygote kills the rest of its process group before reaping it
                zygote.wait_exit(pid)
                return timed_out(self.task_timeout_s).reply()
            except (EOFError, OSError):
                code = zygote.wait_exit(pid)
                if code is None:
                    spare.kill()
                    return zygote_died(zygote, pid, self._closed).reply()
                return died(code, f"child process {pid}", read_fault_text(spare.fault_fd)).reply()
            # the child exits by itself now; the zygote kills grandchildren it left, then reaps it
            return reply
        finally:
            zygote.request_spares(1)
            retire = zygote.unwatch(pid)
            spare.close()  # after unwatch(): close() no longer signals through this pidfd
            if retire:
                zygote.close()

    # ---- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            zygotes = list(self._zygotes.values()) + self._retired
            self._zygotes.clear()
            self._retired = []
        for zygote in zygotes:
            zygote.close()
        self._spawn.close()

    def child_pids(self) -> list[int]:
        """Live zygote, spare and running-child PIDs."""
        with self._lock:
            zygotes = list(self._zygotes.values()) + self._retired
        return [pid for zygote in zygotes for pid in zygote.pids()]

    def zygote_pids(self) -> list[int]:
        with self._lock:
            return [z.pid for z in self._zygotes.values() if z.alive]
