"""The chart's per-process port file (charts/modelops-dask/files/process_ports.py) under real Dask:
`dask worker --nworkers 2` with it as nanny and worker preload serves each process's /metrics on its
own port (base, base + 1) naming that process, and its probe mode fails naming a port that does not
answer. The rendering is covered by the chart's helm-unittest suite (tests/process_ports_test.yaml)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from chartlib import CHART

PORT_FILE = CHART / "files" / "process_ports.py"
DASK = Path(sys.executable).parent / "dask"


def free_ports(n: int) -> list[int]:
    """n consecutive free TCP ports (the file gives process i the base port + i)."""
    for base in range(20000, 60000, 97):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return list(range(base, base + n))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free consecutive ports")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode()


@pytest.fixture
def processes(tmp_path):
    if not DASK.exists():
        pytest.skip(f"{DASK} missing: install the package with its worker extra")
    started: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(DASK), *args], stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_each_worker_process_serves_its_own_port(processes, tmp_path):
    ports = free_ports(4)
    sched_port, ports = ports[3], ports[:3]
    processes("scheduler", "--host", "127.0.0.1", "--port", str(sched_port), "--no-dashboard", log="scheduler.log")
    processes("worker", f"tcp://127.0.0.1:{sched_port}", "--nworkers", "2", "--nthreads", "1", "--name", "pod",
              "--host", "127.0.0.1", "--dashboard-address", f"127.0.0.1:{ports[0]}", "--no-dashboard",
              "--local-directory", str(tmp_path / "dask"),
              "--preload-nanny", str(PORT_FILE), "--preload", str(PORT_FILE), log="worker.log")
    names = {}
    for port in ports[:2]:
        body = wait_for(f"http://127.0.0.1:{port}/metrics")
        m = re.search(r'^modelops_worker_process_info\{(.*)\} 1\.0$', body, re.M)
        assert m, body[-2000:]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        assert labels["http_port"] == str(port)
        names[port] = labels["worker"]
    assert sorted(names.values()) == ["pod-0", "pod-1"], (names, (tmp_path / "worker.log").read_text()[-3000:])
    assert "already in use" not in (tmp_path / "worker.log").read_text()

    probe = [sys.executable, str(PORT_FILE), "5"]
    ok = subprocess.run([*probe, str(ports[0]), str(ports[1])], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*probe, str(ports[0]), str(ports[1]), str(ports[2])], capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"127.0.0.1:{ports[2]}/health" in bad.stderr and f":{ports[0]}/" not in bad.stderr, bad.stderr


def test_a_random_dashboard_port_is_refused():
    sys.path.insert(0, str(PORT_FILE.parent))
    try:
        import process_ports
    finally:
        sys.path.remove(str(PORT_FILE.parent))
    with pytest.raises(process_ports.PortSetupFailed, match=r"--dashboard-address ':0'"):
        process_ports.base_port(":0")
    assert process_ports.base_port("0.0.0.0:8788") == 8788
