"""Worker side: the handle of one child process started by exec (never a fork of the worker).

Three rules keep this race-free when `close()` comes from another thread mid-task:
- the pipes are closed only by the thread that owns the channel (the one inside `run`); another
  thread asks for the close, kills the process, and the owner closes once it sees EOF, so a reader
  never gets EBADF or bytes from a pipe that reused its fd number;
- the process is signalled through a pidfd, and its process group (grandchildren) by number only
  before it is reaped, and reaping happens in one place (`_reap`), never through `Popen.poll`;
- any OSError on the channel means the child is gone, and becomes a classified failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from modelops.executors import pidfd as pidfds
from modelops.executors.base import child_env, deadline_for
from modelops.executors.protocol import ChunkMessage, Reply, TaskMessage, recv, send
from modelops.failures import died, timed_out

FAULT_TEXT_LIMIT = 64 * 1024


class ChildHandle:
    """A child in its own session (so a timeout can kill its whole process group).

    Its stderr is the worker's stderr (no pipe that could fill and deadlock); its stdout is
    redirected to stderr inside the child. Its faulthandler writes to a memfd the worker reads
    when the child dies by a signal, so the Python traceback of a crash reaches the result.
    """

    def __init__(self, max_tasks: int, memory_limit_mb: int = 0, python: str = sys.executable):
        """`python`: the interpreter to exec (`Bundle.child_python`: a bundle environment's, or the worker's)."""
        self.asked_at = time.time()
        self.start_latency_s: float | None = None  # asked for -> ready for its first task
        task_r, self._task_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        self._fault_fd = os.memfd_create("modelops-faulthandler", os.MFD_CLOEXEC)
        try:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "modelops.executors.child.runner",
                    str(task_r),
                    str(reply_w),
                    str(max_tasks),
                    str(memory_limit_mb),
                    str(self._fault_fd),
                ],
                pass_fds=(task_r, reply_w, self._fault_fd),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
                env=child_env(),
            )
        finally:
            os.close(task_r)
            os.close(reply_w)
        self.pid = self.proc.pid
        self.pidfd = pidfds.open_pidfd(self.pid)  # we are its parent and have not reaped it
        self.tasks_done = 0
        self._lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._owner: int | None = None  # thread inside run(): the only one that may close the pipes
        self._close_requested = False
        self._channels_closed = False
        self._released = False

    def alive(self) -> bool:
        """Whether the child is still running (never reaps it)."""
        return self.proc.returncode is None and not pidfds.exited(self.pidfd)

    def run(self, message: TaskMessage, deadline: float | None, timeout_s: float) -> Reply:
        """Send one task and wait for its reply until `deadline` (monotonic); a dead or late
        child becomes a failed reply. `timeout_s` only names the limit in the message."""
        with self._lock:
            if self._close_requested or self._channels_closed:
                closed = True
            else:
                closed = False
                self._owner = threading.get_ident()
        if closed:
            return Reply.failed(died(self._wait_dead(), f"child process {self.pid}", self.fault_text()))
        try:
            send(self._task_w, message)
            reply = recv(self._reply_r, deadline)
        except TimeoutError:
            self.kill()
            return Reply.failed(timed_out(timeout_s))
        except (EOFError, OSError):  # any error on the channel: the child is gone
            returncode = self._wait_dead()
            return Reply.failed(died(returncode, f"child process {self.pid}", self.fault_text()))
        finally:
            self._end_use()
        self.tasks_done += 1
        if reply.ready_at is not None:
            self.start_latency_s = max(0.0, reply.ready_at - self.asked_at)
        return reply

    def run_chunk(self, message: ChunkMessage, first_deadline: float | None, timeout_s: float) -> Iterator[Reply]:
        """Send a chunk's tasks in one message and yield each task's reply as it arrives (one request, no
        round trip per task). Each task has its own deadline: `first_deadline` for the first, `timeout_s`
        from its predecessor's reply (when the child starts it) for the others. A dead or late child ends
        the stream with that task's failed reply, exactly as `run` reports it; the tasks after it never
        started and get no reply (the caller runs them elsewhere). Closing the stream before its last
        reply kills the child: it would go on running tasks whose replies nobody reads."""
        with self._lock:
            closed = self._close_requested or self._channels_closed
            if not closed:
                self._owner = threading.get_ident()
        if closed:
            yield Reply.failed(died(self._wait_dead(), f"child process {self.pid}", self.fault_text()))
            return
        last = len(message.jobs) - 1
        finished = False
        try:
            failure: Reply | None = None
            deadline = first_deadline
            try:
                send(self._task_w, message)
            except OSError:
                failure = Reply.failed(died(self._wait_dead(), f"child process {self.pid}", self.fault_text()))
            for index in range(last + 1):
                if failure is None:
                    try:
                        reply = recv(self._reply_r, deadline)
                    except TimeoutError:
                        self.kill()
                        failure = Reply.failed(timed_out(timeout_s))
                    except (EOFError, OSError):  # any error on the channel: the child is gone
                        returncode = self._wait_dead()
                        failure = Reply.failed(died(returncode, f"child process {self.pid}", self.fault_text()))
                if failure is not None:
                    finished = True
                    yield failure
                    return
                deadline = deadline_for(timeout_s)  # the child starts the next task now
                self.tasks_done += 1
                if reply.ready_at is not None:
                    self.start_latency_s = max(0.0, reply.ready_at - self.asked_at)
                finished = index == last
                yield reply
        finally:
            if not finished:
                self.kill()
            self._end_use()

    def _end_use(self) -> None:
        """A request is over: no thread owns the channels; a close asked for meanwhile happens now."""
        with self._lock:
            self._owner = None
            close_now = self._close_requested
        if close_now:
            self._close_pipes()
        self._release_if_done()

    def fault_text(self) -> str | None:
        return read_fault_text(self._fault_fd)

    def _wait_dead(self, grace: float = 5.0) -> int | None:
        if self.proc.returncode is None and not pidfds.exited(self.pidfd, grace):
            pidfds.send(self.pidfd, signal.SIGKILL)
        return self._reap()

    def _reap(self) -> int | None:
        """Wait for the child; kill what is left of its group first, while the group's number
        is still held by the unreaped child (it cannot belong to anyone else yet)."""
        with self._reap_lock:
            if self.proc.returncode is None:
                pidfds.exited(self.pidfd, None)
                try:
                    os.killpg(self.pid, signal.SIGKILL)  # leader is a zombie: number still ours
                except (ProcessLookupError, PermissionError):
                    pass
                self.proc.wait()
        self._release_if_done()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the child (and its whole process group) and reap it. Safe from any thread."""
        with self._reap_lock:
            if self.proc.returncode is None:
                try:
                    os.killpg(self.pid, signal.SIGKILL)  # not reaped yet (we hold the reap lock)
                except (ProcessLookupError, PermissionError):
                    pidfds.send(self.pidfd, signal.SIGKILL)
        self.close_channels()
        self._reap()

    def stop(self, grace: float = 2.0) -> None:
        """Ask the child to exit (EOF on its task pipe); kill it if it does not."""
        self.close_channels()
        if self.proc.returncode is None and not pidfds.exited(self.pidfd, grace):
            pidfds.send(self.pidfd, signal.SIGKILL)
        self._reap()  # also kills grandchildren it left in its group

    def close_channels(self) -> None:
        """Close the pipes now, or, when another thread is inside `run`, let that thread close
        them when it returns (the caller has killed or is stopping the child, so it returns soon)."""
        with self._lock:
            self._close_requested = True
            if self._owner is not None and self._owner != threading.get_ident():
                return
        self._close_pipes()
        self._release_if_done()

    def _close_pipes(self) -> None:
        with self._lock:
            if self._channels_closed:
                return
            self._channels_closed = True
        for fd in (self._task_w, self._reply_r):
            _close(fd)

    def _release_if_done(self) -> None:
        """Close the pidfd and the faulthandler memfd once nothing can need them: the child is
        reaped, a close was asked for, and no thread is inside `run` (which reads both)."""
        with self._lock:
            if self._released or self._owner is not None or not self._close_requested:
                return
            if self.proc.returncode is None:
                return
            self._released = True
        _close(self.pidfd)
        _close(self._fault_fd)


def read_fault_text(fd: int) -> str | None:
    """What a dead child's faulthandler wrote to its memfd (a fatal signal's Python traceback)."""
    try:
        data = os.pread(fd, FAULT_TEXT_LIMIT, 0)
    except OSError:
        return None
    return data.decode(errors="replace").strip() or None


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
