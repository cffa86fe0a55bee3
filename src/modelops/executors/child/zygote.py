"""The cold-fork zygote: a clean, single-threaded process that imports a bundle once
and forks one child per task. It never runs a task itself.

`python -m modelops.executors.child.zygote CONTROL_FD SPEC_JSON`

Runs inside the zygote process. Started by exec from the Dask worker
(`executors/zygote_handle.ZygoteHandle`), never by forking the
multi-threaded worker. SPEC_JSON: {"bundle", "entrypoint", "import_path", "modules", "bundle_modules",
"memory_limit_mb", "warmup"}. After the imports the zygote runs the bundle's declared warm-up
(bundles/warmup.py) once, before the single-threaded check and before any fork; a short one
(<= SPARE_WARMUP_MAX_S) is repeated by each spare while it waits (`forked.touch_while_waiting`).

Control channel: a SOCK_SEQPACKET unix socket (one message = one datagram).
- worker -> zygote: a message of N bytes b"F" asks for N new spare children.
  EOF (the worker closed it or died) -> kill every child's process group, reap, exit.
- zygote -> worker: pickled tuples
  ("ready", ZygoteReady)       once, after the imports and warm-up (protocol.ZygoteReady: pid,
                               threads, import errors, seconds, warm-up seconds and its error)
  ("spare", pid) + 3 fds       a new child, waiting for its task on the attached socket; the fds are
                               its socket, a pidfd (opened before the child could be reaped, so the
                               worker never signals a reused PID) and the memfd its faulthandler
                               writes a fatal signal's traceback to
  ("exit", pid, returncode)    a child was reaped (returncode < 0: killed by that signal); what was
                               left of its process group was killed just before, while the dead
                               child still held the group's number
  ("threaded", ZygoteThreaded) the zygote is no longer single-threaded: it refuses every further
                               fork; running children finish; it exits when the worker closes it
  ("fork_failed", message)     fork() itself failed (e.g. EAGAIN)

Child channel (one socketpair per child): the worker sends one protocol message
(`protocol.send`: a TaskMessage); the child answers one byte ACK as soon as it has
read the task (so the worker can tell "died before starting" from "died in the task"),
then one protocol reply, then `_exit`s.
"""

from __future__ import annotations

import gc
import importlib
import json
import pickle
import select
import signal
import socket
import os
import sys
import time
import traceback

from modelops.executors.child.fork_checks import bundle_modules, find_import_rngs, thread_count, thread_names
from modelops.executors.child.forked import forked_child_main
from modelops.executors.protocol import FORK_REQUEST, ZygoteReady, ZygoteThreaded

# how long a fresh zygote waits for threads started at import to finish before
# declaring itself multi-threaded
STARTUP_THREAD_GRACE_S = 1.0
# a declared warm-up whose second run in the zygote took at most this long is repeated by every spare while
# it waits for its task (forked.touch_while_waiting); a longer one would keep spares busy when tasks arrive
SPARE_WARMUP_MAX_S = 0.25
# the end of a failed warm-up's traceback that is reported (its last lines name the error)
WARMUP_ERROR_CHARS = 8000


