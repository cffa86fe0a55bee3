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

from modelops.bundles import Bundle
from modelops.bundles.warmup import describe as describe_warmup
from modelops.executors.base import Executor, ExecutorClosed, RunOutcome, deadline_for, remaining
from modelops.executors.child_handle import read_fault_text
from modelops.executors.cold_spawn import ColdSpawnExecutor
from modelops.executors.events import NO_EVENTS, ExecutorEvents
from modelops.executors.protocol import ACK, Reply, TaskMessage, recv, send
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
        self._zygotes: dict[tuple[str, str], ZygoteHandle] = {}
        self._retired: list[ZygoteHandle] = []  # replaced zygotes still finishing tasks
        self._start_locks: dict[tuple[str, str], threading.Lock] = {}
        self._thread_replacements: dict[tuple[str, str], int] = {}
        self._spawn_bundles: dict[tuple[str, str], str] = {}  # served by spawn -> why
        self._spawn_tasks: dict[tuple[str, str], int] = {}  # tasks served by that fallback
        self._refused: dict[tuple[str, str], Failure] = {}  # not forkable, not allowed to spawn
        self._spawn = ColdSpawnExecutor(
            task_timeout_s=task_timeout_s, memory_limit_mb=memory_limit_mb, events=events
        )
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
        """Replace a zygote that stopped serving (dead, or multi-threaded)."""
        old.retire()
        self.events.zygote_replaced("threaded" if old.threaded is not None else "died")
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
                old.pid, key[0], old.threaded.threads, ", ".join(old.threaded.thread_names),
            )
            if count >= MAX_THREAD_REPLACEMENTS:
                self._use_spawn(key, f"its zygotes became multi-threaded {count} times", "threaded_zygotes")
        else:
            logger.warning(
                "Cold fork zygote PID %d for bundle %r died (exit %s); starting a new one",
                old.pid, key[0], old.returncode,
            )

    def _use_spawn(self, key: tuple[str, str], why: str, reason: str) -> None:
        self.events.spawn_fallback(reason)
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
        zygote = ZygoteHandle(bundle, self.preload_modules, self.memory_limit_mb, self.events)
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
        if info.warmup_error:
            zygote.close()
            failure = Failure(
                kind="runtime",
                type="WarmupFailed",
                message=(
                    f"bundle {bundle.name!r} cannot run under cold fork: its warm-up "
                    f"(bundle.json \"warmup\": {describe_warmup(bundle.warmup)}) raised in the zygote "
                    f"(PID {zygote.pid}): {info.warmup_error}\nFix the warm-up or remove it from bundle.json"
                ),
            )
            with self._lock:
                self._refused[key] = failure
            logger.error("%s", failure.message)
            raise _Refused(failure)
        if info.threads > 1:
            zygote.close()
            self._use_spawn(
                key,
                f"after importing its modules the zygote has {info.threads} threads: "
                + ", ".join(info.thread_names) + "; avoid starting threads at import",
                "threaded_import",
            )
            return None
        if info.import_rngs:
            zygote.close()
            rngs = ", ".join(info.import_rngs)
            if self.import_rng == "spawn":
                self._use_spawn(
                    key,
                    f"random generators created at import would be cloned into every forked child: {rngs}; "
                    "MODELOPS_COLD_IMPORT_RNG=spawn",
                    "import_rng",
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
        for error in info.import_errors:
            logger.warning("Cold fork zygote PID %d could not import %s", zygote.pid, error)
        logger.info(
            "Cold fork zygote started: PID %d for bundle %r (%s), imports took %.2f s%s",
            zygote.pid, bundle.name, bundle.digest[:19], info.import_s,
            "" if info.warmup_s is None else f" (warm-up {info.warmup_s:.2f} s of it)",
        )
        zygote.request_spares(self.spare_count)
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
        message = TaskMessage.of(task, bundle)
        pid = os.getpid()

        def outcome(failure: Failure) -> RunOutcome:
            return RunOutcome(Reply.failed(failure), pid, started, time.perf_counter() - t0)

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
