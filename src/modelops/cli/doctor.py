"""`mops doctor`: ask every worker which executor it really runs, and prove it with probe tasks.

It never registers the plugin: it checks what each worker's own environment
and preload set up. Exit 0 when every checked worker matches, 1 naming each
mismatching worker, 2 when the cluster cannot be reached or has no such workers.
"""

from __future__ import annotations

import sys
import time
import uuid

import click

from modelops.cli.tls_options import security_or_usage_error, tls_options
from modelops.tasks import Task, TaskResult
from modelops.settings import ExecutorType
from modelops.worker.task_bodies import describe_worker, resolve_bundle, run_task

PROBE_BUNDLE = "modelops:probe"


def check_worker(
    info: dict, results: list[TaskResult], expect: str | None, expect_cold_start: str | None = None
) -> list[str]:
    """Problems with one worker: its executor, and what its probe tasks showed."""
    problems = []
    executor = info.get("executor")
    if executor is None:
        return [f"no modelops runtime: {info.get('error')}"]
    if expect and executor != expect:
        problems.append(f"runs executor {executor}, expected {expect}")
    if expect_cold_start:
        if executor != ExecutorType.COLD.value or info.get("cold_start") != expect_cold_start:
            problems.append(
                f"runs {executor} with cold start {info.get('cold_start')}, expected cold with {expect_cold_start}"
            )
        fallbacks = info.get("spawn_fallbacks") or {}
        if expect_cold_start == "fork" and fallbacks:
            problems.append(
                "serves bundle(s) by spawn instead of fork: "
                + "; ".join(f"{b} ({f['reason']}; {f['tasks']} task(s))" for b, f in sorted(fallbacks.items()))
            )
    for bundle, why in sorted((info.get("refused_bundles") or {}).items()):
        problems.append(f"refuses every task of bundle {bundle}: {why}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        problems.append(f"probe task failed: {r.error.kind}: {r.error.message}")
    ok = [r for r in results if r.ok]
    for r in ok:
        if r.provenance.executor != executor:
            problems.append(f"probe ran under {r.provenance.executor}, worker reports {executor}")
    pids = [r.outputs["pid"] for r in ok]
    if executor == ExecutorType.COLD.value:
        if len(set(pids)) != len(pids):
            problems.append(f"cold executor reused a child process: PIDs {pids}")
        if any(r.outputs["calls_in_process"] != 1 for r in ok):
            problems.append("cold executor: a probe saw state left by an earlier task")
    if executor != ExecutorType.DIRECT.value and info["pid"] in pids:
        problems.append(f"{executor} executor ran a probe inside the worker process {info['pid']}")
    if executor == ExecutorType.DIRECT.value and any(p != info["pid"] for p in pids):
        problems.append("direct executor ran a probe outside the worker process")
    return problems


def run_probes(client, address: str, n: int, timeout: float) -> list[TaskResult]:
    """Probe tasks pinned to one worker; a worker that does not answer within `timeout` raises."""
    bundle = client.submit(
        resolve_bundle, PROBE_BUNDLE, workers=[address], allow_other_workers=False, pure=False
    ).result(timeout=timeout)
    nonce = uuid.uuid4().hex
    futures = []
    for i in range(n):
        task = Task(
            bundle=PROBE_BUNDLE,
            bundle_digest=bundle["digest"],
            entrypoint=bundle["entrypoint"],
            params={"worker": address, "probe": i, "nonce": nonce},
            seed=i,
        )
        # one at a time per worker, so a warm pool reuses its child and cold shows fresh PIDs
        future = client.submit(
            run_task, task.model_dump(mode="json"), key=f"probe-{task.task_id}",
            workers=[address], allow_other_workers=False, pure=False,
        )
        futures.append(TaskResult.model_validate(future.result(timeout=timeout)))
    return futures


@click.command()
@click.option("--scheduler", required=True, help="Address of the Dask scheduler, e.g. tcp://host:8786, or "
              "tls://host:8786 with --tls-ca-file/--tls-cert/--tls-key (or the Dask configuration's "
              "distributed.comm.tls.*).")
@click.option("--expect-executor", type=click.Choice([e.value for e in ExecutorType]),
              help="Fail for every worker that runs another executor.")
@click.option("--expect-cold-start", type=click.Choice(["fork", "spawn"]),
              help="Fail for every worker that is not cold with this start method, and (fork) for "
                   "every worker serving some bundle by spawn instead of fork.")
@click.option("--group", help="Check only workers whose MODELOPS_WORKER_GROUP is this.")
@click.option("--probe-tasks", default=3, show_default=True, type=click.IntRange(0),
              help="Probe tasks to run on each worker.")
@click.option("--min-workers", default=1, show_default=True, type=click.IntRange(1),
              help="Wait until at least this many (matching) workers are connected.")
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for the scheduler and the workers.")
@tls_options
def doctor(scheduler, expect_executor, expect_cold_start, group, probe_tasks, min_workers, timeout, tls_ca_file,
           tls_cert, tls_key):
    """Check that workers run the executor their deployment asks for."""
    from distributed import Client

    security = security_or_usage_error(scheduler, tls_ca_file, tls_cert, tls_key)
    try:
        client = Client(scheduler, timeout=timeout, security=security)
    except OSError as exc:
        click.echo(f"cannot reach scheduler {scheduler}: {exc}", err=True)
        sys.exit(2)
    with client:
        deadline = time.monotonic() + timeout
        while True:
            infos = client.run(describe_worker)
            matching = {a: i for a, i in infos.items() if group is None or i.get("worker_group") == group}
            if len(matching) >= min_workers or time.monotonic() > deadline:
                break
            time.sleep(1)
        if len(matching) < min_workers:
            where = f" in group {group!r}" if group else ""
            click.echo(f"found {len(matching)} worker(s){where}, need {min_workers} "
                       f"(all workers: {sorted(infos)})", err=True)
            sys.exit(2)
        bad = {}
        for address, info in sorted(matching.items()):
            try:
                results = run_probes(client, address, probe_tasks, timeout) if info.get("executor") else []
                problems = check_worker(info, results, expect_executor, expect_cold_start)
            except TimeoutError:
                results, problems = [], [f"probe tasks did not finish within {timeout:g} s"]
            pids = [r.outputs["pid"] for r in results if r.ok]
            status = "OK" if not problems else "MISMATCH"
            click.echo(f"{status} worker {address} group={info.get('worker_group')} "
                       f"executor={info.get('executor')} cold_start={info.get('cold_start')} "
                       f"spawn_fallbacks={len(info.get('spawn_fallbacks') or {})} probe PIDs={pids}")
            for problem in problems:
                click.echo(f"    {problem}")
            if problems:
                bad[address] = problems
    if bad:
        click.echo(f"{len(bad)} of {len(matching)} worker(s) do not match: {', '.join(sorted(bad))}", err=True)
        sys.exit(1)
    click.echo(f"all {len(matching)} worker(s) OK" + (f" (executor {expect_executor})" if expect_executor else ""))
