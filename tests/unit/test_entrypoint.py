"""The image entrypoint (modelops-entrypoint): command building, env validation, exec.

The exec tests run the real console script in a subprocess: exec replaces that process, so the
process the test started is the one that ends up running the command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelops import entrypoint
from modelops.entrypoint import PRELOAD, SCHEDULER_PRELOAD, build_command

ENTRYPOINT = shutil.which("modelops-entrypoint", path=str(Path(sys.executable).parent))


def run_entrypoint(args, env_extra=None, tmp_path=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    if tmp_path is not None:
        env["MODELOPS_BUNDLES_DIR"] = str(tmp_path)
    env.update(env_extra or {})
    return subprocess.run(
        [ENTRYPOINT, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_console_script_installed():
    assert ENTRYPOINT, "modelops-entrypoint is not installed next to this interpreter"


def test_worker_adds_preload_after_address():
    assert build_command(["worker", "tcp://s:8786", "--nthreads", "2"]) == [
        "dask", "worker", "tcp://s:8786", "--preload", PRELOAD, "--nthreads", "2",
    ]


def test_worker_without_address_still_gets_preload():
    assert build_command(["worker", "--scheduler-file", "/tmp/s.json"]) == [
        "dask", "worker", "--preload", PRELOAD, "--scheduler-file", "/tmp/s.json",
    ]


@pytest.mark.parametrize("form", [["--preload", PRELOAD], [f"--preload={PRELOAD}"]])
def test_worker_preload_not_doubled(form):
    command = build_command(["worker", "tcp://s:8786", *form])
    assert sum(PRELOAD in arg for arg in command) == 1


def test_worker_keeps_users_other_preloads():
    command = build_command(["worker", "tcp://s:8786", "--preload", "mypkg.setup"])
    assert command == ["dask", "worker", "tcp://s:8786", "--preload", PRELOAD, "--preload", "mypkg.setup"]


def test_scheduler_and_other_commands():
    assert build_command(["scheduler", "--port", "8786"]) == [
        "dask", "scheduler", "--preload", SCHEDULER_PRELOAD, "--port", "8786",
    ]
    assert build_command(["scheduler", "--preload", SCHEDULER_PRELOAD]).count(SCHEDULER_PRELOAD) == 1
    assert build_command(["mops", "doctor", "--scheduler", "tcp://x:1"]) == [
        "mops", "doctor", "--scheduler", "tcp://x:1",
    ]


def test_no_role_is_a_usage_error(capsys):
    assert entrypoint.main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_zero(capsys):
    assert entrypoint.main(["--help"]) == 0
    assert "modelops-entrypoint worker" in capsys.readouterr().out


def test_not_pid1_means_no_init():
    assert os.getpid() != 1
    assert entrypoint.find_init(os.environ) is None


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MODELOPS_EXECUTOR_TYPE", "clod"),
        ("MODELOPS_COLD_START", "vfork"),
        ("MODELOPS_TASK_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_invalid_worker_env_exits_2_naming_the_variable_before_dask(tmp_path, var, value):
    # An unreachable scheduler: had Dask started, it would hang here instead of exiting at once.
    proc = run_entrypoint(["worker", "tcp://127.0.0.1:9"], {var: value}, tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert var in proc.stderr and repr(value) in proc.stderr
    assert "not starting Dask" in proc.stderr
    assert "distributed." not in proc.stderr  # no Dask logger ever spoke


def test_missing_bundles_dir_is_invalid(tmp_path):
    proc = run_entrypoint(
        ["worker", "tcp://127.0.0.1:9"], {"MODELOPS_BUNDLES_DIR": str(tmp_path / "nope")}
    )
    assert proc.returncode == 2
    assert "MODELOPS_BUNDLES_DIR" in proc.stderr


def test_valid_worker_env_execs_dask_worker_with_preload(tmp_path):
    # `--help` makes dask worker print its usage and exit: proof that the exec reached `dask worker`.
    proc = run_entrypoint(
        ["worker", "--help"], {"MODELOPS_EXECUTOR_TYPE": " Cold "}, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "--preload" in proc.stdout and "Usage: dask worker" in proc.stdout
    assert '"executor": "cold"' in proc.stderr  # the validated, normalised config is logged first


def test_scheduler_role_execs_dask_scheduler(tmp_path):
    proc = run_entrypoint(["scheduler", "--help"], tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: dask scheduler" in proc.stdout


def test_invalid_worker_groups_stop_the_scheduler_before_dask(tmp_path):
    groups = '[{"name": "cold", "executor": "cold", "nworkers": 1, "nthreads": 1, "min": 3, "max": 2}]'
    proc = run_entrypoint(["scheduler", "--port", "0"], {"MODELOPS_WORKER_GROUPS": groups}, tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "MODELOPS_WORKER_GROUPS" in proc.stderr and "min <= max" in proc.stderr
    assert "not starting Dask" in proc.stderr


def test_other_command_is_exec_in_place_not_a_child():
    # exec, not fork: the shell's PID is the PID of the process this test started.
    proc = subprocess.Popen(
        [ENTRYPOINT, "sh", "-c", 'echo "$$"; exit 7'], stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 7
    assert int(out.strip()) == proc.pid


def test_unknown_command_exits_127():
    proc = run_entrypoint(["no-such-command-modelops"])
    assert proc.returncode == 127
    assert "command not found: no-such-command-modelops" in proc.stderr


@pytest.mark.parametrize("module", ["modelops_no_such_module", "xml.no_such_submodule"])
def test_a_preload_module_that_is_not_installed_exits_2_naming_it_before_dask(tmp_path, module):
    """Before: accepted here, then the worker died after Dask started, with a nanny traceback."""
    env = {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_PRELOAD_MODULES": f"json, {module}"}
    proc = run_entrypoint(["worker", "tcp://127.0.0.1:9"], env, tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "MODELOPS_COLD_PRELOAD_MODULES" in proc.stderr and f"{module!r}: not installed" in proc.stderr
    assert "not starting Dask" in proc.stderr and "distributed." not in proc.stderr


def test_no_init_is_a_known_setting_not_warned_about(tmp_path):
    """Before: documented in the image's README, yet the worker warned it was an unknown variable."""
    proc = run_entrypoint(["worker", "--help"], {"MODELOPS_ENTRYPOINT_NO_INIT": "1"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Unknown variable" not in proc.stderr


@pytest.mark.parametrize("role", [["worker", "--help"], ["sh", "-c", "exit 0"]])
def test_a_no_init_that_is_not_a_boolean_exits_2_naming_it(tmp_path, role):
    """Before: any value other than 1/true/yes silently meant 'use tini'."""
    proc = run_entrypoint(role, {"MODELOPS_ENTRYPOINT_NO_INIT": "maybe"}, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "MODELOPS_ENTRYPOINT_NO_INIT='maybe'" in proc.stderr and "a boolean" in proc.stderr
