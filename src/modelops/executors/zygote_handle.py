"""Worker side: the handle of one cold-fork zygote, and of the spare children it forked.

The zygote itself runs `child/zygote.py`; its control channel and messages are described there.
A reader thread per handle turns the zygote's reports into state (spares ready, children's exit
codes, threaded, fork failures) that the executor's task threads wait on.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass

from modelops.bundles import Bundle
from modelops.executors import pidfd as pidfds
from modelops.executors.base import child_env
from modelops.executors.events import ExecutorEvents
from modelops.executors.protocol import FORK_REQUEST, ZygoteReady, ZygoteThreaded
from modelops.failures import Failure

logger = logging.getLogger("modelops.executor")

# how long to wait for the zygote's report of a child's exit status
EXIT_REPORT_GRACE_S = 5.0


class ZygoteError(RuntimeError):
    """A zygote could not be started or could not fork."""


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

    def __init__(
        self, bundle: Bundle, preload_modules: tuple[str, ...], memory_limit_mb: int,
        events: ExecutorEvents,
    ):
        self.bundle = bundle
        self.events = events
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
                [bundle.child_python, "-m", "modelops.executors.child.zygote", str(theirs.fileno()), json.dumps(spec)],
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
        self.idle_spares: deque[Spare] = deque()
        self._asked: deque[float] = deque()  # when each spare not yet received was asked for
        self.watched: dict[int, int] = {}  # children running a task -> pidfd; exit status wanted
        self.exits: dict[int, int] = {}
        self.info: ZygoteReady | None = None
        self.threaded: ZygoteThreaded | None = None
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
            spares = list(self.idle_spares)
            self.idle_spares.clear()
            self.cond.notify_all()
        for spare in spares:  # PDEATHSIG killed them already; make sure (by pidfd), free the fds
            spare.kill()
            spare.close()

    def _handle(self, message: tuple, fds: list[int]) -> None:
        kind = message[0]
        replace = 0
        fork_latency = None
        with self.cond:
            if kind == "spare":
                spare = Spare(pid=message[1], fd=fds[0], pidfd=fds[1], fault_fd=fds[2])
                if self.closed:
                    spare.kill()
                    spare.close()
                else:
                    self.idle_spares.append(spare)
                    # a spare waits for a task: "Cold runner started" is logged when it gets one, so those
                    # lines count tasks (cold_fork.ColdForkExecutor.run)
                    logger.debug("Cold fork spare ready: PID %d", spare.pid)
                    if self._asked:
                        fork_latency = time.monotonic() - self._asked.popleft()
            elif kind == "exit":
                _, pid, code = message
                if pid in self.watched:
                    self.exits[pid] = code
                else:
                    for spare in list(self.idle_spares):
                        if spare.pid == pid:  # an idle spare died: replace it
                            self.idle_spares.remove(spare)
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
        if fork_latency is not None:
            self.events.child_started("fork", fork_latency)
        if replace and not self.closed:
            self.request_spares(replace)

    def request_spares(self, n: int) -> None:
        if n <= 0 or not self.usable:
            return
        try:
            with self._send_lock:
                with self.cond:  # before sending: the first spare may arrive before send returns
                    self._asked.extend([time.monotonic()] * n)
                self.ctl.send(FORK_REQUEST * n)
        except OSError:
            pass  # a dead zygote: the reader notices and the next task replaces it

    # ---- used by the executor ---------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> ZygoteReady:
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
            while not self.idle_spares and self.usable and self.fork_error is None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"no forked child of zygote {self.pid} became ready")
                self.cond.wait(wait)
            if not self.usable:
                return None
            if self.idle_spares:
                spare = self.idle_spares.popleft()
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
            spares = list(self.idle_spares)
            self.idle_spares.clear()
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
            return [self.pid, *(s.pid for s in self.idle_spares), *self.watched]

    def close(self, grace_s: float = 2.0) -> None:
        """Kill every child's group, tell the zygote to exit (EOF), reap it; no orphans."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            spares = list(self.idle_spares)
            self.idle_spares.clear()
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
