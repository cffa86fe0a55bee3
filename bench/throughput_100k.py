"""A 100,000-task study of a ~1 ms model through `mops run --local`, run by hand:

    .venv/bin/python bench/throughput_100k.py --tasks 100000 [--json out.json]

`--store URL` adds a results store to the uninterrupted run (the runner pod's peak RSS for such a
study), `--no-kill` skips the killed and resumed runs.

Two runs of the same study (the example SIR bundle, ~0.6-1 ms per task, its full time series
returned), each a real `mops run --local --executor direct` process:
  1. to the end: wall, tasks/s, peak RSS of the client (`mops run`) and of its scheduler (VmHWM,
     sampled from /proc while it runs), and the results file checked complete and exact;
  2. SIGKILLed at --kill-at of the results, then `--resume`: the resumed run must report exactly
     the missing tasks, leave what was written untouched, and end with every task exactly once.
`--no-full` skips run 1. The cluster processes of a killed client are stopped by their recorded
PIDs (children of the killed process, each a session leader).
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

from modelops.bundles import BundleResolver
from modelops.study import Study

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MOPS = [sys.executable, "-m", "modelops.cli.main"]
REPLICATES = 10


def write_study(path: Path, n_tasks: int) -> Study:
    sets = -(-n_tasks // REPLICATES)
    data = {"name": f"sir-{n_tasks}", "bundle": "sir", "replicates": REPLICATES, "base_seed": 15,
            "parameters": [{"beta": round(0.15 + 0.35 * i / sets, 9), "gamma": 0.1} for i in range(sets)]}
    path.write_text(json.dumps(data))
    return Study.load(path)


def status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


class Sampler(threading.Thread):
    """Peak RSS of the client and of its scheduler child, and the scheduler's RSS when first seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.client_peak = 0
        self.scheduler_pid: int | None = None
        self.scheduler_first = self.scheduler_peak = 0
        self.cluster_pids: set[int] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            self.client_peak = max(self.client_peak, status_kib(self.pid, "VmHWM") or 0)
            for child in children(self.pid):
                self.cluster_pids.add(child)
                if self.scheduler_pid is None and " scheduler " in cmdline(child):
                    self.scheduler_pid = child
            if self.scheduler_pid:
                rss, peak = status_kib(self.scheduler_pid, "VmRSS"), status_kib(self.scheduler_pid, "VmHWM")
                if rss and not self.scheduler_first:
                    self.scheduler_first = rss
                self.scheduler_peak = max(self.scheduler_peak, peak or 0)
            self.stop.wait(0.2)


def mops_run(study_path: Path, output: Path, resume: bool = False, kill_at: int | None = None,
             extra: tuple[str, ...] = ()) -> dict:
    args = [*MOPS, "run", str(study_path), "--local", "--workers", "2", "--executor", "direct",
            "--bundles-dir", str(EXAMPLES), "--output", str(output), *extra] + (["--resume"] if resume else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    started = time.perf_counter()
    # files, not pipes: nobody reads a pipe while the run is watched, and a full one would stall it
    log = output.with_suffix(".log")
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = Sampler(proc.pid)
    sampler.start()
    killed = False
    if kill_at is not None:
        lines = offset = 0
        while proc.poll() is None:
            if output.exists():  # count new lines only: the file grows to tens of MB
                with output.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                lines += chunk.count(b"\n")
                if lines >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.05)
    proc.wait()
    stdout = log.read_text()
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    if killed:  # its local cluster outlived it: stop those processes by their recorded PIDs
        for pid in sampler.cluster_pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    return {
        "returncode": proc.returncode, "stdout": stdout, "wall_s": round(wall, 1), "killed": killed,
        "client_peak_rss_mib": round(sampler.client_peak / 1024, 1),
        "scheduler_rss_at_start_mib": round(sampler.scheduler_first / 1024, 1),
        "scheduler_peak_rss_mib": round(sampler.scheduler_peak / 1024, 1),
    }


def check_file(output: Path, expected: set[str]) -> dict:
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        raise AssertionError(f"half a line at the end of {output}")
    ids = [json.loads(line)["task_id"] for line in data.splitlines()]
    return {"lines": len(ids), "unique": len(set(ids)), "exact": set(ids) == expected and len(ids) == len(expected)}


def tasks_run(stdout: str) -> int:
    match = re.search(r"tasks: (\d+)  succeeded: (\d+)  failed: (\d+)", stdout)
    if not match:
        raise AssertionError(f"no summary in mops run's output:\n{stdout[-2000:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--kill-at", type=float, default=0.5, help="Fraction of results written when killed.")
    parser.add_argument("--no-full", action="store_true", help="Skip the uninterrupted run.")
    parser.add_argument("--store", metavar="URL", help="The uninterrupted run also writes to this results store "
                        "(mops run --store URL): its peak RSS is the runner pod's for such a study.")
    parser.add_argument("--no-kill", action="store_true", help="Skip the killed and resumed runs.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict = {"tasks": args.tasks}
    with tempfile.TemporaryDirectory(prefix="mops-100k-") as tmp:
        study_path = Path(tmp) / "study.json"
        study = write_study(study_path, args.tasks)
        digest = BundleResolver("file", EXAMPLES).resolve("sir").digest
        expected = {t.task_id for t in study.iter_tasks(digest, "sir_model:simulate")}
        n = len(expected)
        report["tasks"] = n
        if not args.no_full:
            output = Path(tmp) / "full.jsonl"
            store = ("--store", args.store, "--progress", "lines") if args.store else ()
            run = mops_run(study_path, output, extra=store)
            run["store"] = args.store
            assert run["returncode"] == 0, run["stdout"][-3000:]
            assert tasks_run(run["stdout"]) == n
            run["file"] = check_file(output, expected)
            run["tasks_per_s"] = round(n / run["wall_s"], 1)
            del run["stdout"]
            report["full"] = run
            print(json.dumps({"full": run}), flush=True)
        if args.no_kill:
            print(json.dumps(report, indent=2))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
            return
        output = Path(tmp) / "killed.jsonl"
        first = mops_run(study_path, output, kill_at=int(n * args.kill_at))
        assert first["killed"], "the run ended before it could be killed"
        kept = output.read_bytes()
        first["file"] = check_file(output, expected)
        first["file"]["exact"] = None
        del first["stdout"]
        done_before = first["file"]["lines"]
        resumed = mops_run(study_path, output, resume=True)
        assert resumed["returncode"] == 0, resumed["stdout"][-3000:]
        resumed["tasks_run"] = tasks_run(resumed["stdout"])
        resumed["missing_before"] = n - done_before
        resumed["ran_exactly_the_missing"] = resumed["tasks_run"] == n - done_before
        resumed["earlier_lines_untouched"] = output.read_bytes().startswith(kept)
        resumed["file"] = check_file(output, expected)
        del resumed["stdout"]
        report["killed"], report["resumed"] = first, resumed
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = report["resumed"]["ran_exactly_the_missing"] and report["resumed"]["file"]["exact"] and \
        report["resumed"]["earlier_lines_untouched"] and report.get("full", {}).get("file", {}).get("exact", True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
