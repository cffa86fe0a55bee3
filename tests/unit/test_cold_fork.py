"""Cold start `fork`: real zygotes, real forked children, real faults. No mocks.

Each test builds a WorkerRuntime from an env mapping exactly as the worker plugin does,
with its own small bundles written to a tmp dir (one compiles a C library with `cc`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelops.executors.cold_fork import ColdForkExecutor
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime
from tests.helpers import install_native_counter, pid_alive, wait_until
from tests.helpers import run_task as run

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")

BUNDLES = {
    # numpy's global RNG and `random`: decided by the task seed, never by the zygote
    "rng": (
        """
        import random
        import numpy as np

        def simulate(params, seed):
            return {"np": np.random.random(4).tolist(), "py": random.random(),
                    "normal": float(np.random.normal())}
        """
    ),
    # what a forked child looks like from the inside
    "introspect": (
        """
        import os, resource, sys, threading

        def simulate(params, seed):
            fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
            targets = {}
            for fd in fds:
                try:
                    targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    pass
            preloaded = sys.modules.get(params.get("preloaded", "?"))
            return {
                "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
                "fds": fds, "fd_targets": list(targets.values()), "threads": len(os.listdir("/proc/self/task")),
                "blas_threads": [os.environ.get(v) for v in
                                 ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")],
                "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
                "preloaded_id": id(preloaded) if preloaded is not None else None,
            }
        """
    ),
    # sleeps; optionally starts a grandchild first; writes its pid to a marker when running
    "sleepy": (
        """
        import os, subprocess, sys, time

        def simulate(params, seed):
            info = {"pid": os.getpid()}
            if params.get("grandchild"):
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                info["grandchild"] = child.pid
            if params.get("marker"):
                with open(params["marker"] + ".tmp", "w") as fh:
                    fh.write(__import__("json").dumps(info))
                os.replace(params["marker"] + ".tmp", params["marker"])
            time.sleep(float(params.get("seconds", 0)))
            return info
        """
    ),
    # starts a thread at import: forking this process would be unsafe
    "threaded_import": (
        """
        import os, threading, time
        threading.Thread(target=time.sleep, args=(600,), name="import-thread", daemon=True).start()

        def simulate(params, seed):
            return {"pid": os.getpid(), "ppid": os.getppid()}
        """
    ),
    # single-threaded after import, but starts a thread ~0.5 s later (on SIGALRM)
    "late_thread": (
        """
        import os, signal, threading, time

        def _start_thread(signum, frame):
            threading.Thread(target=time.sleep, args=(600,), name="late-thread", daemon=True).start()

        signal.signal(signal.SIGALRM, _start_thread)
        signal.setitimer(signal.ITIMER_REAL, 0.5)

        def simulate(params, seed):
            return {"pid": os.getpid(), "ppid": os.getppid()}
        """
    ),
    # random generators created at import: a fork would clone them into every child
    "rng_import": (
        """
        import random
        import numpy as np

        RNG = np.random.default_rng()

        def simulate(params, seed):
            return {"draw": float(RNG.random()), "pid": __import__("os").getpid()}
        """
    ),
    "rng_container": (
        """
        import random

        class Model:
            def __init__(self):
                self.rng = random.Random()

        MODEL = Model()
        STREAMS = {"main": random.Random(5)}

        def simulate(params, seed):
            return {"draw": MODEL.rng.random()}
        """
    ),
    # blocks at import until killed
    "import_hang": (
        """
        import time
        time.sleep(600)

        def simulate(params, seed):
            return {}
        """
    ),
}

@pytest.fixture(scope="module")
def bundles_dir(tmp_path_factory) -> Path:
    """This module's MODELOPS_BUNDLES_DIR (overrides the shared one that `make_runtime` uses)."""
    root = tmp_path_factory.mktemp("cold_fork_bundles")
    for name, source in BUNDLES.items():
        directory = root / name
        directory.mkdir()
        module = f"{name}_model"
        (directory / f"{module}.py").write_text(textwrap.dedent(source))
        (directory / "bundle.json").write_text(
            json.dumps({"name": name, "version": "1", "entrypoint": f"{module}:simulate"})
        )
    # module global AND native static state: both must start from zero in every task
    install_native_counter(root / "state")
    return root


@pytest.fixture
def bundles_root(bundles_dir) -> Path:
    return bundles_dir


@pytest.fixture
def runtime_factory(make_runtime):
    """`make_runtime` over this module's bundles, cold fork unless the env given says otherwise."""

    def make(slots: int = 1, **env: str) -> WorkerRuntime:
        return make_runtime(slots, **{"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "fork", **env})

    return make


@pytest.fixture
def executor_log():
    """Records of the `modelops.executor` logger, whatever handlers other tests configured."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("modelops.executor")
    handler = Keep(level=logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def processes_mentioning(text: str) -> list[int]:
    """Every live process on the machine whose command line contains `text` (orphans too)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def zygote_of(runtime: WorkerRuntime) -> int:
    executor = runtime.executor
    assert isinstance(executor, ColdForkExecutor)
    pids = executor.zygote_pids()
    assert len(pids) == 1, pids
    return pids[0]


# --------------------------------------------------------------------------------------


def test_factory_builds_cold_fork_by_default(runtime_factory):
    runtime = runtime_factory()
    assert isinstance(runtime.executor, ColdForkExecutor)
    assert runtime.executor.name == "cold" and runtime.executor.cold_start == "fork"
    assert runtime.cold_start == "fork"
    assert RuntimeConfig.from_env({"MODELOPS_BUNDLES_DIR": "/"}).cold_start.value == "fork"


def test_fresh_pid_per_task_and_no_state_carried(runtime_factory):
    runtime = runtime_factory()
    results = [run(runtime, "state", {"i": i}, seed=i) for i in range(6)]
    assert all(r.ok for r in results), [r.error for r in results]
    pids = [r.outputs["pid"] for r in results]
    assert pids == [r.provenance.pid for r in results]
    assert len(set(pids)) == 6 and os.getpid() not in pids
    # the module global and the C library's static counter start from zero in every task
    assert [r.outputs["python_calls"] for r in results] == [1] * 6
    assert [r.outputs["native_calls"] for r in results] == [1] * 6
    # every child was forked by the one zygote, which the worker started by exec
    zygote = zygote_of(runtime)
    assert {r.outputs["ppid"] for r in results} == {zygote}
    assert zygote not in pids
    assert ppid_of(zygote) == os.getpid()
    assert b"modelops.executors.child.zygote" in Path(f"/proc/{zygote}/cmdline").read_bytes()
    # each child ran one task and is gone
    wait_until(lambda: not any(pid_alive(p) for p in pids), what="children to exit")


def test_native_and_module_state_results_match_spawn(runtime_factory):
    fork, spawn = runtime_factory(), runtime_factory(MODELOPS_COLD_START="spawn")

    def state_only(result):
        assert result.ok, result.error
        return {k: v for k, v in result.outputs.items() if k not in ("pid", "ppid")}

    for seed in (3, 4):
        forked = [state_only(run(fork, "state", {"i": i}, seed=seed)) for i in range(2)]
        assert forked[0] == forked[1] == state_only(run(spawn, "state", {"i": 0}, seed=seed))


def test_warm_would_have_leaked_the_same_state(runtime_factory):
    """Control: the bundle really does carry state between tasks in one process."""
    runtime = runtime_factory(MODELOPS_EXECUTOR_TYPE="isolated_warm")
    results = [run(runtime, "state", {"i": i}) for i in range(3)]
    assert [r.outputs["native_calls"] for r in results] == [1, 2, 3]
    assert [r.outputs["python_calls"] for r in results] == [1, 2, 3]


def test_global_rngs_match_spawn_for_the_same_seed_and_differ_across_seeds(runtime_factory):
    fork = runtime_factory()
    spawn = runtime_factory(MODELOPS_COLD_START="spawn")
    by_seed = {}
    for seed in (1, 2, 2**32 - 1):
        forked = [run(fork, "rng", {"i": i}, seed=seed).outputs for i in range(2)]
        spawned = run(spawn, "rng", {"i": 0}, seed=seed).outputs
        assert forked[0] == forked[1] == spawned, seed
        by_seed[seed] = spawned
    values = [json.dumps(v, sort_keys=True) for v in by_seed.values()]
    assert len(set(values)) == len(values)


def test_child_is_a_clean_process_group_leader_with_only_its_channel(runtime_factory):
    runtime = runtime_factory(MODELOPS_TASK_MEMORY_LIMIT_MB="4096")
    out = run(runtime, "introspect").outputs
    assert out["sid"] == out["pgid"] == out["pid"]
    assert out["threads"] == 1
    assert out["blas_threads"] == ["1", "1", "1", "1"]
    assert out["rlimit_as"] == 4096 * 1024 * 1024
    # stdin, stdout (-> stderr), stderr, its own channel, its faulthandler memfd, and the fd
    # listing /proc/self/fd
    assert out["fds"][:3] == [0, 1, 2] and len(out["fds"]) <= 6
    assert len(out["fds"]) >= 5
    assert sum("memfd:modelops-faulthandler" in t for t in out["fd_targets"]) == 1


def test_preload_modules_are_imported_once_in_the_zygote(runtime_factory):
    runtime = runtime_factory(MODELOPS_COLD_PRELOAD_MODULES="xml.dom.minidom")
    outs = [run(runtime, "introspect", {"preloaded": "xml.dom.minidom", "i": i}).outputs for i in range(2)]
    # imported before the fork: the same module object (same address) in every child
    assert outs[0]["preloaded_id"] is not None
    assert outs[0]["preloaded_id"] == outs[1]["preloaded_id"]
    assert outs[0]["pid"] != outs[1]["pid"]
    plain = runtime_factory()
    assert run(plain, "introspect", {"preloaded": "xml.dom.minidom"}).outputs["preloaded_id"] is None


def test_spares_are_kept_ready_for_every_slot_plus_one(runtime_factory):
    runtime = runtime_factory(slots=2)
    first = run(runtime, "state")
    assert first.ok
    executor = runtime.executor
    zygote = zygote_of(runtime)
    # zygote + slots + 1 never-used children; the one taken was replaced
    wait_until(lambda: len(executor.child_pids()) == 1 + 3, what="three spares")
    spares = [p for p in executor.child_pids() if p != zygote]
    assert all(ppid_of(p) == zygote for p in spares) and first.provenance.pid not in spares
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: run(runtime, "state", {"i": i}), range(4)))
    assert all(r.ok and r.outputs["native_calls"] == 1 for r in results)
    assert len({r.provenance.pid for r in results} | {first.provenance.pid}) == 5


def test_log_lines_match_spawn(runtime_factory, executor_log):
    runtime = runtime_factory()
    results = [run(runtime, "state", {"i": i}) for i in range(2)]
    messages = [r.getMessage() for r in executor_log]
    for result in results:
        pid = result.provenance.pid
        started = messages.index(f"Cold runner started: PID {pid}")
        running = messages.index(f"Child process PID {pid} running task {result.task_id} (Executor: cold)")
        assert started < running


def test_thread_started_at_import_means_the_bundle_is_served_by_spawn(runtime_factory, executor_log):
    runtime = runtime_factory()
    results = [run(runtime, "threaded_import", {"i": i}) for i in range(2)]
    assert all(r.ok for r in results), [r.error for r in results]
    pids = [r.outputs["pid"] for r in results]
    assert len(set(pids)) == 2
    # no zygote forked them: they are children of the worker (cold spawn)
    assert {r.outputs["ppid"] for r in results} == {os.getpid()}
    assert runtime.executor.zygote_pids() == []
    # provenance says how the processes really started, not what the config asked for
    assert {r.provenance.cold_start for r in results} == {"spawn"}
    warnings = [r.getMessage() for r in executor_log if r.levelno == logging.WARNING]
    assert any("cannot be forked safely" in m and "import-thread" in m for m in warnings), warnings
    # counted, and shown by describe() (which mops doctor and mops run report)
    fallbacks = runtime.describe()["spawn_fallbacks"]
    assert list(fallbacks) == [f"threaded_import@{results[0].provenance.bundle_digest[:19]}"]
    (fallback,) = fallbacks.values()
    assert fallback["tasks"] == 2 and "import-thread" in fallback["reason"]
    assert sum("cannot be forked safely" in m for m in warnings) == 1  # one WARNING per bundle


def test_generators_created_at_import_refuse_fork_naming_module_and_attribute(runtime_factory):
    """Forked children would all draw the same numbers from them: refuse, say what to do."""
    runtime = runtime_factory()
    results = [run(runtime, "rng_import", {"i": i}, seed=i) for i in range(2)]
    for result in results:
        assert result.status == "failed", result.outputs
        error = result.error
        assert error.kind == "runtime" and error.type == "ForkUnsafeBundle" and not error.retryable
        assert "rng_import_model.RNG (numpy.random._generator.Generator)" in error.message
        assert "from the task's seed" in error.message and "MODELOPS_COLD_IMPORT_RNG=spawn" in error.message
    assert runtime.executor.zygote_pids() == []
    assert list(runtime.describe()["refused_bundles"]) == [f"rng_import@{results[0].provenance.bundle_digest[:19]}"]
    # containers one level deep: an object's attribute, a dict's value
    (contained,) = [run(runtime, "rng_container")]
    assert contained.error.type == "ForkUnsafeBundle"
    assert "rng_container_model.MODEL.rng (random.Random)" in contained.error.message
    assert "rng_container_model.STREAMS['main'] (random.Random)" in contained.error.message


def test_generators_created_at_import_run_under_spawn_when_asked(runtime_factory):
    runtime = runtime_factory(MODELOPS_COLD_IMPORT_RNG="spawn")
    results = [run(runtime, "rng_import", {"i": i}, seed=i) for i in range(2)]
    assert all(r.ok for r in results), [r.error for r in results]
    assert {r.provenance.cold_start for r in results} == {"spawn"}
    assert results[0].outputs["draw"] != results[1].outputs["draw"]
    (fallback,) = runtime.describe()["spawn_fallbacks"].values()
    assert fallback["tasks"] == 2 and "rng_import_model.RNG" in fallback["reason"]


def test_a_bundle_hanging_at_import_is_bounded_by_the_import_timeout(runtime_factory):
    """Task timeout 0 (no limit): before, the task waited for the zygote forever."""
    runtime = runtime_factory(MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS="1")
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(run, runtime, "import_hang").result(timeout=60)
    assert result.status == "failed"
    assert result.error.type == "BundleImportTimeout" and result.error.kind == "runtime"
    assert "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS=1" in result.error.message
    assert "'import_hang_model'" in result.error.message
    assert processes_mentioning(str(runtime.config.bundles_dir / "import_hang")) == []


def test_the_task_timeout_covers_waiting_for_the_zygote(runtime_factory):
    runtime = runtime_factory(MODELOPS_TASK_TIMEOUT_SECONDS="1")
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(run, runtime, "import_hang").result(timeout=60)
    assert result.error.kind == "timeout", result.error
    assert "MODELOPS_TASK_TIMEOUT_SECONDS=1" in result.error.message


def test_zygote_that_becomes_multi_threaded_refuses_to_fork_and_is_replaced(runtime_factory, executor_log):
    runtime = runtime_factory(slots=1)
    first = run(runtime, "late_thread")
    assert first.ok
    old = first.outputs["ppid"]
    # the zygote starts a thread 0.5 s after its import
    wait_until(lambda: len(os.listdir(f"/proc/{old}/task")) > 1, what="the zygote's late thread")
    # The old zygote refuses every fork from now on. At most its slots + 1 = 2 spares forked
    # before the thread existed still serve tasks; the third task must come from a new zygote.
    later = [run(runtime, "late_thread", {"i": i}) for i in range(3)]
    assert all(r.ok for r in later), [r.error for r in later]
    assert later[-1].outputs["ppid"] != old
    assert len({r.outputs["pid"] for r in [first, *later]}) == 4
    wait_until(lambda: not pid_alive(old), what="the multi-threaded zygote to be retired")
    warnings = [r.getMessage() for r in executor_log if r.levelno == logging.WARNING]
    assert any("became multi-threaded" in m and "refused to fork" in m for m in warnings), warnings


def test_zygote_killed_between_tasks_is_replaced(runtime_factory):
    runtime = runtime_factory(slots=2)
    first = run(runtime, "state")
    zygote = zygote_of(runtime)
    wait_until(lambda: len(runtime.executor.child_pids()) == 1 + 3, what="three spares")
    spares = [p for p in runtime.executor.child_pids() if p != zygote]
    os.kill(zygote, signal.SIGKILL)
    wait_until(lambda: not pid_alive(zygote), what="the zygote to die")
    second = run(runtime, "state")
    assert first.ok and second.ok, second.error
    assert second.outputs["ppid"] not in (zygote, os.getpid())
    assert second.outputs["native_calls"] == 1
    # the old zygote's spares died with it (PDEATHSIG)
    wait_until(lambda: not any(pid_alive(p) for p in spares), what="the old spares to die")


def test_zygote_killed_mid_task_fails_that_task_clearly(runtime_factory, tmp_path):
    runtime = runtime_factory()
    marker = tmp_path / "running.json"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run, runtime, "sleepy", {"seconds": 60, "marker": str(marker)})
        wait_until(marker.exists, what="the task to start")
        zygote = zygote_of(runtime)
        os.kill(zygote, signal.SIGKILL)
        result = future.result(timeout=30)
    assert result.status == "failed"
    error = result.error
    assert error.kind == "runtime" and error.type == "ZygoteDied" and error.retryable
    assert f"zygote (PID {zygote}) was killed by SIGKILL" in error.message
    assert "not retried" in error.message
    assert result.provenance.pid == json.loads(marker.read_text())["pid"]
    after = run(runtime, "state")
    assert after.ok and after.outputs["ppid"] != zygote


