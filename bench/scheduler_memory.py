"""Scheduler memory for a large study, with and without `mops run`'s in-flight bound.

    .venv/bin/python bench/scheduler_memory.py --tasks 20000

Starts a real local cluster (direct executor, so the scheduler is what is measured), runs the
same trivial study twice through DaskSimulationService: once with everything submitted at once,
once with the default bound (4 x cluster threads), and prints the scheduler's peak RSS (VmHWM)
growth for each. A fresh scheduler per run, so peaks do not mask each other.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from distributed import Client

from modelops.local_cluster import LocalProcessCluster
from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study

PROBE = "modelops:probe"


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


def run_once(n_tasks: int, bounded: bool, workers: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as bundles, LocalProcessCluster(
        n_workers=workers, nthreads=threads, env={"MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_BUNDLES_DIR": bundles}
    ) as cluster:
        pid = cluster.scheduler.pid
        with Client(cluster.address) as client:
            service = DaskSimulationService(client)
            bundle = service.resolve_bundle(PROBE)
            study = Study(name="mem", bundle=PROBE, parameters=[{"i": i} for i in range(n_tasks)])
            tasks = study.tasks(bundle["digest"], bundle["entrypoint"])
            before = rss_kib(pid, "VmRSS")
            limit = service.default_in_flight() if bounded else n_tasks
            started = time.perf_counter()
            results = service.run(tasks, max_in_flight=limit)
            wall = time.perf_counter() - started
            peak = rss_kib(pid, "VmHWM")
        assert len(results) == n_tasks and all(r.ok for r in results)
        return {
            "mode": f"bounded ({limit} in flight)" if bounded else "unbounded",
            "tasks": n_tasks,
            "scheduler_rss_before_mib": round(before / 1024, 1),
            "scheduler_peak_rss_mib": round(peak / 1024, 1),
            "scheduler_peak_growth_mib": round((peak - before) / 1024, 1),
            "wall_s": round(wall, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [run_once(args.tasks, bounded, args.workers, args.threads) for bounded in (False, True)]
    print(f"{'mode':<28} {'tasks':>7} {'peak RSS MiB':>13} {'growth MiB':>11} {'wall s':>7}")
    for row in rows:
        print(f"{row['mode']:<28} {row['tasks']:>7} {row['scheduler_peak_rss_mib']:>13} "
              f"{row['scheduler_peak_growth_mib']:>11} {row['wall_s']:>7}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
