"""`mops run` and `mops doctor` as real commands against real local clusters."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
MOPS = [sys.executable, "-m", "modelops.cli.main"]


def mops(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MOPS, *args], capture_output=True, text=True, env=clean_env(), timeout=timeout, cwd=REPO)


def test_demo_command_runs_the_sir_study_cold_on_a_local_cluster(tmp_path):
    """What `make demo` runs: real scheduler and workers, cold executor, a fresh PID per task."""
    output = tmp_path / "results.jsonl"
    done = mops("run", "examples/sir/study.json", "--local", "--workers", "2", "--executor", "cold",
                "--output", str(output))
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(results) == 12 and {r["status"] for r in results} == {"ok"}
    pids = {r["provenance"]["pid"] for r in results}
    assert len(pids) == 12
    assert "tasks: 12  succeeded: 12  failed: 0" in done.stdout
    assert "distinct child PIDs, counted as (worker, PID) pairs: 12 for 12 tasks" in done.stdout
    assert done.stdout.count("executor cold (fork)") == 2
    assert "Executor: cold" in done.stdout and "Cold start: fork" in done.stdout
    assert {r["provenance"]["executor"] for r in results} == {"cold"}


def test_resume_runs_only_the_tasks_without_a_result(tmp_path):
    output = tmp_path / "results.jsonl"
    first = mops("run", "examples/sir/study.json", "--local", "--workers", "1", "--executor", "isolated_warm",
                 "--output", str(output))
    assert first.returncode == 0, first.stderr
    lines = output.read_text().splitlines()
    kept = lines[:5]
    output.write_text("\n".join(kept) + "\n" + lines[5][:20])  # as if the client died mid-study
    again = mops("run", "examples/sir/study.json", "--local", "--workers", "1", "--executor", "isolated_warm",
                 "--output", str(output), "--resume")
    assert again.returncode == 0, again.stderr
    assert "7 tasks" in again.stdout and "5 already done" in again.stdout
    final = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(final) == 12 and len({r["task_id"] for r in final}) == 12
    assert [json.dumps(r, separators=(",", ":")) for r in final[:5]] == kept


def test_failed_tasks_are_reported_and_make_the_run_fail(tmp_path, bundles_dir):
    study = tmp_path / "faulty.json"
    study.write_text(json.dumps({"name": "f", "bundle": "faulty",
                                 "parameters": [{"fault": "none"}, {"fault": "segfault"}, {"fault": "exception"}]}))
    output = tmp_path / "results.jsonl"
    done = mops("run", str(study), "--local", "--workers", "1", "--executor", "cold",
                "--bundles-dir", str(bundles_dir), "--output", str(output))
    assert done.returncode == 1
    assert "succeeded: 1  failed: 2" in done.stdout
    assert "signal: ChildKilled: child process" in done.stderr and "SIGSEGV" in done.stderr
    assert "exception: ValueError: bad parameter set" in done.stderr
    statuses = sorted(json.loads(line)["status"] for line in output.read_text().splitlines())
    assert statuses == ["failed", "failed", "ok"]


@pytest.mark.parametrize("executor", ["cold", "isolated_warm", "direct"])
def test_doctor_confirms_the_executor_workers_really_run(cluster_factory, executor):
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE=executor)
    good = mops("doctor", "--scheduler", cluster.address, "--expect-executor", executor, "--probe-tasks", "3")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("OK worker") == 2 and "all 2 worker(s) OK" in good.stdout
    probe_pids = [json.loads(m) for m in re.findall(r"probe PIDs=(\[[^\]]*\])", good.stdout)]
    for pids in probe_pids:
        assert len(pids) == 3
        assert len(set(pids)) == (3 if executor == "cold" else 1)


def test_doctor_names_each_mismatching_worker(cluster_factory):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_WORKER_GROUP="leaky")
    cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "isolated_warm", "MODELOPS_WORKER_GROUP": "fast"})
    cluster.wait_for_workers(2)
    bad = mops("doctor", "--scheduler", cluster.address, "--expect-executor", "cold")
    assert bad.returncode == 1
    mismatch = [line for line in bad.stdout.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatch) == 1 and "group=fast executor=isolated_warm" in mismatch[0]
    assert "runs executor isolated_warm, expected cold" in bad.stdout
    assert "1 of 2 worker(s) do not match" in bad.stderr
    only_leaky = mops("doctor", "--scheduler", cluster.address, "--expect-executor", "cold", "--group", "leaky")
    assert only_leaky.returncode == 0 and "all 1 worker(s) OK" in only_leaky.stdout


def test_doctor_with_no_reachable_scheduler_exits_2():
    done = mops("doctor", "--scheduler", "tcp://127.0.0.1:9", "--timeout", "2", timeout=60)
    assert done.returncode == 2 and "cannot reach scheduler" in done.stderr


def test_a_study_whose_bundle_does_not_exist_fails_before_any_task(tmp_path, bundles_dir):
    study = tmp_path / "missing.json"
    study.write_text(json.dumps({"name": "m", "bundle": "no_such_bundle", "parameters": [{"a": 1}]}))
    done = mops("run", str(study), "--local", "--workers", "1", "--executor", "isolated_warm",
                "--bundles-dir", str(bundles_dir))
    assert done.returncode == 1
    assert "study 'm': bundle 'no_such_bundle' not found: no directory" in done.stderr
    assert "MODELOPS_BUNDLES_DIR=" in done.stderr


def test_run_against_a_cluster_without_workers_gives_up_with_a_clear_error(cluster_factory):
    cluster = cluster_factory(n_workers=0)
    done = mops("run", "examples/sir/study.json", "--scheduler", cluster.address, "--wait-workers", "2")
    assert done.returncode == 4  # unreachable, not failed: a runner pod of `mops jobs` is retried
    assert "no worker connected to" in done.stderr and "within 2 s" in done.stderr


def test_a_fallback_to_spawn_is_shown_by_run_and_fails_doctor_expecting_fork(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="cold")
    expect_fork = ("doctor", "--scheduler", cluster.address, "--expect-executor", "cold",
                   "--expect-cold-start", "fork", "--probe-tasks", "2")
    good = mops(*expect_fork)
    assert good.returncode == 0, good.stdout + good.stderr
    study = tmp_path / "threaded.json"
    study.write_text(json.dumps({"name": "t", "bundle": "threaded_import", "parameters": [{"i": 1}, {"i": 2}]}))
    done = mops("run", str(study), "--scheduler", cluster.address)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "executor cold (fork)" in done.stdout
    assert re.search(r"bundle threaded_import@sha256:\w+ served by spawn instead of fork \(2 task\(s\)\): "
                     r".*import-thread", done.stdout), done.stdout
    assert "cold tasks per start method (as really started): {'spawn': 2}" in done.stdout
    bad = mops(*expect_fork)
    assert bad.returncode == 1
    assert "serves bundle(s) by spawn instead of fork: threaded_import@sha256:" in bad.stdout
    assert "cannot be forked safely" in "".join(cluster.worker_logs())