def test_child_killed_in_its_task_is_a_classified_death(runtime_factory, tmp_path):
    runtime = runtime_factory()
    marker = tmp_path / "running.json"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run, runtime, "sleepy", {"seconds": 60, "marker": str(marker)})
        wait_until(marker.exists, what="the task to start")
        os.kill(json.loads(marker.read_text())["pid"], signal.SIGSEGV)
        result = future.result(timeout=30)
    assert result.error.kind == "signal" and result.error.signal == "SIGSEGV"
    assert run(runtime, "state").ok


def test_timeout_kills_the_child_and_its_grandchildren(runtime_factory, tmp_path):
    runtime = runtime_factory(MODELOPS_TASK_TIMEOUT_SECONDS="1")
    marker = tmp_path / "running.json"
    result = run(runtime, "sleepy", {"seconds": 60, "grandchild": True, "marker": str(marker)})
    assert result.error.kind == "timeout"
    info = json.loads(marker.read_text())
    assert result.provenance.pid == info["pid"]
    assert not pid_alive(info["pid"])
    wait_until(lambda: not pid_alive(info["grandchild"]), timeout=5, what="the grandchild to be killed")
    assert run(runtime, "state").ok


def test_close_leaves_no_process_behind(runtime_factory, bundles_root, tmp_path):
    runtime = runtime_factory(slots=2)
    assert run(runtime, "state").ok and run(runtime, "rng").ok
    marker = tmp_path / "running.json"
    pool = ThreadPoolExecutor(1)
    future = pool.submit(run, runtime, "sleepy", {"seconds": 60, "grandchild": True, "marker": str(marker)})
    wait_until(marker.exists, what="the long task to start")
    info = json.loads(marker.read_text())
    known = set(runtime.executor.child_pids()) | {info["pid"], info["grandchild"]}
    assert len(runtime.executor.zygote_pids()) == 3  # state, rng, sleepy
    # every zygote (and every child it forked) carries the bundles dir in its command line
    assert len(processes_mentioning(str(bundles_root))) >= 3 + 1
    runtime.close()
    result = future.result(timeout=30)
    pool.shutdown()
    assert result.status == "failed" and "executor was closed" in result.error.message
    wait_until(lambda: not any(pid_alive(p) for p in known), timeout=5, what="every process to exit")
    assert processes_mentioning(str(bundles_root)) == []
    assert runtime.executor.child_pids() == []


