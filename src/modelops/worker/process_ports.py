"""One HTTP port per worker process of a pod (`dask worker --nworkers N`, N > 1).

`dask worker` hands every process the same `--dashboard-address :PORT`; the second process cannot
bind it and moves to a random port, so probes and Prometheus would see one process of N. The chart
loads this module by name as both `--preload-nanny` and `--preload` when a group has nworkers > 1:

- each nanny (all N live in the one `dask worker` process) takes the next slot i before it starts
  its worker process and gives that worker PORT + i, the container port the chart declares as
  `http` (i = 0) or `http-i`; a restarted worker process keeps its nanny's port;
- each worker process publishes `modelops_worker_process_info{worker, http_port}` on its /metrics,
  so a scrape says which process answered.

Run as `python -m modelops.worker.process_ports TIMEOUT PORT...` it is the pod's exec probe: exits 1
naming every port whose /health does not answer "ok" (a probe on one port would vouch for one process
only).

It lives in the package, not in the chart, so the code that picks the ports ships and is versioned
with the runtime it serves (the chart used to mount it from a ConfigMap); it imports nothing of
modelops, Dask or Prometheus at module level, so the probe starts fast.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("modelops.process_ports")

# The names of the nannies that took slot 0, 1, ... in this `dask worker` process. distributed
# imports a module-name preload once per process (importlib.import_module, no reload), so this one
# list is shared by every nanny, and each nanny's dask_setup appends to it.
_SLOTS: list[str] = []


class PortSetupFailed(BaseException):
    """Not an Exception: distributed's preload manager would log it and start the worker anyway."""


def base_port(address) -> int:
    """The port of a `--dashboard-address` value such as ":8788" or "0.0.0.0:8788"."""
    text = str(address or "")
    tail = text.rsplit(":", 1)[-1]
    if not tail.isdigit() or int(tail) == 0:
        raise PortSetupFailed(
            f"--dashboard-address {text!r}: per-process ports need a fixed port (e.g. :8788)")
    return int(tail)


def assign(nanny) -> int:
    """Give this nanny's worker process the next port after the base; returns it."""
    address = nanny.worker_kwargs.get("dashboard_address")
    host = str(address).rsplit(":", 1)[0]
    slot = len(_SLOTS)
    _SLOTS.append(nanny.name)
    port = base_port(address) + slot
    nanny.worker_kwargs["dashboard_address"] = f"{host}:{port}"
    logger.info("Worker process %d (%s) serves HTTP on port %d", slot, nanny.name, port)
    return port


def publish(worker) -> None:
    """`modelops_worker_process_info{worker, http_port} 1` on this process's /metrics."""
    try:
        import prometheus_client
    except ImportError:  # a client-only install serves no metrics
        return
    info = prometheus_client.Info(
        "modelops_worker_process", "The worker process answering on this HTTP port")
    info.info({"worker": str(worker.name), "http_port": str(worker.http_server.port)})


def dask_setup(server) -> None:
    from distributed import Nanny, Worker

    if isinstance(server, Nanny):
        assign(server)
    elif isinstance(server, Worker):
        publish(server)


def check(timeout: float, ports: list[int]) -> list[str]:
    """Failures of GET http://127.0.0.1:PORT/health, one line per port that is not healthy."""
    import urllib.request

    failures = []
    for port in ports:
        url = f"http://127.0.0.1:{port}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                body = reply.read().decode(errors="replace").strip()
            if body != "ok":
                failures.append(f"{url}: answered {body[:80]!r}")
        except Exception as exc:  # any failure of one port fails the probe, naming the port
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
    return failures


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m modelops.worker.process_ports TIMEOUT_SECONDS PORT [PORT...]")
    problems = check(float(sys.argv[1]), [int(p) for p in sys.argv[2:]])
    for line in problems:
        print(line, file=sys.stderr)
    sys.exit(1 if problems else 0)
