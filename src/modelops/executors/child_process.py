"""Worker-side handle of one child process started by exec (never a fork of the worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from modelops.executors.base import death_reply, deadline_for, timeout_reply
from modelops.executors.protocol import recv, send


class ChildProcess:
    """A child in its own session (so a timeout can kill its whole process group).

    Its stderr is the worker's stderr (no pipe that could fill and deadlock);
    its stdout is redirected to stderr inside the child.
    """

    def __init__(self, max_tasks: int, memory_limit_mb: int = 0):
        task_r, self._task_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelops.executors.child",
                    str(task_r),
                    str(reply_w),
                    str(max_tasks),
                    str(memory_limit_mb),
                ],
                pass_fds=(task_r, reply_w),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(task_r)
            os.close(reply_w)
        self.pid = self.proc.pid
        self.tasks_done = 0
        self._closed = False
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, message: dict, timeout_s: float) -> dict:
        """Send one task and wait for its reply; a dead or late child becomes a failed reply."""
        try:
            send(self._task_w, message)
            reply = recv(self._reply_r, deadline_for(timeout_s))
        except TimeoutError:
            self.kill()
            return timeout_reply(timeout_s)
        except (EOFError, BrokenPipeError):
            returncode = self._wait_dead()
            return death_reply(returncode, f"child process {self.pid}")
        self.tasks_done += 1
        return reply

    def _wait_dead(self, grace: float = 5.0) -> int | None:
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the child's whole process group (grandchildren included) and reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.close_channels()

    def stop(self, grace: float = 2.0) -> None:
        """Ask the child to exit (EOF on its task pipe); kill it if it does not."""
        self.close_channels()
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.proc.poll() is None:
            self.kill()
        else:
            # the child is gone; its group may still hold grandchildren it left behind
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close_channels(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fd in (self._task_w, self._reply_r):
            try:
                os.close(fd)
            except OSError:
                pass
