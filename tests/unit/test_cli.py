"""`mops` commands that need no cluster, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MOPS = [sys.executable, "-m", "modelops.cli.main"]
REPO = Path(__file__).resolve().parents[2]


def mops(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    return subprocess.run([*MOPS, *args], capture_output=True, text=True, env={**clean, **(env or {})}, timeout=120)


def test_config_check_prints_effective_config(tmp_path):
    done = mops("config", "check", env={"MODELOPS_EXECUTOR": " Cold ", "MODELOPS_BUNDLES_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config["executor"] == "cold" and config["bundles_dir"] == str(tmp_path)


def test_config_check_exits_2_naming_the_variable(tmp_path):
    done = mops("config", "check", env={"MODELOPS_EXECUTOR_TYPE": "clod", "MODELOPS_BUNDLES_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "MODELOPS_EXECUTOR_TYPE='clod' is invalid: allowed one of direct, isolated_warm, cold" in done.stderr


def test_config_check_warns_about_a_typo(tmp_path):
    done = mops("config", "check", env={"MODELOPS_COLD_STRAT": "spawn", "MODELOPS_BUNDLES_DIR": str(tmp_path)})
    assert done.returncode == 0
    assert "did you mean MODELOPS_COLD_START?" in done.stderr


def test_run_needs_exactly_one_target():
    done = mops("run", str(REPO / "examples/sir/study.json"))
    assert done.returncode == 2 and "exactly one of --scheduler ADDRESS or --local" in done.stderr


def test_run_refuses_client_side_executor_for_a_running_cluster():
    done = mops("run", str(REPO / "examples/sir/study.json"), "--scheduler", "tcp://127.0.0.1:1", "--executor", "cold")
    assert done.returncode == 2 and "own environment" in done.stderr


def test_run_rejects_a_bad_study_file_before_connecting(tmp_path):
    study = tmp_path / "s.json"
    study.write_text('{"name": "s", "bundle": "sir", "parameters": [{"beta": 0.3}], "replicates": -1}')
    done = mops("run", str(study), "--scheduler", "tcp://127.0.0.1:1")
    assert done.returncode == 1 and f"study file {study}: replicates" in done.stderr


def test_run_rejects_an_unknown_executor_choice():
    done = mops("run", str(REPO / "examples/sir/study.json"), "--local", "--executor", "clod")
    assert done.returncode == 2 and "'clod' is not one of 'direct', 'isolated_warm', 'cold'" in done.stderr


def test_config_check_exits_2_naming_a_preload_module_that_is_not_installed(tmp_path):
    env = {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_BUNDLES_DIR": str(tmp_path),
           "MODELOPS_COLD_PRELOAD_MODULES": "json,xml.dom.minidom,modelops_no_such_module"}
    done = mops("config", "check", env=env)
    assert done.returncode == 2
    assert "MODELOPS_COLD_PRELOAD_MODULES" in done.stderr
    assert "'modelops_no_such_module': not installed" in done.stderr
    ok = mops("config", "check", env={**env, "MODELOPS_COLD_PRELOAD_MODULES": "json,xml.dom.minidom"})
    assert ok.returncode == 0, ok.stderr


def test_config_check_validates_the_new_settings(tmp_path):
    base = {"MODELOPS_BUNDLES_DIR": str(tmp_path)}
    done = mops("config", "check", env={**base, "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS": "0"})
    assert done.returncode == 2
    assert "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS='0' is invalid: allowed a number > 0" in done.stderr
    done = mops("config", "check", env={**base, "MODELOPS_COLD_IMPORT_RNG": "ignore"})
    assert done.returncode == 2
    assert "MODELOPS_COLD_IMPORT_RNG='ignore' is invalid: allowed one of refuse, spawn" in done.stderr
    config = json.loads(mops("config", "check", env=base).stdout)
    assert config["bundle_import_timeout_seconds"] == 300.0 and config["cold_import_rng"] == "refuse"


def test_run_summary_counts_worker_pid_pairs_and_spawn_fallbacks(capsys):
    """PIDs repeat across pods (one PID namespace each): only (worker, PID) pairs are distinct."""
    from modelops.cli.run import _print_summary
    from modelops.tasks import Provenance, TaskResult

    def result(worker: str, pid: int, start: str) -> TaskResult:
        return TaskResult(
            task_id=f"{worker}-{pid}", status="ok", params={}, seed=0, outputs={},
            provenance=Provenance(executor="cold", cold_start=start, worker=worker, worker_group="default",
                                  pid=pid, bundle="b", bundle_digest="d", started=0.0, duration_s=0.1),
        )

    results = [result(w, pid, "fork") for w in ("tcp://pod-a:1", "tcp://pod-b:1") for pid in (40, 41)]
    results.append(result("tcp://pod-b:1", 42, "spawn"))
    runtimes = {
        "tcp://pod-a:1": {"executor": "cold", "cold_start": "fork", "worker_group": "default"},
        "tcp://pod-b:1": {"executor": "cold", "cold_start": "fork", "worker_group": "default",
                          "spawn_fallbacks": {"b@sha256:1": {"reason": "threads at import", "tasks": 1}}},
    }
    _print_summary(results, runtimes, 1.0)
    out = capsys.readouterr().out
    assert "distinct child PIDs, counted as (worker, PID) pairs: 5 for 5 tasks" in out
    assert "bundle b@sha256:1 served by spawn instead of fork (1 task(s)): threads at import" in out
    assert "cold tasks per start method (as really started): {'fork': 4, 'spawn': 1}" in out
