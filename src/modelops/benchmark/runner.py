"""`mops bench`: the same task N times through each executor, side by side.

Tasks go through `WorkerRuntime.execute` from `concurrency` threads, exactly as a Dask
worker with that many threads calls its executor. Each (executor, concurrency) pair gets
a fresh runtime with `slots = concurrency`; its first `concurrency` tasks are warm-up
(pool/zygote start, reported as `first_task_ms`) and are excluded from the statistics.
The measured tasks run in interleaved rounds (every executor's chunk in turn, `rounds`
times), so background load that drifts during a run does not favour one executor.

CPU per task counts every process involved: this process (all threads, RUSAGE_SELF),
reaped children (RUSAGE_CHILDREN: cold-spawn children), and every live descendant
(utime+stime+cutime+cstime from /proc: warm children, zygotes and, through the zygotes'
cutime/cstime, the forked children they reaped). Deltas over the measured batch only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelops.tasks import Task
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime

EXECUTORS = {
    "direct": {"MODELOPS_EXECUTOR_TYPE": "direct"},
    "isolated_warm": {"MODELOPS_EXECUTOR_TYPE": "isolated_warm"},
    "cold-spawn": {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "spawn"},
    "cold-fork": {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "fork"},
}
DEFAULT_HEAVY = ("numpy", "scipy.stats", "pandas")
MODES = {"trivial": "bench_model:trivial", "realistic": "bench_model:sir"}
BUNDLE_NAME = "bench"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the bundle -------------------------------------------------------------------------
def write_bundle(bundles_dir: Path, heavy_modules: list[str]) -> Path:
    """A file bundle `bench` whose module imports `heavy_modules` at import time."""
    directory = bundles_dir / BUNDLE_NAME
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("bench_model.py"), directory / "bench_model.py")
    (directory / "heavy_modules.json").write_text(json.dumps(list(heavy_modules)))
    (directory / "bundle.json").write_text(
        json.dumps({"name": BUNDLE_NAME, "version": "1", "entrypoint": MODES["trivial"]})
    )
    return directory


# ---- CPU accounting ---------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and everything it started (see module doc)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for pid in descendants(os.getpid()):
        fields = _stat_fields(pid)
        if fields:
            # after ")" : state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based
            total += sum(int(fields[k]) for k in (11, 12, 13, 14)) / _CLK_TCK
    return total


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

    def stats(self) -> dict:
        walls = sorted(self.walls_ms)
        return {
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


class Bench:
    """One executor at one concurrency: a runtime with `slots = concurrency`, warmed up."""

    def __init__(self, executor: str, concurrency: int, bundles_dir: Path, entrypoint: str, params: dict):
        env = {"MODELOPS_BUNDLES_DIR": str(bundles_dir), **EXECUTORS[executor]}
        self.runtime = WorkerRuntime(RuntimeConfig.from_env(env), f"bench-{executor}", slots=concurrency)
        self.bundle = self.runtime.resolver.resolve(BUNDLE_NAME)
        self.entrypoint = entrypoint
        self.params = params
        self.m = Measurement(executor, concurrency, 0, first_task_ms=math.nan)
        self._next = 0

    def task(self, i: int) -> Task:
        return Task(
            bundle=BUNDLE_NAME, bundle_digest=self.bundle.digest, entrypoint=self.entrypoint,
            params={**self.params, "i": i}, seed=1000 + i,
        )

    def warm_up(self) -> None:
        """The first `concurrency` tasks pay pool/zygote start: reported, never in the stats."""
        tasks = [self.task(-1 - i) for i in range(self.m.concurrency)]
        walls, failures = _run_batch(self.runtime, tasks, self.m.concurrency, 0.0)
        self.m.first_task_ms = walls[0]
        self.m.failures.extend(failures)

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
) -> dict[str, Measurement]:
    """All executors at one concurrency, interleaved in `rounds` rounds (A B C D, A B C D, ...)
    so that drifting background load on the machine hits every executor alike."""
    benches: dict[str, Bench] = {}
    try:
        for executor in executors:
            if progress:
                progress(f"x{concurrency} {executor}: starting (warm-up)")
            benches[executor] = bench = Bench(executor, concurrency, bundles_dir, entrypoint, params)
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
) -> dict:
    """Measure every executor at every concurrency; the dict that `--json` writes."""
    entrypoint = MODES[mode]
    params = dict(params or {})
    by_concurrency: dict[str, dict[str, dict]] = {}
    failures: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        bundles_dir = Path(tmp)
        write_bundle(bundles_dir, list(heavy_modules))
        counts = {e: min(n_tasks, spawn_tasks) if e == "cold-spawn" else n_tasks for e in executors}
        rounds = max(1, min(rounds, max(counts.values())))
        for concurrency in concurrencies:
            measured = measure_concurrency(
                executors, concurrency, counts, bundles_dir, entrypoint, params, rounds,
                gap_s=gap_ms / 1000, progress=progress,
            )
            row: dict[str, dict] = {}
            for executor, m in measured.items():
                row[executor] = m.stats()
                if m.failures:
                    failures[f"{executor} x{concurrency}"] = m.failures[:5]
            warm = row.get("isolated_warm")
            for stats in row.values():
                if warm:
                    stats["overhead_vs_warm_p50_ms"] = round(stats["p50_ms"] - warm["p50_ms"], 3)
            by_concurrency[str(concurrency)] = row
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
        "targets": {c: check_targets(row, mode) for c, row in by_concurrency.items()},
        "failures": failures,
        "machine": machine_info(),
    }
    return result


def check_targets(row: dict[str, dict], mode: str) -> list[dict]:
    """Issue 3's targets for cold-fork, checked against one concurrency's numbers."""
    fork, warm, spawn = row.get("cold-fork"), row.get("isolated_warm"), row.get("cold-spawn")
    checks = []

    def add(name: str, value: float, limit: float, ok: bool, unit: str = "ms") -> None:
        checks.append({"target": name, "value": round(value, 3), "limit": round(limit, 3), "unit": unit, "met": ok})

    if fork and warm:
        if mode == "trivial":
            add("cold-fork p50 <= warm p50 + 10 ms", fork["p50_ms"], warm["p50_ms"] + 10,
                fork["p50_ms"] <= warm["p50_ms"] + 10)
            add("cold-fork p95 <= warm p95 + 25 ms", fork["p95_ms"], warm["p95_ms"] + 25,
                fork["p95_ms"] <= warm["p95_ms"] + 25)
            add("cold-fork CPU <= 20 ms/task", fork["cpu_ms_per_task"], 20, fork["cpu_ms_per_task"] <= 20)
        else:
            add("cold-fork p50 <= 1.2 x warm p50", fork["p50_ms"], 1.2 * warm["p50_ms"],
                fork["p50_ms"] <= 1.2 * warm["p50_ms"])
    if fork and spawn and mode == "trivial":
        speedup = spawn["p50_ms"] / fork["p50_ms"] if fork["p50_ms"] > 0 else math.inf
        add("cold-fork >= 50x faster than cold-spawn (p50)", speedup, 50, speedup >= 50, unit="x")
    return checks


def machine_info() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


# ---- output ----------------------------------------------------------------------------
COLUMNS = (
    ("executor", "{:<14}", None),
    ("tasks", "{:>6}", "tasks"),
    ("first ms", "{:>10.1f}", "first_task_ms"),
    ("p50 ms", "{:>9.2f}", "p50_ms"),
    ("p95 ms", "{:>9.2f}", "p95_ms"),
    ("CPU ms/task", "{:>12.2f}", "cpu_ms_per_task"),
    ("tasks/s", "{:>9.1f}", "tasks_per_s"),
    ("p50 vs warm", "{:>12}", "overhead_vs_warm_p50_ms"),
)


def format_table(result: dict) -> str:
    lines = [
        f"mops bench: mode={result['mode']} heavy modules={','.join(result['heavy_modules']) or '(none)'} "
        f"tasks={result['tasks']} (cold-spawn {result['spawn_tasks']}) rounds={result['rounds']} "
        f"gap={result['gap_ms']:g} ms "
        f"cpus={result['machine']['cpus']} load={result['machine']['load_avg_1m']}",
    ]
    header = "".join(
        fmt.replace(".1f", "").replace(".2f", "").format(title) for title, fmt, _ in COLUMNS
    )
    for concurrency, row in result["by_concurrency"].items():
        lines += ["", f"concurrency {concurrency}", header]
        for name, stats in row.items():
            cells = []
            for title, fmt, key in COLUMNS:
                if key is None:
                    cells.append(fmt.format(name))
                elif key == "overhead_vs_warm_p50_ms":
                    value = stats.get(key)
                    cells.append(fmt.format("-" if value is None else f"{value:+.2f} ms"))
                else:
                    cells.append(fmt.format(stats[key]))
            lines.append("".join(cells))
        for check in result["targets"].get(concurrency, []):
            unit = check["unit"]
            lines.append(
                f"  {'MET    ' if check['met'] else 'NOT MET'} {check['target']}: "
                f"{check['value']:.2f}{unit if unit == 'x' else ' ' + unit} (limit {check['limit']:.2f})"
            )
    for where, errors in result["failures"].items():
        lines.append(f"FAILED tasks in {where}: {errors[0]}")
    return "\n".join(lines)
