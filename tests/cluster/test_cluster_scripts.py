"""The cluster scripts themselves, without a cluster: clear refusals, and PID records that are only
trusted while they still name the process that was started."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from cluster_support import REPO

CLUSTER = REPO / "cluster"


def bash(script: str, env: dict | None = None, user: int | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", "-c", script]
    if user is not None:
        if os.getuid() != 0 or not shutil.which("setpriv"):
            pytest.skip("needs root and setpriv to run as another user")
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})})


def test_up_refuses_a_user_who_is_not_root_before_doing_anything():
    proc = bash("bash cluster/up.sh --check", user=65534)
    assert proc.returncode != 0
    assert "needs root" in proc.stderr, proc.stderr


def test_build_names_an_unknown_component_and_the_allowed_ones(tmp_path):
    proc = bash("bash cluster/build.sh kube-dns", env={"MODELOPS_CACHE_DIR": str(tmp_path)})
    assert proc.returncode != 0
    assert "unknown component 'kube-dns'" in proc.stderr and "kubernetes coredns registry pause" in proc.stderr


def test_a_pid_record_is_trusted_only_while_it_names_the_process_started(tmp_path):
    """After a reboot or a kill, a recorded PID may belong to another program: down.sh must not stop it."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        check = "source cluster/lib.sh; pid_of thing"
        env = {"MODELOPS_CLUSTER_STATE": str(tmp_path)}
        (run / "thing.pid").write_text(f"{sleeper.pid} {os.path.realpath(shutil.which('sleep'))}\n")
        assert bash(check, env).stdout.strip() == str(sleeper.pid)
        (run / "thing.pid").write_text(f"{sleeper.pid} /usr/bin/etcd\n")
        assert bash(check, env).returncode != 0
        sleeper.kill()
        sleeper.wait()
        (run / "thing.pid").write_text(f"{sleeper.pid} {os.path.realpath(shutil.which('sleep'))}\n")
        assert bash(check, env).returncode != 0
    finally:
        sleeper.kill()


def test_daemons_started_by_the_scripts_do_not_hold_the_callers_lock(tmp_path):
    """`flock LOCK bash cluster/up.sh` once left the lock held for as long as the cluster ran (its
    daemons inherited the lock's descriptor): close_inherited_fds closes it before anything starts."""
    if not shutil.which("flock") or not shutil.which("setsid"):
        pytest.skip("needs flock and setsid (util-linux)")
    lock = tmp_path / "lock"
    script = "source cluster/lib.sh; close_inherited_fds; setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $!"
    started = subprocess.run(["flock", str(lock), "bash", "-c", script], capture_output=True, text=True, timeout=30,
                             cwd=REPO)
    daemon = int(started.stdout.strip().splitlines()[-1])
    try:
        free = subprocess.run(["flock", "-w", "2", str(lock), "true"], timeout=30)
        assert free.returncode == 0, "the daemon still holds the caller's lock"
    finally:
        os.kill(daemon, 9)
