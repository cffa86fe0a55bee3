"""A real local Dask cluster: `dask scheduler` and `dask worker --preload` processes.

Workers get the executor through their environment, exactly as a pod does;
nothing is passed from the client. The scheduler runs modelops' scheduler preload (the release's worker
groups from `scheduler_env`, as the chart sets them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelops.scheduler import PRELOAD as SCHEDULER_PRELOAD  # as the image's entrypoint adds it

PRELOAD = "modelops.worker.preload"


class ClusterStartError(RuntimeError):
    pass


class LocalProcessCluster:
    def __init__(
        self,
        n_workers: int = 2,
        env: dict[str, str] | None = None,
        nthreads: int = 1,
        log_dir: str | Path | None = None,
        worker_args: tuple[str, ...] = (),
        protocol: str = "tcp",
        scheduler_env: dict[str, str] | None = None,
        client_security=None,
    ):
        """`protocol` "tls" with `scheduler_env` (and `env`) holding Dask's TLS settings
        (`modelops.tls.dask_tls_env`) starts a TLS cluster; `client_security` is what its own client uses."""
        self.n_workers = n_workers
        self.env = dict(env or {})
        self.nthreads = nthreads
        self.worker_args = tuple(worker_args)
        self.protocol = protocol
        self.scheduler_env = dict(scheduler_env or {})
        self.client_security = client_security
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="mops-cluster-")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.worker_log_paths: list[Path] = []
        self.address: str | None = None

    @classmethod
    def over_tls(cls, tls_dir: str | Path, client, env: dict[str, str] | None = None, **kwargs) -> LocalProcessCluster:
        """A cluster on tls:// only, its scheduler and workers configured from `tls_dir` (ca.crt, tls.crt,
        tls.key) by their environment as the chart's pods are; `client` (a `modelops.tls.ClientTLS`) is
        what its own client presents."""
        from modelops.tls import dask_tls_env

        tls_env = dask_tls_env(tls_dir)
        return cls(env={**tls_env, **(env or {})}, protocol="tls", scheduler_env=tls_env,
                   client_security=client.security(), **kwargs)

    # -- processes -------------------------------------------------------
    def _spawn(self, args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
        log = open(log_path, "ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    def start_scheduler(self) -> str:
        scheduler_file = self.log_dir / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._spawn(
            [
                "scheduler",
                "--host", "127.0.0.1",
                "--port", "0",
                "--protocol", self.protocol,
                "--no-dashboard",  # no Bokeh; the HTTP server (/health, /metrics, /modelops/demand) stays
                "--dashboard-address", "127.0.0.1:0",
                "--preload", SCHEDULER_PRELOAD,
                "--scheduler-file", str(scheduler_file),
            ],
            self.log_dir / "scheduler.log",
            {**os.environ, **self.scheduler_env},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise ClusterStartError(
                    f"dask scheduler exited with {self.scheduler.returncode}: "
                    + (self.log_dir / "scheduler.log").read_text()[-2000:]
                )
            if scheduler_file.exists():
                try:
                    self.address = json.loads(scheduler_file.read_text())["address"]
                    return self.address
                except (json.JSONDecodeError, KeyError):
                    pass
            time.sleep(0.05)
        raise ClusterStartError("dask scheduler did not write its address within 60 s")

    def start_worker(self, env: dict[str, str] | None = None, name: str | None = None) -> subprocess.Popen:
        """Start one `dask worker --preload modelops.worker.preload` with `env` on top of os.environ."""
        assert self.address, "start the scheduler first"
        index = len(self.workers)
        name = name or f"worker-{index}"
        worker_env = {**os.environ, **self.env, **(env or {})}
        log_path = self.log_dir / f"{name}.log"
        proc = self._spawn(
            [
                "worker",
                self.address,
                "--preload", PRELOAD,
                "--nthreads", str(self.nthreads),
                "--nworkers", "1",
                "--name", name,
                "--host", "127.0.0.1",
                "--no-dashboard",
                "--local-directory", str(self.log_dir / "dask-scratch"),
                *self.worker_args,
            ],
            log_path,
            worker_env,
        )
        self.workers.append(proc)
        self.worker_log_paths.append(log_path)
        return proc

    def start(self, timeout: float = 120) -> str:
        self.start_scheduler()
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_for_workers(self.n_workers, timeout)
        return self.address

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=30, security=self.client_security) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
                for proc, log in zip(self.workers, self.worker_log_paths):
                    if proc.poll() is not None:
                        raise ClusterStartError(
                            f"worker exited with code {proc.returncode} before registering; "
                            f"log {log}:\n{log.read_text()[-3000:]}"
                        )
                if time.monotonic() > deadline:
                    raise ClusterStartError(f"fewer than {n} workers registered within {timeout} s")
                time.sleep(0.1)

    def worker_logs(self) -> list[str]:
        return [p.read_text(errors="replace") for p in self.worker_log_paths]

    def close(self, timeout: float = 20) -> None:
        procs = [p for p in self.workers if p.poll() is None]
        if self.scheduler is not None and self.scheduler.poll() is None:
            procs.append(self.scheduler)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalProcessCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
