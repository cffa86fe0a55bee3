"""`cold` with start method `fork` (the default): a fresh forked process per task.

Runs in the Dask worker. Per bundle (name + digest) this worker process runs one *zygote*
(`child/zygote.py`, reached through `zygote_handle.ZygoteHandle`), started
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
  faults of that path are paid before dispatch (`child/forked.prewarm`).
- Each child is in its own session/process group, dies with the zygote (PDEATHSIG), has
  closed every inherited descriptor except its own socket (which the zygote handed to the
  worker with SCM_RIGHTS, with the child's PID), runs exactly one task via
  `invoke.run_job` (which reseeds `random` and numpy's global RNG from the task seed),
  replies and `_exit`s. The worker talks to the child directly and kills its process
  group on timeout, after the reply (leftover grandchildren) and on close.
- The zygote reaps its children and reports each exit status, so a child that dies in
  its task becomes a classified failure (`failures.died`).
- What the zygote's ready report allows (fork, spawn with a reason, or refuse with a failure) is
  decided by `fork_policy.decide`, a pure function; this module starts the zygote, waits for that
  report and applies the decision, keeping one record (`_BundleLine`) per bundle.
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

import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field

from modelops.bundles import Bundle
from modelops.bundles.warmup import describe as describe_warmup
from modelops.executors.base import Executor, ExecutorClosed, RunOutcome, deadline_for, remaining
from modelops.executors.child_handle import read_fault_text
from modelops.executors.cold_spawn import ColdSpawnExecutor
from modelops.executors import fork_policy
from modelops.executors.events import NO_EVENTS, ExecutorEvents
from modelops.executors.fork_policy import Spawn
from modelops.executors.protocol import ACK, Reply, TaskMessage, ZygoteReady, recv, send
from modelops.executors.zygote_handle import Spare, ZygoteError, ZygoteHandle, zygote_died
from modelops.failures import Failure, died, timed_out
from modelops.tasks import Task

logger = logging.getLogger("modelops.executor")

# a zygote replaced this many times because it became multi-threaded -> serve by spawn
MAX_THREAD_REPLACEMENTS = 3
# dispatch attempts for one task when spares die before accepting it (zygote death)
MAX_DISPATCH_ATTEMPTS = 4


class ImportTimeout(ZygoteError):
    """A zygote did not finish importing the bundle within MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS."""


_NOT_STARTED = object()


class _Refused(Exception):
    """This bundle's tasks fail without running: it cannot be forked safely (see `failure`)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class _BundleLine:
    """What this executor knows of one bundle (name + digest), under the executor's lock; the start
    lock lets one thread start its zygote while the others wait."""

    start_lock: threading.Lock = field(default_factory=threading.Lock)
    zygote: ZygoteHandle | None = None  # the one serving its tasks
    thread_replacements: int = 0  # zygotes replaced because they became multi-threaded
    spawn_reason: str | None = None  # served by cold spawn instead, and why
    spawn_tasks: int = 0  # tasks served by that fallback
    refused: Failure | None = None  # not forkable and not allowed to spawn: its tasks fail with this


