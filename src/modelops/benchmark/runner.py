"""`mops bench`: the same task N times through each executor, side by side.

Tasks go through `WorkerRuntime.execute` from `concurrency` threads, exactly as a Dask
worker with that many threads calls its executor. Each (executor, concurrency) pair gets
a fresh runtime with `slots = concurrency`; its first `concurrency` tasks are warm-up
(pool/zygote start, reported as `first_task_ms`) and are excluded from the statistics.
The measured tasks run in interleaved rounds (every executor's chunk in turn, `rounds`
times), so background load that drifts during a run does not favour one executor.

CPU per task is measured by `accounting.tree_cpu_s` (every process involved), as deltas over
the measured batch only. The bundles come from `bench_bundle`, the acceptance targets are passed
in (`targets.Targets`), and `report.format_table` prints the result.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelops.benchmark.accounting import tree_cpu_s
from modelops.benchmark.executors import EXECUTOR_ENVS
from modelops.benchmark.bench_bundle import (
    BUNDLE_NAME,
    DEFAULT_HEAVY,
    ENV_BUNDLE_NAME,
    ENV_SUFFIX,
    MODES,
    copy_bundle,
    load_bench_study,
    write_bundle,
    write_environment_bundle,
)
from modelops.benchmark.targets import Targets, check_targets
from modelops.settings import BUNDLE_CACHE_DIR_VARIABLE, BUNDLES_DIR_VARIABLE
from modelops.tasks import Task
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime

EXECUTORS = tuple(EXECUTOR_ENVS)  # the names, in the report's order


# ---- one measurement -------------------------------------------------------------------
@dataclass
class Measurement:
    executor: str
    concurrency: int
    tasks: int
    first_task_ms: float
    walls_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    environment_build_s: float = 0.0  # a bundle environment this column's warm-up built

    def stats(self) -> dict:
        walls = sorted(self.walls_ms)
        return {
            "environment_build_ms": round(1000 * self.environment_build_s, 1),
            "tasks": len(walls),
            "concurrency": self.concurrency,
            "first_task_ms": round(self.first_task_ms, 3),
            "p50_ms": round(percentile(walls, 50), 3),
            "p95_ms": round(percentile(walls, 95), 3),
            "mean_ms": round(statistics.fmean(walls), 3),
            "cpu_ms_per_task": round(1000 * self.cpu_s / len(walls), 3),
            "tasks_per_s": round(len(walls) / self.elapsed_s, 3),
            "failed": len(self.failures),
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _run_batch(runtime: WorkerRuntime, tasks: list[Task], concurrency: int, gap_s: float):
    """Run `tasks` from `concurrency` threads; per-task wall ms (in task order) and failures."""
    walls = [0.0] * len(tasks)
    failures: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(len(tasks)))

    def worker() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            t0 = time.perf_counter()
            result = runtime.execute(tasks[index])
            walls[index] = (time.perf_counter() - t0) * 1000
            if not result.ok:
                with lock:
                    failures.append(f"{result.error.type}: {result.error.message}")
            if gap_s:
                time.sleep(gap_s)

    threads = [threading.Thread(target=worker, name=f"bench-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return walls, failures


@dataclass(frozen=True)
class Variant:
    """What one column of the bench runs: an executor's env and the bundle (directory name)."""

    executor: str  # one of EXECUTORS
    bundle: str = BUNDLE_NAME