def test_a_bundle_that_fails_to_import_fails_each_task_and_keeps_the_zygote(runtime_factory, bundles_root):
    broken = bundles_root / "broken"
    if not broken.exists():
        shutil.copytree(bundles_root / "state", broken)
        (broken / "bundle.json").write_text(
            json.dumps({"name": "broken", "version": "1", "entrypoint": "missing_module:simulate"})
        )
    runtime = runtime_factory()
    results = [run(runtime, "broken", {"i": i}) for i in range(2)]
    assert all(r.status == "failed" and "cannot import module 'missing_module'" in r.error.message for r in results)
    assert len({r.provenance.pid for r in results}) == 2
    assert len(runtime.executor.zygote_pids()) == 1


def test_concurrent_threads_never_share_a_child(runtime_factory):
    runtime = runtime_factory(slots=2)
    barrier = threading.Barrier(2)

    def go(i):
        barrier.wait()
        return run(runtime, "sleepy", {"seconds": 0.2, "i": i})

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(go, range(6)))
    assert all(r.ok for r in results)
    assert len({r.outputs["pid"] for r in results}) == 6


WORKER_SCRIPT = """
import json, sys, threading
from modelops.tasks import Task
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime
from tests.helpers import install_native_counter

root, marker = sys.argv[1], sys.argv[2]
env = {"MODELOPS_BUNDLES_DIR": root, "MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "fork"}
runtime = WorkerRuntime(RuntimeConfig.from_env(env), "doomed", 2)
bundle = runtime.resolver.resolve("sleepy")
def task(params):
    return Task(bundle="sleepy", bundle_digest=bundle.digest, entrypoint=bundle.entrypoint, params=params, seed=0)
assert runtime.execute(task({"i": 0})).ok
threading.Thread(target=runtime.execute, args=(task({"seconds": 600, "grandchild": True, "marker": marker}),)).start()
threading.Event().wait()
"""


