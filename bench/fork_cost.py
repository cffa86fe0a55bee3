"""Where a cold-fork task's CPU goes, from the kernel's own accounting (issue 13, point 4).

    .venv/bin/python bench/fork_cost.py [--tasks 200] [--concurrency 1,2] [--heavy-modules numpy,scipy.stats,pandas]

Runs the `mops bench` trivial task through `WorkerRuntime` (cold fork) and splits the CPU of
the measured tasks into: the zygote itself (its utime+stime: fork(), i.e. copying page tables,
plus its reaping loop), the forked children (the zygote's cutime+cstime: the child's start-up,
copy-on-write faults, prewarm, the task, exit and its address-space teardown) and the worker
process (this process: dispatch, the protocol, pidfd waits, the replacement-spare requests).
Also prints the zygote's anonymous memory and page-table size, what fork() has to copy.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from modelops.benchmark.runner import DEFAULT_HEAVY, MODES, Bench, _run_batch, write_bundle

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float, int]:
    """(own utime+stime, reaped children's cutime+cstime) in seconds, reaped children's minor faults."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK, (int(fields[13]) + int(fields[14])) / CLK, int(fields[8])


def status(pid: int, *names: str) -> dict[str, str]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in names:
            found[key] = value.strip()
    return found


def measure(concurrency: int, n: int, bundles_dir: Path) -> dict:
    bench = Bench("cold-fork", concurrency, bundles_dir, MODES["trivial"], {})
    try:
        bench.warm_up()
        time.sleep(0.5)
        (zygote,) = bench.runtime.executor.zygote_pids()
        z0, c0, f0 = proc_cpu(zygote)
        s0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        walls, failures = _run_batch(bench.runtime, [bench.task(i) for i in range(n)], concurrency, 0.0)
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)  # the last children's exits are reaped and counted
        z1, c1, f1 = proc_cpu(zygote)
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        mem = status(zygote, "RssAnon", "RssFile", "VmPTE")
    finally:
        bench.close()
    walls.sort()
    worker = (s1.ru_utime + s1.ru_stime) - (s0.ru_utime + s0.ru_stime)
    return {
        "concurrency": concurrency,
        "tasks": n,
        "failed": len(failures),
        "p50_ms": walls[len(walls) // 2],
        "tasks_per_s": n / elapsed,
        "zygote_ms_per_task": 1000 * (z1 - z0) / n,
        "children_ms_per_task": 1000 * (c1 - c0) / n,
        "worker_ms_per_task": 1000 * worker / n,
        "child_minor_faults_per_task": (f1 - f0) / n,
        "zygote_memory": mem,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--heavy-modules", default=",".join(DEFAULT_HEAVY))
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="modelops-forkcost-") as tmp:
        write_bundle(Path(tmp), [m for m in args.heavy_modules.split(",") if m])
        print("| concurrency | p50 ms | tasks/s | zygote CPU ms/task | children CPU ms/task | child minor faults/task | worker CPU ms/task | zygote RssAnon / VmPTE |")
        print("|---|---|---|---|---|---|---|---|")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            r = measure(concurrency, args.tasks, Path(tmp))
            print(f"| {concurrency} | {r['p50_ms']:.2f} | {r['tasks_per_s']:.0f} | {r['zygote_ms_per_task']:.2f} | "
                  f"{r['children_ms_per_task']:.2f} | {r['child_minor_faults_per_task']:.0f} | {r['worker_ms_per_task']:.2f} | "
                  f"{r['zygote_memory'].get('RssAnon')} / {r['zygote_memory'].get('VmPTE')} |"
                  + (f" ({r['failed']} failed)" if r["failed"] else ""))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
