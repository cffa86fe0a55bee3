"""The cold-fork zygote: a clean, single-threaded process that imports a bundle once
and forks one child per task. It never runs a task itself.

`python -m modelops.executors.zygote CONTROL_FD SPEC_JSON`

Started by exec from the Dask worker (`cold_fork.ZygoteHandle`), never by forking the
multi-threaded worker. SPEC_JSON: {"bundle", "entrypoint", "import_path", "modules", "bundle_modules",
"memory_limit_mb", "warmup"}. After the imports the zygote runs the bundle's declared warm-up
(bundles/warmup.py) once, before the single-threaded check and before any fork.

Control channel: a SOCK_SEQPACKET unix socket (one message = one datagram).
- worker -> zygote: a message of N bytes b"F" asks for N new spare children.
  EOF (the worker closed it or died) -> kill every child's process group, reap, exit.
- zygote -> worker: pickled tuples
  ("ready", info)              once, after the imports and warm-up (info: pid, threads, import
                               errors, seconds, warm-up seconds and its error's traceback)
  ("spare", pid) + 3 fds       a new child, waiting for its task on the attached socket; the fds are
                               its socket, a pidfd (opened before the child could be reaped, so the
                               worker never signals a reused PID) and the memfd its faulthandler
                               writes a fatal signal's traceback to
  ("exit", pid, returncode)    a child was reaped (returncode < 0: killed by that signal); what was
                               left of its process group was killed just before, while the dead
                               child still held the group's number
  ("threaded", info)           the zygote is no longer single-threaded: it refuses every further
                               fork; running children finish; it exits when the worker closes it
  ("fork_failed", message)     fork() itself failed (e.g. EAGAIN)

Child channel (one socketpair per child): the worker sends one protocol message
(`protocol.send`: {"job", "bundle"}); the child answers one byte ACK as soon as it has
read the task (so the worker can tell "died before starting" from "died in the task"),
then one protocol reply, then `_exit`s.
"""

from __future__ import annotations

import os

import ctypes
import faulthandler
import gc
import importlib
import json
import pickle
import select
import signal
import socket
import sys
import time
import traceback

ACK = b"\x01"
FORK_REQUEST = b"F"
_PR_SET_PDEATHSIG = 1
# how long a fresh zygote waits for threads started at import to finish before
# declaring itself multi-threaded
STARTUP_THREAD_GRACE_S = 1.0
# the end of a failed warm-up's traceback that is reported (its last lines name the error)
WARMUP_ERROR_CHARS = 8000


def rng_types() -> tuple[tuple[type, ...], list[int]]:
    """Generator types whose state a fork clones, and the global instances every task reseeds.

    Only modules already imported are looked at (numpy is never imported just to check)."""
    types: list[type] = []
    reseeded: list[int] = []
    random_module = sys.modules.get("random")
    if random_module is not None:
        types.append(random_module.Random)
        reseeded.append(id(getattr(random_module, "_inst", None)))
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        types.extend(
            t for t in (getattr(numpy_random, n, None) for n in ("Generator", "RandomState", "BitGenerator"))
            if isinstance(t, type)
        )
        mtrand = sys.modules.get("numpy.random.mtrand")
        reseeded.append(id(getattr(mtrand, "_rand", None)))
    return tuple(types), reseeded


def find_import_rngs(modules: list) -> list[str]:
    """Random generators reachable from `modules` (attributes, and items/attributes of containers
    one level deep) that every forked child would inherit with the same state.

    `random`'s and numpy's global generators are not listed: every task reseeds them."""
    types, reseeded = rng_types()
    if not types:
        return []
    system_random = getattr(sys.modules.get("random"), "SystemRandom", None)
    found: list[str] = []

    def check(value, where: str) -> bool:
        if isinstance(value, types) and id(value) not in reseeded:
            if system_random is None or not isinstance(value, system_random):  # no state to clone
                kind = type(value)
                found.append(f"{where} ({kind.__module__}.{kind.__qualname__})")
            return True
        return False

    for module in modules:
        for name, value in list(vars(module).items()):
            where = f"{module.__name__}.{name}"
            if check(value, where) or isinstance(value, (type, type(sys), type(check), type(len))):
                continue  # classes, modules and functions are not containers of generators
            if isinstance(value, dict):
                items = [(f"{where}[{k!r}]", v) for k, v in list(value.items())[:10000]]
            elif isinstance(value, (list, tuple, set, frozenset)):
                items = [(f"{where}[{i}]", v) for i, v in enumerate(list(value)[:10000])]
            elif type(value).__module__ != "builtins" and isinstance(getattr(value, "__dict__", None), dict):
                items = [(f"{where}.{k}", v) for k, v in list(vars(value).items())]
            else:
                continue
            for item_where, item in items:
                check(item, item_where)
    return found


