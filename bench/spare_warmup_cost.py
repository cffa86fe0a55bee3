"""What a forked child pays inside its task, with and without spares repeating the warm-up.

`.venv/bin/python bench/spare_warmup_cost.py [--tasks 40] [--rounds 4] [--models mesa_epidemic,realistic]`

Each model runs under isolated_warm, cold fork (spares repeat the declared warm-up) and cold fork with
`"spares": false`, interleaved in rounds, through WorkerRuntime (concurrency 1). The bundle's entrypoint is
wrapped so the process that runs the task measures the model call itself: its CPU time (user + system:
not the time spent waiting for a core, so the machine's load moves it far less than wall time), its
minor page faults (copy-on-write faults and first touches) and its wall time. The worker-side wall per task
(dispatch included) is reported too. Medians over the measured tasks; the first task of each column
(pool or zygote start) is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WRAPPER = '''"""Wraps the model's entrypoint: what the task's own process spends in the model call."""
import resource
import time

import {module} as _model


def simulate(params, seed):
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    outputs = _model.{function}(params, seed)
    after, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    outputs["_task_cpu_ms"] = 1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    outputs["_task_minflt"] = after.ru_minflt - before.ru_minflt
    outputs["_task_wall_ms"] = 1000 * (t1 - t0)
    return outputs
'''

VARIANTS = {  # column -> (executor env name, spares repeat the warm-up)
    "isolated_warm": ("isolated_warm", True),
    "cold-fork": ("cold-fork", True),
    "cold-fork-nospare": ("cold-fork", False),
}


def wrapped_bundle(source: Path, root: Path, name: str, spares: bool) -> None:
    target = root / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "study.json"))
    manifest = json.loads((target / "bundle.json").read_text())
    module, _, function = manifest["entrypoint"].partition(":")
    (target / "spare_cost_wrapper.py").write_text(WRAPPER.format(module=module, function=function))
    manifest.update(name=name, entrypoint="spare_cost_wrapper:simulate")
    warmup = manifest.get("warmup")
    if warmup:
        manifest["warmup"] = {**warmup, "spares": spares}
    (target / "bundle.json").write_text(json.dumps(manifest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--models", default="mesa_epidemic,realistic")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from modelops.benchmark.executors import EXECUTOR_ENVS
    from modelops.study import Study
    from modelops.tasks import Task
    from modelops.worker.config import RuntimeConfig
    from modelops.worker.runtime import WorkerRuntime

    out: dict = {"load_before": os.getloadavg()[0], "models": {}}
    with tempfile.TemporaryDirectory(prefix="spare-cost-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("NUMBA_CACHE_DIR", str(root / "numba-cache"))
        for model in args.models.split(","):
            source = REPO / "examples" / model
            study = Study.load(source / "study.json")
            tasks = [(dict(p), study.replicate_seed(r)) for p in study.parameters for r in range(study.replicates)]
            runtimes, names = {}, {}
            for column, (executor, spares) in VARIANTS.items():
                names[column] = f"{model}_{column.replace('-', '_')}"
                wrapped_bundle(source, root, names[column], spares)
            for column, (executor, _) in VARIANTS.items():
                env = {"MODELOPS_BUNDLES_DIR": str(root), "MODELOPS_BUNDLE_CACHE_DIR": str(root / "cache"),
                       **EXECUTOR_ENVS[executor]}
                runtimes[column] = WorkerRuntime(RuntimeConfig.from_env(env), "bench", 1)
            samples: dict[str, list[dict]] = {c: [] for c in VARIANTS}
            try:
                for column, runtime in runtimes.items():  # pool / zygote start, not measured
                    runtime.execute(task_of(runtime, names[column], *tasks[0], Task))
                per_round = max(1, args.tasks // args.rounds)
                i = 0
                for _ in range(args.rounds):
                    for column, runtime in runtimes.items():
                        for k in range(per_round):
                            params, seed = tasks[(i + k) % len(tasks)]
                            t0 = time.perf_counter()
                            result = runtime.execute(task_of(runtime, names[column], params, seed, Task))
                            wall = 1000 * (time.perf_counter() - t0)
                            assert result.ok, result.error
                            samples[column].append({"worker_wall_ms": wall, **{
                                key[1:]: value for key, value in result.outputs.items() if key.startswith("_task_")}})
                    i += per_round
            finally:
                for runtime in runtimes.values():
                    runtime.close()
            table = {}
            for column, rows in samples.items():
                table[column] = {key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]}
                table[column]["n"] = len(rows)
            warm = table["isolated_warm"]
            for stats in table.values():
                stats["task_cpu_x_warm"] = round(stats["task_cpu_ms"] / warm["task_cpu_ms"], 3)
                stats["worker_wall_x_warm"] = round(stats["worker_wall_ms"] / warm["worker_wall_ms"], 3)
            out["models"][model] = table
            print(f"\n{model} (concurrency 1, median of {table['isolated_warm']['n']} tasks per column)")
            print(f"{'column':22}{'task CPU ms':>12}{'x warm':>8}{'minor faults':>14}{'task wall ms':>14}"
                  f"{'worker wall ms':>16}{'x warm':>8}")
            for column, s in table.items():
                print(f"{column:22}{s['task_cpu_ms']:12.1f}{s['task_cpu_x_warm']:8.2f}{s['task_minflt']:14.0f}"
                      f"{s['task_wall_ms']:14.1f}{s['worker_wall_ms']:16.1f}{s['worker_wall_x_warm']:8.2f}")
    out["load_after"] = os.getloadavg()[0]
    print(f"\nload average (1 min): {out['load_before']:.2f} before, {out['load_after']:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def task_of(runtime, bundle: str, params: dict, seed: int, task_type):
    resolved = runtime.resolver.resolve(bundle)
    return task_type(bundle=bundle, bundle_digest=resolved.digest, entrypoint=resolved.entrypoint,
                     params=params, seed=seed)


if __name__ == "__main__":
    main()
