"""The per-process ports the chart asks for (modelops.worker.process_ports) under real Dask:
`dask worker --nworkers 2` with the module named as nanny and worker preload (as the chart passes it)
gives each nanny its own slot, so each process serves its /metrics on its own port (base, base + 1)
naming that process, a killed worker process comes back on its nanny's port, and the probe
(`python -m modelops.worker.process_ports`) fails naming a port that does not answer. The rendering
is covered by the chart's helm-unittest suite (charts/modelops-dask/tests/process_ports_test.yaml)."""

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

import psutil
import pytest

from modelops.worker import process_ports

MODULE = "modelops.worker.process_ports"
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


def listens_on(proc: psutil.Process, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp"))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def process_answering(port: int) -> str:
    """The worker name in modelops_worker_process_info on this port's /metrics (checks its http_port)."""
    body = wait_for(f"http://127.0.0.1:{port}/metrics")
    m = re.search(r'^modelops_worker_process_info\{(.*)\} 1\.0$', body, re.M)
    assert m, body[-2000:]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    assert labels["http_port"] == str(port)
    return labels["worker"]


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
    worker = processes("worker", f"tcp://127.0.0.1:{sched_port}", "--nworkers", "2", "--nthreads", "1",
                       "--name", "pod", "--host", "127.0.0.1", "--dashboard-address", f"127.0.0.1:{ports[0]}",
                       "--no-dashboard", "--local-directory", str(tmp_path / "dask"),
                       "--preload-nanny", MODULE, "--preload", MODULE, log="worker.log")
    names = {port: process_answering(port) for port in ports[:2]}
    log = (tmp_path / "worker.log").read_text()
    assert sorted(names.values()) == ["pod-0", "pod-1"], (names, log[-3000:])
    assert f"Import preload module: {MODULE}" in log, log[-3000:]
    assert "already in use" not in log

    # A worker process killed outright is restarted by its nanny on that nanny's port, not a new slot.
    [victim] = [p for p in psutil.Process(worker.pid).children(recursive=True) if listens_on(p, ports[1])]
    victim.kill()
    victim.wait(timeout=30)
    deadline = time.monotonic() + 60
    while not any(p.pid != victim.pid and listens_on(p, ports[1])
                  for p in psutil.Process(worker.pid).children(recursive=True)):
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(0.5)
    assert process_answering(ports[1]) == "pod-1"
    assert process_answering(ports[0]) == "pod-0"

    probe = [sys.executable, "-m", MODULE, "5"]
    ok = subprocess.run([*probe, str(ports[0]), str(ports[1])], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*probe, str(ports[0]), str(ports[1]), str(ports[2])], capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"127.0.0.1:{ports[2]}/health" in bad.stderr and f":{ports[0]}/" not in bad.stderr, bad.stderr


def test_a_random_dashboard_port_is_refused():
    with pytest.raises(process_ports.PortSetupFailed, match=r"--dashboard-address ':0'"):
        process_ports.base_port(":0")
    assert process_ports.base_port("0.0.0.0:8788") == 8788
