"""Shared fixtures: real test bundles (one compiled from C at test time), runtimes, and a
resource-leak check every unit test runs under (open descriptors, threads, child processes)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from modelops.bundles.resolver import close_shared_oci_caches
from modelops.local_cluster import LocalProcessCluster
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime
from tests.helpers import REPO, TEST_BUNDLES, install_native_counter


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory) -> Path:
    """A MODELOPS_BUNDLES_DIR with the test bundles and the SIR example; libcounter.so built by `cc`."""
    root = tmp_path_factory.mktemp("bundles")
    for source in [*TEST_BUNDLES.iterdir(), REPO / "examples" / "sir"]:
        if source.name != "native_counter":
            shutil.copytree(source, root / source.name)
    install_native_counter(root / "native_counter")
    return root


@pytest.fixture
def make_runtime(bundles_dir):
    """Build a WorkerRuntime from an env mapping, as the plugin does; closed after the test."""
    runtimes: list[WorkerRuntime] = []

    def make(slots: int = 1, **env: str) -> WorkerRuntime:
        full = {"MODELOPS_BUNDLES_DIR": str(bundles_dir), **env}
        runtime = WorkerRuntime(RuntimeConfig.from_env(full), "test-worker", slots)
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()
    close_shared_oci_caches()  # the process-wide OCI cache holds the bundles it served until the process exits


# ---- resource-leak check (unit tier) ---------------------------------------------------------
# What a unit test leaves behind once its fixtures are torn down: descriptors this process still
# has open, threads still running, and processes it started (at any depth) still alive. A test
# may take LEAK_GRACE_S to let things wind down (a child exiting after EOF, a reader thread
# joining); past it the test fails naming each leak.
LEAK_GRACE_S = 10.0


@pytest.fixture
def cluster_factory(bundles_dir, tmp_path):
    """Real local clusters: `dask scheduler` + `dask worker --preload modelops.worker.preload` processes
    started with env, as a pod is (tests/integration and tests/registry); closed after the test."""
    clusters: list[LocalProcessCluster] = []

    def start(
        n_workers: int = 2, nthreads: int = 1, worker_args: tuple[str, ...] = (), **env: str
    ) -> LocalProcessCluster:
        cluster = LocalProcessCluster(
            n_workers=n_workers,
            env={"MODELOPS_BUNDLES_DIR": str(bundles_dir), **env},
            nthreads=nthreads,
            log_dir=tmp_path / f"cluster{len(clusters)}",
            worker_args=worker_args,
        )
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in clusters:
        cluster.close()


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "leaks_allowed(reason): the unit test leaves threads, descriptors or processes on purpose"
    )


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory's own descriptor, closed by now
            continue
    return fds


def _live_descendants() -> dict[int, str]:
    """Every non-zombie process below this one, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = {}, [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), []):
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                found[pid] = "?"
            todo.append(pid)
    return found


def _leaks(fds: dict[int, str], threads: set[threading.Thread], processes: dict[int, str]) -> list[str]:
    leaks = []
    now_fds = _open_fds()
    leaks += [f"descriptor {fd} -> {target}" for fd, target in now_fds.items() if fds.get(fd) != target]
    leaks += [f"thread {t.name!r}" for t in threading.enumerate() if t not in threads and t.is_alive()]
    leaks += [f"process {pid}: {cmd}" for pid, cmd in _live_descendants().items() if pid not in processes]
    return leaks


@pytest.fixture(autouse=True)
def check_resource_leaks(request):
    """Fail a unit test that leaks descriptors, threads or child processes (the way distributed's
    suite checks thread and process leaks). Other tiers start real servers that outlive a test."""
    if "unit" not in request.path.parts or request.node.get_closest_marker("leaks_allowed"):
        yield
        return
    fds, threads, processes = _open_fds(), set(threading.enumerate()), _live_descendants()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while (leaks := _leaks(fds, threads, processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if leaks:
        pytest.fail("the test leaked:\n  " + "\n  ".join(leaks), pytrace=False)
