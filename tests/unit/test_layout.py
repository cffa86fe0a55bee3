"""The layers stay apart: executors never import the worker (its config included), and the code
that runs inside children never imports the worker-side executors or handles."""

from __future__ import annotations

import ast
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


def test_the_client_does_not_import_executors_or_environments():
    """What a client loads to run a study (the CLI, the study loop, the service, the task bodies it
    pickles by reference): never the executors, the bundle environments or the worker's runtime,
    which only workers need (and which pull in process machinery and Prometheus)."""
    loaded = imported_after(["modelops.cli.run", "modelops.cli.doctor", "modelops.services.study_run",
                             "modelops.services.dask_simulation", "modelops.worker.task_bodies"])
    worker_only = {m for m in loaded if m.startswith("modelops.executors")} | (loaded & {
        "modelops.bundles.environments", "modelops.worker.runtime", "modelops.worker.executor_factory",
        "modelops.worker.metrics", "modelops.worker.plugin"})
    assert not worker_only, sorted(worker_only)


# The floors of the package, lowest first: a module imports its own floor and the floors below it,
# never one above (written once, here). Each unit is a top-level module or sub-package of `modelops`.
LAYERS = (
    ("modelops", "settings", "json_files", "failures", "seeding", "tls"),
    ("tasks", "routing", "study"),
    ("bundles",),
    ("executors",),
    ("worker", "scheduler", "sidecar"),
    ("results",),
    ("services", "jobs", "local_cluster"),
    ("benchmark",),
    ("cli", "entrypoint"),
)
PACKAGE = REPO / "src" / "modelops"


def unit_of(module: str) -> str:
    """`modelops.executors.child.zygote` -> `executors`; `modelops` -> `modelops`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "modelops"


def import_edges() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, importing file) for every modelops import, function-level ones too."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        source = unit_of(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "modelops" or name.startswith("modelops."):
                    edges.append((source, unit_of(name), str(path.relative_to(REPO))))
    return edges


def test_every_unit_of_the_package_has_a_floor():
    units = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    units |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    placed = {u for floor in LAYERS for u in floor}
    assert not (units | {"modelops"}) - placed, f"place these in LAYERS: {sorted(units - placed)}"
    assert not placed - units - {"modelops"}, f"LAYERS names what does not exist: {sorted(placed - units)}"


def test_no_import_points_up_a_floor_and_no_cycle_closes():
    floor = {u: i for i, units in enumerate(LAYERS) for u in units}
    edges = import_edges()
    up = sorted({f"{path}: {src} (floor {floor[src]}) imports {dst} (floor {floor[dst]})"
                 for src, dst, path in edges if floor[dst] > floor[src]})
    assert not up, "imports that point up:\n" + "\n".join(up)
    graph: dict[str, set[str]] = {}
    for src, dst, _ in edges:
        if src != dst:
            graph.setdefault(src, set()).add(dst)
    done: set[str] = set()

    def visit(unit: str, trail: tuple[str, ...]) -> None:
        assert unit not in trail, f"import cycle: {' -> '.join((*trail, unit))}"
        if unit not in done:
            for nxt in sorted(graph.get(unit, ())):
                visit(nxt, (*trail, unit))
            done.add(unit)

    for unit in sorted(graph):
        visit(unit, ())
