"""The layers stay apart: executors never import the worker (its config included), and the code
that runs inside children never imports the worker-side executors or handles."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

EXECUTORS = REPO / "src" / "modelops" / "executors"


def imported_after(modules: list[str]) -> set[str]:
    """The modelops modules a fresh interpreter has loaded after importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('modelops'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def modules_in(directory, package: str) -> list[str]:
    return [f"{package}.{p.stem}" for p in sorted(directory.glob("*.py")) if p.stem != "__init__"]


def test_executors_do_not_import_the_worker():
    loaded = imported_after(modules_in(EXECUTORS, "modelops.executors"))
    assert not {m for m in loaded if m.startswith(("modelops.worker", "modelops.services", "modelops.cli"))}


def test_code_in_children_does_not_import_worker_side_executors_or_handles():
    loaded = imported_after(modules_in(EXECUTORS / "child", "modelops.executors.child"))
    worker_side = {f"modelops.executors.{name}" for name in (
        "base", "direct", "warm", "cold_spawn", "cold_fork", "child_handle", "zygote_handle", "events")}
    assert not loaded & worker_side, sorted(loaded & worker_side)
    assert not {m for m in loaded if m.startswith("modelops.worker")}
