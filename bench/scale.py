"""Client and scheduler memory against a study's size, and a 50 % kill with an exact resume (issue 23, item 5).

    nice -n 10 .venv/bin/python bench/scale.py --sizes 10000,100000 [--kill 1000000] [--json out.json]

For each size N in `--sizes`, on a fresh real local cluster (`LocalProcessCluster`: a `dask scheduler` with
modelops' preload and 2 `dask worker --preload` processes, direct executor), `mops run` runs as its own
process a study of N trivial tasks (the built-in probe bundle: `--params` parameter sets x N/params
replicates, so the study file stays small) with `--chunk-size auto`, writing a results file. A sampler
reads /proc/<pid>/status of the client (by the PID of the process it started) and of the scheduler (by
the PID the cluster recorded) every 0.2 s: peak RSS (VmHWM), the scheduler's RSS before the run, and the
client's RSS at each quarter of the results. The results file is checked exact (every task id of the
study once).

`--kill N`: on another fresh cluster, `mops run` on an N-task study is SIGKILLed once half the results
are written, then `mops run --resume` runs; checked: the file ended at a line boundary, the resumed run
ran exactly the missing tasks (its summary), left the earlier lines untouched, and the final file holds
each of the N task ids exactly once. Every process started here is stopped by its recorded PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from distributed import Client

from modelops.local_cluster import LocalProcessCluster
from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study

MOPS = [sys.executable, "-m", "modelops.cli.main"]
PROBE = "modelops:probe"


def status_kib(pid: int, field: str) -> int | None:
    """A VmRSS/VmHWM field of /proc/<pid>/status in KiB; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def write_study(path: Path, n_tasks: int, n_params: int) -> Study:
    if n_tasks % n_params:
        raise SystemExit(f"--sizes: {n_tasks} is not a multiple of --params {n_params}")
    path.write_text(json.dumps({"name": f"scale-{n_tasks}", "bundle": PROBE, "base_seed": 23,
                                "parameters": [{"i": i} for i in range(n_params)],
                                "replicates": n_tasks // n_params}))
    return Study.load(path)


class Watch(threading.Thread):
    """Samples the client's and the scheduler's memory, and counts the results file's lines as it grows."""

    def __init__(self, client_pid: int, scheduler_pid: int, output: Path, total: int):
        super().__init__(daemon=True)
        self.client_pid, self.scheduler_pid, self.output, self.total = client_pid, scheduler_pid, output, total
        self.done = threading.Event()
        self.lines = self._offset = 0
        self.client_peak = self.scheduler_peak = 0
        self.client_rss_at: dict[str, float | None] = {}  # "25%" -> client RSS MiB when a quarter was written

    def _count(self) -> None:
        if not self.output.exists():
            return
        with self.output.open("rb") as fh:  # new bytes only: the file grows to hundreds of MB
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        self.lines += data.count(b"\n")

    def sample(self) -> None:
        self._count()
        self.client_peak = max(self.client_peak, status_kib(self.client_pid, "VmHWM") or 0)
        self.scheduler_peak = max(self.scheduler_peak, status_kib(self.scheduler_pid, "VmHWM") or 0)
        for quarter in (25, 50, 75, 100):
            key = f"{quarter}%"
            if key not in self.client_rss_at and self.lines * 100 >= quarter * self.total:
                self.client_rss_at[key] = mib(status_kib(self.client_pid, "VmRSS"))

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.2)


def mops_run(cluster: LocalProcessCluster, study_path: Path, output: Path, total: int, resume: bool = False,
             kill_at: int | None = None) -> dict:
    args = [*MOPS, "run", str(study_path), "--scheduler", cluster.address, "--output", str(output),
            "--chunk-size", "auto", "--progress", "lines"] + (["--resume"] if resume else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    log = output.with_name(output.stem + ("-resume" if resume else "") + ".log")
    scheduler_before = status_kib(cluster.scheduler.pid, "VmRSS")
    started = time.perf_counter()
    with log.open("w") as out:  # a file, not a pipe nobody reads while the run is watched
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    watch = Watch(proc.pid, cluster.scheduler.pid, output, total)
    if resume and output.exists():
        watch._offset = output.stat().st_size  # count this run's lines only
    watch.start()
    killed = False
    try:
        while proc.poll() is None:
            if kill_at is not None and watch.lines >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
        wall = time.perf_counter() - started
        watch.done.set()
        watch.join()
    watch.sample()
    stdout = log.read_text()
    return {"returncode": proc.returncode, "killed": killed, "wall_s": round(wall, 1), "stdout": stdout,
            "client_peak_rss_mib": mib(watch.client_peak), "client_rss_mib_at": watch.client_rss_at,
            "scheduler_rss_before_mib": mib(scheduler_before), "scheduler_peak_rss_mib": mib(watch.scheduler_peak),
            "scheduler_rss_after_mib": mib(status_kib(cluster.scheduler.pid, "VmRSS"))}


def task_ids(output: Path) -> list[str]:
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        raise AssertionError(f"half a line at the end of {output}: {data[-200:]!r}")
    return [json.loads(line)["task_id"] for line in data.splitlines()]


def summary_tasks(stdout: str) -> int:
    match = re.search(r"tasks: (\d+)  succeeded: (\d+)  failed: (\d+)", stdout)
    if not match:
        raise AssertionError(f"no summary in mops run's output:\n{stdout[-3000:]}")
    return int(match.group(1))


def exact(ids: list[str], expected: set[str]) -> dict:
    unique = set(ids)
    return {"lines": len(ids), "unique": len(unique), "missing": len(expected - unique),
            "foreign": len(unique - expected), "exact": len(ids) == len(expected) and unique == expected}


def study_ids(cluster: LocalProcessCluster, study: Study) -> set[str]:
    """The study's task ids as the workers key them (their digest of the probe bundle)."""
    with Client(cluster.address) as client:
        bundle = DaskSimulationService(client).resolve_bundle(PROBE)
    return {t.task_id for t in study.iter_tasks(bundle["digest"], bundle["entrypoint"])}


def cluster(tmp: Path, workers: int) -> LocalProcessCluster:
    bundles = tmp / "bundles"
    bundles.mkdir(exist_ok=True)
    return LocalProcessCluster(n_workers=workers, nthreads=1, log_dir=tmp / "cluster",
                               env={"MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_BUNDLES_DIR": str(bundles)})


def full_run(n: int, n_params: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mops-scale-{n}-") as tmp, cluster(Path(tmp), workers) as c:
        study_path, output = Path(tmp) / "study.json", Path(tmp) / "results.jsonl"
        study = write_study(study_path, n, n_params)
        run = mops_run(c, study_path, output, n)
        stdout = run.pop("stdout")
        assert run["returncode"] == 0, stdout[-3000:]
        assert summary_tasks(stdout) == n, stdout[-3000:]
        run["file"] = exact(task_ids(output), study_ids(c, study))
        run["tasks"] = n
        run["tasks_per_s"] = round(n / run["wall_s"], 1)
        return run


def kill_and_resume(n: int, n_params: int, workers: int, fraction: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mops-scale-kill-{n}-") as tmp, cluster(Path(tmp), workers) as c:
        study_path, output = Path(tmp) / "study.json", Path(tmp) / "results.jsonl"
        study = write_study(study_path, n, n_params)
        first = mops_run(c, study_path, output, n, kill_at=int(n * fraction))
        stdout = first.pop("stdout")
        assert first["killed"], f"mops run ended before it could be killed:\n{stdout[-3000:]}"
        kept = output.read_bytes()
        before = task_ids(output)
        first["lines_written"] = len(before)
        first["unique_ids"] = len(set(before))
        resumed = mops_run(c, study_path, output, n - len(set(before)), resume=True)
        stdout = resumed.pop("stdout")
        assert resumed["returncode"] == 0, stdout[-3000:]
        resumed["tasks_run"] = summary_tasks(stdout)
        resumed["missing_before"] = n - len(set(before))
        resumed["ran_exactly_the_missing"] = resumed["tasks_run"] == resumed["missing_before"]
        resumed["earlier_lines_untouched"] = output.read_bytes().startswith(kept)
        resumed["resume_line"] = next((line for line in stdout.splitlines() if line.startswith("Resume from")), None)
        resumed["file"] = exact(task_ids(output), study_ids(c, study))
        resumed["tasks_per_s"] = round(resumed["tasks_run"] / resumed["wall_s"], 1)
        return {"tasks": n, "killed": first, "resumed": resumed,
                "ok": resumed["ran_exactly_the_missing"] and resumed["earlier_lines_untouched"]
                and resumed["file"]["exact"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="Study sizes run to the end, comma-separated.")
    parser.add_argument("--kill", type=int, metavar="N", help="Also kill an N-task study at --kill-at and resume it.")
    parser.add_argument("--kill-at", type=float, default=0.5, help="Fraction of results written when killed.")
    parser.add_argument("--params", type=int, default=100, help="Parameter sets per study (tasks / params replicates).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg(),
                    "runs": []}
    ok = True
    for n in [int(s) for s in args.sizes.split(",") if s]:
        run = full_run(n, args.params, args.workers)
        ok = ok and run["file"]["exact"]
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
    if args.kill:
        report["kill"] = kill_and_resume(args.kill, args.params, args.workers, args.kill_at)
        ok = ok and report["kill"]["ok"]
        print(json.dumps(report["kill"]), flush=True)
    report["load_after"] = os.getloadavg()
    print(f"{'tasks':>9} {'tasks/s':>8} {'client peak MiB':>16} {'scheduler before/peak MiB':>26}")
    for run in report["runs"]:
        print(f"{run['tasks']:>9} {run['tasks_per_s']:>8} {run['client_peak_rss_mib']:>16} "
              f"{run['scheduler_rss_before_mib']:>12} / {run['scheduler_peak_rss_mib']:<11}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