class Bench:
    """One executor at one concurrency: a runtime with `slots = concurrency`, warmed up.

    Task i: `tasks(i)` -> (params, seed) when given (a user's study), else the bench
    model's `params` with i added and seed 1000 + i."""

    def __init__(self, executor: str, concurrency: int, bundles_dir: Path, entrypoint: str, params: dict,
                 variant: Variant | None = None, tasks=None):
        variant = variant or Variant(executor)
        # the bench's own cache: a bundle environment is built by the first column that needs it
        env = {BUNDLES_DIR_VARIABLE: str(bundles_dir), BUNDLE_CACHE_DIR_VARIABLE: str(bundles_dir / ".cache"),
               **EXECUTOR_ENVS[variant.executor]}
        self.runtime = WorkerRuntime(RuntimeConfig.from_env(env), f"bench-{executor}", slots=concurrency)
        self.bundle_name = variant.bundle
        self.bundle = self.runtime.resolver.resolve(variant.bundle)
        self.entrypoint = entrypoint
        self.params = params
        self.tasks = tasks
        self.m = Measurement(executor, concurrency, 0, first_task_ms=math.nan)
        self._next = 0

    def task(self, i: int) -> Task:
        if self.tasks is not None:
            params, seed = self.tasks(i)
        else:
            params, seed = {**self.params, "i": i}, 1000 + i
        return Task(
            bundle=self.bundle_name, bundle_digest=self.bundle.digest, entrypoint=self.entrypoint,
            params=params, seed=seed,
        )

    def warm_up(self) -> None:
        """The first `concurrency` tasks pay pool/zygote start: reported, never in the stats."""
        tasks = [self.task(-1 - i) for i in range(self.m.concurrency)]
        walls, failures = _run_batch(self.runtime, tasks, self.m.concurrency, 0.0)
        self.m.first_task_ms = walls[0]
        self.m.failures.extend(failures)
        self.m.environment_build_s = sum(self.runtime.environments.build_seconds)

    def run_chunk(self, n: int, gap_s: float, settle_s: float) -> None:
        if n <= 0:
            return
        tasks = [self.task(self._next + i) for i in range(n)]
        self._next += n
        cpu0 = tree_cpu_s()
        t0 = time.perf_counter()
        walls, failures = _run_batch(self.runtime, tasks, self.m.concurrency, gap_s)
        self.m.elapsed_s += time.perf_counter() - t0
        time.sleep(settle_s)  # children finishing their exit count as this chunk's CPU
        self.m.cpu_s += tree_cpu_s() - cpu0
        self.m.walls_ms.extend(walls)
        self.m.failures.extend(failures)
        self.m.tasks += n

    def close(self) -> None:
        self.runtime.close()


