"""Shared fixtures: real test bundles (one compiled from C at test time) and runtimes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from modelops.tasks import Task
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime

REPO = Path(__file__).resolve().parent.parent
TEST_BUNDLES = Path(__file__).resolve().parent / "bundles"


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory) -> Path:
    """A MODELOPS_BUNDLES_DIR with the test bundles and the SIR example; libcounter.so built by `cc`."""
    root = tmp_path_factory.mktemp("bundles")
    for source in [*TEST_BUNDLES.iterdir(), REPO / "examples" / "sir"]:
        if source.name != "native_counter":
            shutil.copytree(source, root / source.name)
    install_native_counter(root / "native_counter")
    return root


def install_native_counter(target: Path) -> Path:
    """Copy the native_counter bundle to `target` and build its C library there with `cc`."""
    shutil.copytree(TEST_BUNDLES / "native_counter", target)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-o", str(target / "libcounter.so"), str(target / "counter.c")],
        check=True,
    )
    return target


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


def make_task(runtime: WorkerRuntime, bundle: str, params: dict | None = None, seed: int = 0) -> Task:
    resolved = runtime.resolver.resolve(bundle)
    return Task(
        bundle=bundle,
        bundle_digest=resolved.digest,
        entrypoint=resolved.entrypoint,
        params=params or {},
        seed=seed,
    )


# Executor configurations every behaviour test runs under: (id, env).
EXECUTOR_ENVS = {
    "direct": {"MODELOPS_EXECUTOR_TYPE": "direct"},
    "isolated_warm": {"MODELOPS_EXECUTOR_TYPE": "isolated_warm"},
    "cold-spawn": {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "spawn"},
    "cold-fork": {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "fork"},
}
CHILD_EXECUTORS = ["isolated_warm", "cold-spawn", "cold-fork"]
COLD_EXECUTORS = ["cold-spawn", "cold-fork"]
