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