class ColdForkExecutor(Executor):
    name = "cold"
    cold_start = "fork"

    def __init__(
        self,
        slots: int,
        task_timeout_s: float,
        memory_limit_mb: int = 0,
        preload_modules: tuple[str, ...] | list[str] = (),
        spare_count: int | None = None,
        import_timeout_s: float = 300.0,
        import_rng: str = "refuse",
        events: ExecutorEvents = NO_EVENTS,
    ):
        self.slots = max(1, slots)
        # never-used children kept ready per zygote: one per thread, plus one that covers
        # the next dispatch while a used spare's replacement is being forked
        self.spare_count = self.slots + 1 if spare_count is None else max(1, spare_count)
        self.events = events
        self.task_timeout_s = task_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.preload_modules = tuple(preload_modules)
        self.import_timeout_s = import_timeout_s
        self.import_rng = import_rng
        self._lines: dict[tuple[str, str], _BundleLine] = {}  # (name, digest) -> what is known of it
        self._retired: list[ZygoteHandle] = []  # replaced zygotes still finishing tasks
        self._spawn = ColdSpawnExecutor(
            task_timeout_s=task_timeout_s, memory_limit_mb=memory_limit_mb, events=events
        )
        self._lock = threading.Lock()
        self._closed = False

    # ---- zygotes --------------------------------------------------------------------
    def _line(self, key: tuple[str, str]) -> _BundleLine:
        """The record of one bundle (made on first use); call with `_lock` held."""
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _BundleLine()
        return line

    def _zygote(self, bundle: Bundle, deadline: float | None) -> ZygoteHandle | None:
        """The live zygote for this bundle (started or replaced as needed); None = serve by spawn.
        TimeoutError when the task's deadline passes while another thread starts the zygote."""
        key = (bundle.name, bundle.digest)
        with self._lock:
            if self._closed:
                raise ExecutorClosed("executor is closed")
            line = self._line(key)
            if line.refused is not None:
                raise _Refused(line.refused)
            if line.zygote is not None and line.zygote.usable:
                return line.zygote
        # another thread may be starting this zygote: wait no longer than the task may
        wait = remaining(deadline)
        if not line.start_lock.acquire(timeout=-1 if wait is None else wait):
            raise TimeoutError("task deadline passed waiting for the bundle's zygote")
        try:
            with self._lock:
                if line.refused is not None:
                    raise _Refused(line.refused)
                if line.spawn_reason is not None:
                    return None
                old, line.zygote = line.zygote, None
                if old is not None and old.usable:
                    line.zygote = old
                    return old
            if old is not None:
                self._retire(key, line, old)
                if line.spawn_reason is not None:
                    return None
            return self._start(key, line, bundle, deadline)
        finally:
            line.start_lock.release()

    def _retire(self, key: tuple[str, str], line: _BundleLine, old: ZygoteHandle) -> None:
        """Replace a zygote that stopped serving (dead, or multi-threaded)."""
        old.retire()
        self.events.zygote_replaced("threaded" if old.threaded is not None else "died")
        with self._lock:
            self._retired = [z for z in self._retired if not z.closed]
            if not old.closed:
                self._retired.append(old)
        if old.threaded is not None:
            line.thread_replacements += 1
            logger.warning(
                "Cold fork zygote PID %d for bundle %r became multi-threaded (%d threads: %s) "
                "and refused to fork; replacing it",
                old.pid, key[0], old.threaded.threads, ", ".join(old.threaded.thread_names),
            )
            if line.thread_replacements >= MAX_THREAD_REPLACEMENTS:
                self._use_spawn(key, line, Spawn(
                    f"its zygotes became multi-threaded {line.thread_replacements} times", "threaded_zygotes"))
        else:
            logger.warning(
                "Cold fork zygote PID %d for bundle %r died (exit %s); starting a new one",
                old.pid, key[0], old.returncode,
            )

    def _use_spawn(self, key: tuple[str, str], line: _BundleLine, spawn: Spawn) -> None:
        self.events.spawn_fallback(spawn.reason)
        with self._lock:
            line.spawn_reason = spawn.why
            line.zygote = None
        logger.warning(
            "Bundle %r cannot be forked safely (%s): its tasks run with cold start spawn instead "
            "(a new interpreter per task; still isolated, slower)",
            key[0], spawn.why,
        )

    def spawn_fallbacks(self) -> dict[str, dict]:
        """Bundles this worker serves by cold spawn although it is configured for fork:
        "name@digest" -> {"reason", "tasks"} (tasks run by spawn so far)."""
        with self._lock:
            return {
                f"{name}@{digest[:19]}": {"reason": line.spawn_reason, "tasks": line.spawn_tasks}
                for (name, digest), line in self._lines.items() if line.spawn_reason is not None
            }

    def refused_bundles(self) -> dict[str, str]:
        with self._lock:
            return {f"{name}@{digest[:19]}": line.refused.message
                    for (name, digest), line in self._lines.items() if line.refused is not None}

    def _start(self, key: tuple[str, str], line: _BundleLine, bundle: Bundle,
               deadline: float | None) -> ZygoteHandle | None:
        """Start a zygote, wait for its ready report, and apply the fork policy's decision."""
        zygote, ready = self._start_and_wait(bundle, deadline)
        decision = fork_policy.decide(ready, bundle.name, describe_warmup(bundle.warmup), self.import_rng)
        if isinstance(decision, fork_policy.Refuse):
            zygote.close()
            with self._lock:
                line.refused = decision.failure
            logger.error("%s", decision.failure.message)
            raise _Refused(decision.failure)
        if isinstance(decision, Spawn):
            zygote.close()
            self._use_spawn(key, line, decision)
            return None
        return self._serve_from(key, line, bundle, zygote, ready)

    def _start_and_wait(self, bundle: Bundle, deadline: float | None) -> tuple[ZygoteHandle, ZygoteReady]:
        """A new zygote and its ready report, within the import timeout (or the task's, if sooner)."""
        zygote = ZygoteHandle(bundle, self.preload_modules, self.memory_limit_mb, self.events)
        task_wait = remaining(deadline)
        try:
            ready = zygote.wait_ready(self.import_timeout_s if task_wait is None else min(task_wait, self.import_timeout_s))
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
        return zygote, ready

    def _serve_from(self, key: tuple[str, str], line: _BundleLine, bundle: Bundle, zygote: ZygoteHandle,
                    ready: ZygoteReady) -> ZygoteHandle:
        """Make a forkable zygote the bundle's: spares asked for, older digests of the bundle retired."""
        for error in ready.import_errors:
            logger.warning("Cold fork zygote PID %d could not import %s", zygote.pid, error)
        logger.info(
            "Cold fork zygote started: PID %d for bundle %r (%s), imports took %.2f s%s",
            zygote.pid, bundle.name, bundle.digest[:19], ready.import_s,
            "" if ready.warmup_s is None else f" (warm-up {ready.warmup_s:.2f} s of it)",
        )
        zygote.request_spares(self.spare_count)
        with self._lock:
            if self._closed:
                zygote.close()
                raise ExecutorClosed("executor is closed")
            line.zygote = zygote
            # the bundle changed (new digest): its old zygotes go once their tasks are done
            outdated = []
            for other_key, other in self._lines.items():
                if other_key[0] == key[0] and other_key != key and other.zygote is not None:
                    outdated.append(other.zygote)
                    other.zygote = None
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
        message = TaskMessage.of(task, bundle)
        pid = os.getpid()

        def outcome(failure: Failure) -> RunOutcome:
            return RunOutcome(Reply.failed(failure), pid, started, time.perf_counter() - t0)

        for _attempt in range(MAX_DISPATCH_ATTEMPTS):
            try:
                zygote = self._zygote(bundle, deadline)
                if zygote is None:
                    with self._lock:
                        self._line((bundle.name, bundle.digest)).spawn_tasks += 1
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
            logger.info("Child process PID %d running task %s (Executor: cold)", pid, task.task_id)
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

    def _dispatch(self, zygote: ZygoteHandle, spare: Spare, message: TaskMessage, deadline: float | None):
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
                return Reply.failed(timed_out(self.task_timeout_s))
            except (EOFError, OSError):
                code = zygote.wait_exit(pid)
                if code is None:
                    spare.kill()
                    return Reply.failed(zygote_died(zygote, pid, self._closed))
                return Reply.failed(died(code, f"child process {pid}", read_fault_text(spare.fault_fd)))
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
            zygotes = self._current_zygotes() + self._retired
            for line in self._lines.values():
                line.zygote = None
            self._retired = []
        for zygote in zygotes:
            zygote.close()
        self._spawn.close()

    def child_pids(self) -> list[int]:
        """Live zygote, spare and running-child PIDs."""
        with self._lock:
            zygotes = self._current_zygotes() + self._retired
        return [pid for zygote in zygotes for pid in zygote.pids()]

    def zygote_pids(self) -> list[int]:
        with self._lock:
            return [z.pid for z in self._current_zygotes() if z.alive]

    def _current_zygotes(self) -> list[ZygoteHandle]:
        """The zygote serving each bundle, alive or not (call with `_lock` held)."""
        return [line.zygote for line in self._lines.values() if line.zygote is not None]