def bundle_modules(spec: dict) -> list:
    """The bundle's own modules: those under its directory, and the entrypoint's package."""
    import_path = spec.get("import_path")
    root = os.path.realpath(import_path) + os.sep if import_path else None
    tops = {name.split(".")[0] for name in spec.get("bundle_modules", [])}
    found = []
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        origin = getattr(module, "__file__", None)
        if name.split(".")[0] in tops or (root and origin and os.path.realpath(origin).startswith(root)):
            found.append(module)
    return found


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def thread_names() -> list[str]:
    """Each thread's Python name when it is a Python thread, else its native name (comm)."""
    python_names = {}
    threading = sys.modules.get("threading")  # never imported here just to look
    if threading is not None:
        python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    names = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        name = python_names.get(int(tid))
        if name is None:
            try:
                with open(f"/proc/self/task/{tid}/comm") as fh:
                    name = fh.read().strip()
            except OSError:
                continue
        names.append(name)
    return names


class Zygote:
    def __init__(self, control_fd: int, spec: dict):
        self.pid = os.getpid()
        self.ctl = socket.socket(fileno=control_fd)
        self.spec = spec
        self.memory_limit_mb = int(spec.get("memory_limit_mb") or 0)
        self.children: set[int] = set()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.forked = 0
        self.refusing = False  # multi-threaded: no more forks, drain and wait to be retired

    # ---- start-up -------------------------------------------------------------------
    def load(self) -> dict:
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
        from modelops.executors import child as child_helpers  # noqa: F401
        from modelops.executors import invoke, protocol  # noqa: F401

        warmup_s, warmup_error = self.warm_up()
        # after the warm-up: a generator it left in a module is cloned into every child too
        import_rngs = find_import_rngs(bundle_modules(self.spec))
        deadline = time.monotonic() + STARTUP_THREAD_GRACE_S
        while thread_count() > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        gc.collect()
        gc.freeze()  # children never touch these objects' GC headers: fewer copy-on-write faults
        return {
            "pid": self.pid,
            "threads": thread_count(),
            "thread_names": thread_names(),
            "import_errors": errors,
            "import_rngs": import_rngs,
            "import_s": time.perf_counter() - t0,
            "warmup_s": warmup_s,
            "warmup_error": warmup_error,
        }

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
                self.tell(("threaded", {"pid": self.pid, "threads": threads, "thread_names": thread_names()}))
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
            self.child_main(fd, fault_fd)
        child_end.close()
        self.children.add(pid)
        self.forked += 1
        pidfd = os.pidfd_open(pid)  # not reaped before this: only this loop reaps
        try:
            self.tell(("spare", pid), [parent_end.fileno(), pidfd, fault_fd])
        except OSError:
            self.shutdown(0)
        finally:
            parent_end.close()
            os.close(pidfd)
            os.close(fault_fd)

    def prewarm(self) -> None:
        """Task-independent work a spare does while it waits, so that the copy-on-write page
        faults and cold caches on the path every task takes are paid before the task arrives.
        Nothing here can change a result: run_job reseeds the global RNGs from the task seed."""
        try:
            from modelops.bundles.bundle import Bundle
            from modelops.executors.invoke import check_outputs, seed_global_rngs

            entrypoint = self.spec.get("entrypoint") or ""
            bundle = Bundle(
                name=self.spec.get("bundle", ""), version="", entrypoint=entrypoint, source="",
                digest="", import_path=self.spec.get("import_path"),
            )
            message = {"job": {"entrypoint": entrypoint, "params": {"p": 0.5, "n": 1}, "seed": 1}, "bundle": bundle}
            pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            if entrypoint.partition(":")[0] in sys.modules:  # never retry a failed import here
                bundle.load_entrypoint(entrypoint)
            seed_global_rngs(0)
            outputs = {"series": [1.0, 2.0], "n": 1, "name": "x"}
            check_outputs(outputs)
            pickle.dumps({"status": "ok", "outputs": outputs, "pid": 0}, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an optimisation only
            pass

    def child_main(self, fd: int, fault_fd: int) -> None:  # pragma: no cover - covered through real processes
        """A forked child: become a clean one-task process, wait for the task, run it, _exit."""
        code = 0
        try:
            os.setsid()  # own session and process group: a timeout kills the whole group
            # die with the zygote, so a dead zygote never leaves unmanaged spares behind
            self._libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.pid:
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
            from modelops.executors.child import limit_memory, run_and_reply
            from modelops.executors.protocol import recv

            limit_memory(self.memory_limit_mb)
            self.prewarm()
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


def main(argv: list[str]) -> None:
    control_fd = int(argv[1])
    spec = json.loads(argv[2])
    os.dup2(2, 1)  # prints (at import or in a task) go to stderr, never to a protocol channel
    zygote = Zygote(control_fd, spec)
    info = zygote.load()
    zygote.tell(("ready", info))
    zygote.serve()


if __name__ == "__main__":
    main(sys.argv)