class Zygote:
    def __init__(self, control_fd: int, spec: dict):
        self.pid = os.getpid()
        self.ctl = socket.socket(fileno=control_fd)
        self.spec = spec
        self.children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.refusing = False  # multi-threaded: no more forks, drain and wait to be retired

    # ---- start-up -------------------------------------------------------------------
    def load(self) -> ZygoteReady:
        t0 = time.perf_counter()
        import_path = self.spec.get("import_path")
        if import_path and import_path not in sys.path:
            sys.path.insert(0, import_path)
        errors = []
        for name in self.spec.get("modules", []):
            try:
                importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 - a child reports it again, per task
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        if "numpy" in sys.modules:
            # numpy loads numpy.random lazily (~13 ms); every task seeds it (invoke.run_job)
            importlib.import_module("numpy.random")
        # what every child needs, imported once here rather than once per task
        from modelops.executors import invoke  # noqa: F401
        from modelops.executors.child import runner  # noqa: F401

        warmup_s, warmup_error = self.warm_up()
        if warmup_s is not None and warmup_error is None and (self.spec.get("warmup") or {}).get("spares", True):
            # spares repeat a short warm-up while they wait (forked.touch_while_waiting): timed here on a
            # second run (the first paid one-off costs such as compiling), decided before any fork
            repeat_s, repeat_error = self.warm_up()
            self.spec["spare_warmup"] = repeat_error is None and repeat_s is not None and repeat_s <= SPARE_WARMUP_MAX_S
        # after the warm-up: a generator it left in a module is cloned into every child too
        import_rngs = find_import_rngs(bundle_modules(self.spec))
        deadline = time.monotonic() + STARTUP_THREAD_GRACE_S
        while thread_count() > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        gc.collect()
        gc.freeze()  # children never touch these objects' GC headers: fewer copy-on-write faults
        return ZygoteReady(
            pid=self.pid, threads=thread_count(), thread_names=thread_names(), import_errors=errors,
            import_rngs=import_rngs, import_s=time.perf_counter() - t0, warmup_s=warmup_s, warmup_error=warmup_error,
        )

    def warm_up(self) -> tuple[float | None, str | None]:
        """The bundle's declared warm-up (bundles/warmup.py), once, before any fork: children
        inherit what it compiled and built. (seconds or None when none declared, error or None).
        It runs before the single-threaded check, so a warm-up that starts threads is caught there."""
        warmup = self.spec.get("warmup")
        if not warmup:
            return None, None
        from modelops.bundles.warmup import run_warmup

        t0 = time.perf_counter()
        try:
            run_warmup(warmup, self.spec.get("entrypoint") or "", self.spec.get("import_path"))
        except BaseException as exc:  # noqa: BLE001 - reported to the worker, which refuses the bundle
            text = "".join(traceback.format_exception(exc)).rstrip() or repr(exc)
            if len(text) > WARMUP_ERROR_CHARS:  # the ready report is one datagram (read up to 64 KiB)
                text = "...\n" + text[-WARMUP_ERROR_CHARS:]
            return time.perf_counter() - t0, text
        return time.perf_counter() - t0, None

    def tell(self, message: tuple, fds: list[int] | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if fds:
            socket.send_fds(self.ctl, [data], fds)
        else:
            self.ctl.send(data)

    # ---- main loop ------------------------------------------------------------------
    def serve(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ctl_fd = self.ctl.fileno()
        while True:
            readable, _, _ = select.select([ctl_fd, self._wake_r], [], [])
            if self._wake_r in readable:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                self.reap()
            if ctl_fd in readable:
                try:
                    request = self.ctl.recv(4096)
                except OSError:
                    request = b""
                if not request:
                    self.shutdown(0)
                for _ in range(request.count(FORK_REQUEST)):
                    self.fork_spare()

    def reap(self) -> None:
        """Report every exited child. Before reaping one, kill what is left of its process group
        (grandchildren it started): the dead child still holds the group's number, so the
        number cannot belong to anyone else yet; after the reap it could."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            _, status = os.waitpid(pid, 0)
            self.children.discard(pid)
            try:
                self.tell(("exit", pid, os.waitstatus_to_exitcode(status)))
            except OSError:
                self.shutdown(0)

    def shutdown(self, code: int) -> None:
        """Kill every child's process group (grandchildren included), reap them, exit."""
        for pid in list(self.children):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os._exit(code)

    # ---- forking --------------------------------------------------------------------
    def fork_spare(self) -> None:
        if self.refusing:
            return
        threads = thread_count()
        if threads != 1:
            # Forking a multi-threaded process can leave locks held forever in the child.
            # Refuse, report, and keep serving the children already running (they were
            # forked while single-threaded) until the worker retires this zygote (EOF).
            self.refusing = True
            try:
                self.tell(("threaded", ZygoteThreaded(self.pid, threads, thread_names())))
            except OSError:
                self.shutdown(0)
            return
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fault_fd = os.memfd_create("modelops-faulthandler", os.MFD_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            parent_end.close()
            child_end.close()
            os.close(fault_fd)
            self.tell(("fork_failed", f"fork() failed in zygote {self.pid}: {exc}"))
            return
        if pid == 0:  # pragma: no cover - runs in the child, which _exits
            fd = child_end.detach()
            parent_end.detach()
            self.ctl.detach()
            forked_child_main(self.pid, self.spec, fd, fault_fd)
        child_end.close()
        self.children.add(pid)
        pidfd = os.pidfd_open(pid)  # not reaped before this: only this loop reaps
        try:
            self.tell(("spare", pid), [parent_end.fileno(), pidfd, fault_fd])
        except OSError:
            self.shutdown(0)
        finally:
            parent_end.close()
            os.close(pidfd)
            os.close(fault_fd)

def zygote_main(argv: list[str]) -> None:
    control_fd = int(argv[1])
    spec = json.loads(argv[2])
    os.dup2(2, 1)  # prints (at import or in a task) go to stderr, never to a protocol channel
    zygote = Zygote(control_fd, spec)
    info = zygote.load()
    zygote.tell(("ready", info))
    zygote.serve()


if __name__ == "__main__":
    zygote_main(sys.argv)
