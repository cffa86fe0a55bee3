"""Issue 22, item 5, on the real cluster: a `helm upgrade` moves a release's workers from cold to
isolated_warm while a study runs. The study, which required nothing, keeps to the executor it started on:
it says what it waits for, naming the change, and fails at its --wait-workers bound with every written
result cold (never a mix). After the release goes back to cold, `--resume` finishes it: each task exactly
once, all cold."""

from __future__ import annotations

import json
import subprocess
import time

from cluster_support import MOPS, load_results

TASKS = 16
TASK_SECONDS = 3
BOUND_S = 25


def test_an_upgrade_that_changes_the_executor_mid_study(releases, tmp_path):
    rel = releases.new("helm4")
    rel.install(["cold.yaml", "local.yaml"], sets=["worker.nthreads=2"])
    try:
        study = tmp_path / "study.json"
        study.write_text(json.dumps({"name": "keeps-cold", "bundle": "sleep", "parameters": [{"seconds": TASK_SECONDS}],
                                     "replicates": TASKS, "base_seed": 3}))
        output = tmp_path / "results.jsonl"
        with rel.port_forward() as address:
            run = subprocess.Popen([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output),
                                    "--chunk-size", "1", "--wait-workers", str(BOUND_S)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + 180
            while not output.exists() or not output.read_text().strip():
                assert time.monotonic() < deadline and run.poll() is None, "no result before the upgrade"
                time.sleep(0.5)
            rel.upgrade(["warm.yaml", "local.yaml"], sets=["worker.nthreads=2"])
            out, _ = run.communicate(timeout=600)
        assert run.returncode == 1, f"exit {run.returncode}:\n{out[-4000:]}"
        assert "executor: cold (pinned at start; --any-executor to allow others)" in out, out[-4000:]
        assert "waiting for workers of executor cold: 0 ready; the study started on cold" in out, out[-4000:]
        assert "connected now: isolated_warm" in out, out[-4000:]
        assert (f"no connected worker served executor cold for {BOUND_S} s (the bound, --wait-workers): the study "
                "started on cold") in out, out[-2000:]
        first = load_results(output.read_text())
        assert first and len(first) < TASKS, len(first)
        assert {r["provenance"]["executor"] for r in first} == {"cold"}, "the study mixed executors"

        rel.upgrade(["cold.yaml", "local.yaml"], sets=["worker.nthreads=2"])
        with rel.port_forward() as address:
            resumed = subprocess.run([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output),
                                      "--resume", "--wait-workers", "120"], capture_output=True, text=True,
                                     timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        results = load_results(output.read_text())
        assert sorted(r["task_id"] for r in results) == sorted({r["task_id"] for r in results})
        assert len(results) == TASKS
        assert {r["provenance"]["executor"] for r in results} == {"cold"}
        print(f"\nupgrade cold -> warm mid-study: {len(first)}/{TASKS} results (all cold) before the bound "
              f"({BOUND_S} s) failed the run naming the change; resumed after the rollback to cold: {TASKS} "
              f"results, each once, all cold")
    finally:
        rel.uninstall()