def split(n: int, parts: int) -> list[int]:
    """n tasks in `parts` chunks as even as possible (earlier chunks get the remainder)."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def measure_concurrency(
    executors: tuple[str, ...],
    concurrency: int,
    counts: dict[str, int],
    bundles_dir: Path,
    entrypoint: str,
    params: dict,
    rounds: int,
    gap_s: float = 0.0,
    settle_s: float = 0.2,
    progress=None,
    variants: dict[str, Variant] | None = None,
    tasks=None,
) -> dict[str, Measurement]:
    """All executors at one concurrency, interleaved in `rounds` rounds (A B C D, A B C D, ...)
    so that drifting background load on the machine hits every executor alike."""
    benches: dict[str, Bench] = {}
    try:
        for executor in executors:
            if progress:
                progress(f"x{concurrency} {executor}: starting (warm-up)")
            benches[executor] = bench = Bench(
                executor, concurrency, bundles_dir, entrypoint, params,
                variant=(variants or {}).get(executor), tasks=tasks,
            )
            bench.warm_up()
        time.sleep(settle_s)  # let pools and spares settle: the rounds measure the steady state
        chunks = {executor: split(counts[executor], rounds) for executor in executors}
        for r in range(rounds):
            if progress:
                progress(f"x{concurrency} round {r + 1}/{rounds}")
            for executor in executors:
                benches[executor].run_chunk(chunks[executor][r], gap_s, settle_s)
    finally:
        for bench in benches.values():
            bench.close()
    return {executor: bench.m for executor, bench in benches.items()}


# ---- a whole run -----------------------------------------------------------------------
def run_bench(
    mode: str = "trivial",
    n_tasks: int = 100,
    spawn_tasks: int = 10,
    concurrencies: tuple[int, ...] = (1, 2),
    heavy_modules: tuple[str, ...] = DEFAULT_HEAVY,
    executors: tuple[str, ...] = tuple(EXECUTORS),
    gap_ms: float = 0.0,
    params: dict | None = None,
    rounds: int = 5,
    progress=None,
    targets: Targets = Targets(),
    compare_environment: bool = False,
) -> dict:
    """Measure every executor at every concurrency; the dict that `--json` writes. With
    `compare_environment`, every child executor also runs the bench bundle inside a bundle
    environment (`+env` columns, see `ENV_SUFFIX`)."""
    entrypoint = MODES[mode]
    params = dict(params or {})
    by_concurrency: dict[str, dict[str, dict]] = {}
    failures: dict[str, list[str]] = {}
    labels = list(executors)
    variants = {e: Variant(e) for e in executors}
    if compare_environment:
        for e in executors:
            if e != "direct":  # direct refuses a bundle with its own environment
                variants[e + ENV_SUFFIX] = Variant(e, ENV_BUNDLE_NAME)
                labels.insert(labels.index(e) + 1, e + ENV_SUFFIX)
    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        bundles_dir = Path(tmp)
        write_bundle(bundles_dir, list(heavy_modules))
        if compare_environment:
            write_environment_bundle(bundles_dir)
        counts = {e: min(n_tasks, spawn_tasks) if variants[e].executor == "cold-spawn" else n_tasks for e in labels}
        rounds = max(1, min(rounds, max(counts.values())))
        for concurrency in concurrencies:
            measured = measure_concurrency(
                tuple(labels), concurrency, counts, bundles_dir, entrypoint, params, rounds,
                gap_s=gap_ms / 1000, progress=progress, variants=variants,
            )
            by_concurrency[str(concurrency)] = summarise(measured, concurrency, failures)
    first = by_concurrency[str(concurrencies[0])]
    result = {
        "mode": mode,
        "tasks": n_tasks,
        "spawn_tasks": min(n_tasks, spawn_tasks),
        "concurrency": list(concurrencies),
        "heavy_modules": list(heavy_modules),
        "gap_ms": gap_ms,
        "rounds": rounds,
        "executors": first,
        "by_concurrency": by_concurrency,
        "targets": {c: check_targets(row, mode, targets) for c, row in by_concurrency.items()},
        "failures": failures,
        "machine": machine_info(),
        "environment_effect": {c: environment_effect(row) for c, row in by_concurrency.items()}
        if compare_environment else {},
    }
    return result


def environment_effect(row: dict[str, dict]) -> dict:
    """Cold fork's per-task overhead over warm (p50 difference) inside a bundle environment against
    the same in the worker's own environment: the issue's target is the same within 10 %."""
    own, env = row.get("cold-fork"), row.get("cold-fork" + ENV_SUFFIX)
    warm, warm_env = row.get("isolated_warm"), row.get("isolated_warm" + ENV_SUFFIX)
    if not (own and env and warm and warm_env):
        return {}
    own_ms, env_ms = own["p50_ms"] - warm["p50_ms"], env["p50_ms"] - warm_env["p50_ms"]
    return {"fork_overhead_ms": round(own_ms, 3), "fork_overhead_env_ms": round(env_ms, 3),
            "difference_pct": round(100 * (env_ms / own_ms - 1), 1) if own_ms > 0 else None,
            "build_ms": max(s.get("environment_build_ms", 0.0) for s in row.values())}


def summarise(measured: dict[str, Measurement], concurrency: int, failures: dict[str, list[str]]) -> dict[str, dict]:
    """Each column's stats, with its p50 against isolated_warm's (difference and ratio)."""
    row: dict[str, dict] = {}
    for executor, m in measured.items():
        row[executor] = m.stats()
        if m.failures:
            failures[f"{executor} x{concurrency}"] = m.failures[:5]
    warm = row.get("isolated_warm")
    for stats in row.values():
        if warm:
            stats["overhead_vs_warm_p50_ms"] = round(stats["p50_ms"] - warm["p50_ms"], 3)
            if warm["p50_ms"] > 0:
                stats["p50_vs_warm_x"] = round(stats["p50_ms"] / warm["p50_ms"], 3)
    return row


def machine_info() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


# ---- a user's bundle (mops bench --bundle) ----------------------------------------------
NO_WARMUP = "cold-fork-nowarmup"  # the declared warm-up removed
WITH_WARMUP = "cold-fork+warmup"  # none declared: a candidate from the study's first task
NO_SPARE_WARMUP = "cold-fork-nospare"  # the declared warm-up, not repeated by spares ("spares": false)


def run_bundle_bench(
    bundle_dir: Path,
    study_path: Path | None = None,
    n_tasks: int = 30,
    spawn_tasks: int = 5,
    concurrencies: tuple[int, ...] = (1,),
    executors: tuple[str, ...] = tuple(EXECUTORS),
    gap_ms: float = 0.0,
    rounds: int = 3,
    compare_warmup: bool = True,
    progress=None,
    targets: Targets = Targets(),
) -> dict:
    """A user's bundle under every executor side by side, through WorkerRuntime as workers run
    it, with cold fork both with and without the bundle's warm-up (`compare_warmup`). When the
    bundle declares none, the "with" column tries the entrypoint on the study's first task."""
    from modelops.bundles.bundle import read_manifest
    from modelops.bundles.warmup import describe

    bundle_dir = Path(bundle_dir).resolve()
    manifest = read_manifest(bundle_dir)  # BundleError names the problem
    study, study_file = load_bench_study(bundle_dir, study_path, manifest)
    study_tasks = [(dict(p), study.replicate_seed(r)) for p in study.parameters for r in range(study.replicates)]
    entrypoint = study.entrypoint or manifest["entrypoint"]
    declared = manifest.get("warmup")
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in manifest["name"]) or "bundle"
    variants = {e: Variant(e, name) for e in executors}
    labels = list(executors)
    extra = None
    if compare_warmup and "cold-fork" in executors:
        if declared:
            extra, extra_warmup = NO_WARMUP, None
        else:
            params, seed = study_tasks[0]
            extra, extra_warmup = WITH_WARMUP, {"params": params, "seed": seed}
        variants[extra] = Variant("cold-fork", f"{name}{extra[len('cold-fork'):].replace('+', '-')}")
        labels.insert(labels.index("cold-fork") + 1, extra)
    no_spare = None  # what spares repeating the warm-up while they wait saves, side by side
    if compare_warmup and "cold-fork" in executors and declared and declared.get("spares", True):
        no_spare = {**declared, "spares": False}
        variants[NO_SPARE_WARMUP] = Variant("cold-fork", f"{name}-nospare")
        labels.insert(labels.index("cold-fork") + 1, NO_SPARE_WARMUP)
    counts = {e: min(n_tasks, spawn_tasks) if variants[e].executor == "cold-spawn" else n_tasks for e in labels}
    by_concurrency: dict[str, dict[str, dict]] = {}
    failures: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        bundles_dir = Path(tmp)
        copy_bundle(bundle_dir, bundles_dir, name, manifest, declared)
        if extra:
            copy_bundle(bundle_dir, bundles_dir, variants[extra].bundle, manifest, extra_warmup)
        if no_spare:
            copy_bundle(bundle_dir, bundles_dir, variants[NO_SPARE_WARMUP].bundle, manifest, no_spare)
        rounds = max(1, min(rounds, max(counts.values())))
        for concurrency in concurrencies:
            measured = measure_concurrency(
                tuple(labels), concurrency, counts, bundles_dir, entrypoint, {}, rounds,
                gap_s=gap_ms / 1000, progress=progress, variants=variants,
                tasks=lambda i: study_tasks[i % len(study_tasks)],
            )
            by_concurrency[str(concurrency)] = summarise(measured, concurrency, failures)
    warmup_effect = {}
    if extra:
        for c, row in by_concurrency.items():
            with_w, without = (row["cold-fork"], row[extra]) if declared else (row[extra], row["cold-fork"])
            warmup_effect[c] = {
                "p50_with_ms": with_w["p50_ms"], "p50_without_ms": without["p50_ms"],
                "saves_ms_per_task": round(without["p50_ms"] - with_w["p50_ms"], 3),
            }
    return {
        "mode": "bundle",
        "warmup_effect": warmup_effect,
        "bundle": str(bundle_dir),
        "bundle_name": manifest["name"],
        "entrypoint": entrypoint,
        "study": study_file,
        "study_tasks": len(study_tasks),
        "warmup": describe(declared),
        "warmup_columns": {
            "cold-fork": "warm-up as declared" if declared else "no warm-up (none declared)",
            **({extra: "declared warm-up removed" if declared else
                f"candidate warm-up: {describe(extra_warmup)}"} if extra else {}),
            **({NO_SPARE_WARMUP: "declared warm-up, not repeated by spares while they wait"} if no_spare else {}),
        },
        "tasks": n_tasks,
        "spawn_tasks": min(n_tasks, spawn_tasks),
        "concurrency": list(concurrencies),
        "heavy_modules": [],
        "gap_ms": gap_ms,
        "rounds": rounds,
        "executors": by_concurrency[str(concurrencies[0])],
        "by_concurrency": by_concurrency,
        "targets": {c: check_targets(row, "bundle", targets) for c, row in by_concurrency.items()},
        "failures": failures,
        "machine": machine_info(),
    }