def test_a_worker_killed_with_sigkill_leaves_no_zygote_or_child_behind(bundles_root, tmp_path):
    """No close() at all: the zygote sees EOF on its control socket and takes everything down."""
    root = tmp_path / "doomed_bundles"
    root.mkdir()
    shutil.copytree(bundles_root / "sleepy", root / "sleepy")
    marker = tmp_path / "running.json"
    worker = subprocess.Popen([os.sys.executable, "-c", WORKER_SCRIPT, str(root), str(marker)])
    try:
        wait_until(marker.exists, timeout=60, what="the long task to start")
        info = json.loads(marker.read_text())
        ours = processes_mentioning(str(root))
        assert info["pid"] in ours and len(ours) >= 2  # zygote, spares, the running child
    finally:
        worker.kill()
        worker.wait()
    wait_until(lambda: processes_mentioning(str(root)) == [], timeout=10, what="zygote and children to exit")
    wait_until(lambda: not pid_alive(info["grandchild"]), timeout=10, what="the task's grandchild to be killed")


def test_a_changed_bundle_gets_a_new_zygote_and_the_old_one_is_retired(runtime_factory, bundles_root):
    changing = bundles_root / "changing"
    if changing.exists():
        shutil.rmtree(changing)
    shutil.copytree(bundles_root / "state", changing)
    (changing / "bundle.json").write_text(
        json.dumps({"name": "changing", "version": "1", "entrypoint": "native_counter:simulate"})
    )
    runtime = runtime_factory()
    first = run(runtime, "changing")
    old = first.outputs["ppid"]
    with open(changing / "native_counter.py", "a") as fh:
        fh.write("\nVERSION = 2\n")
    second = run(runtime, "changing")
    assert first.ok and second.ok
    assert second.provenance.bundle_digest != first.provenance.bundle_digest
    assert second.outputs["ppid"] != old
    wait_until(lambda: not pid_alive(old), what="the outdated zygote to exit")
    assert runtime.executor.zygote_pids() == [second.outputs["ppid"]]
