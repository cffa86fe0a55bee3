"""`mops run STUDY`: run a study on a cluster, or on a real local one with `--local`. The study loop
itself is `modelops.services.study_run.StudyRun`; this module parses options and prints.

Exit codes (the runner Jobs of `mops jobs` fail at once on 1 and 2, and retry a new pod otherwise):
0 every task succeeded; 1 some task failed (or has no result), or the study was rejected (a bad study
file, no worker for its requirement, no such bundle, a job name taken by another study, workers of
several executors and none chosen, no worker of its executor left mid-study for --wait-workers): running
it again would end the same way; 2 bad usage; 4 the scheduler, its workers or the results store could
not be reached (a new runner may succeed); 5 an unexpected error (a traceback is printed; a new
runner may succeed: never 1, which Python gives an uncaught exception); 143 stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click

from modelops.routing import Requirement
from modelops.settings import (
    BUNDLES_DIR_VARIABLE,
    COLD_START_VARIABLE,
    EXECUTOR_TYPE_VARIABLE,
    ConfigError,
    ExecutorType,
)
from modelops.cli.tls_options import security_or_usage_error, tls_options
from modelops.study import Study, StudyError
from modelops.worker.config import RuntimeConfig

EXECUTORS = [e.value for e in ExecutorType]
LOG_MARKERS = ("Executor:", "Bundle source:", "Cold start:", "Worker group:")
EXIT_FAILED = 1
EXIT_UNREACHABLE = 4
EXIT_CRASHED = 5
EXIT_TERMINATED = 128 + signal.SIGTERM


class StudyRejectedError(click.ClickException):
    exit_code = EXIT_FAILED


class UnreachableError(click.ClickException):
    exit_code = EXIT_UNREACHABLE


@click.command()
@click.argument("study_path", metavar="STUDY", type=click.Path(dir_okay=False))
@click.option("--scheduler", help="Address of a running Dask scheduler, e.g. tcp://host:8786, or tls://host:8786 "
              "with --tls-ca-file/--tls-cert/--tls-key (or the Dask configuration's distributed.comm.tls.*).")
@click.option("--local", is_flag=True, help="Start a real local scheduler and workers for this run.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="With --local: worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="With --local: threads per worker.")
@click.option("--executor", type=click.Choice(EXECUTORS), help="With --local: the workers' MODELOPS_EXECUTOR_TYPE.")
@click.option("--cold-start", type=click.Choice(["fork", "spawn"]), help="With --local: the workers' MODELOPS_COLD_START.")
@click.option(
    "--bundles-dir",
    type=click.Path(file_okay=False),
    help="With --local: the workers' MODELOPS_BUNDLES_DIR [default: the parent of the study's directory].",
)
@click.option("--output", type=click.Path(dir_okay=False), help="Write results as JSON lines here.")
@click.option("--resume", is_flag=True, help="Keep the results already in --output (appending, never rewriting) and "
              "run the tasks that have no result or whose latest result failed with a retryable error.")
@click.option("--store", "store_url", metavar="URL", help="Results store (file:///path or s3://bucket/prefix): every "
              "result is written there as its batch arrives, under --job; tasks the job already has a result for "
              "are kept, and tasks another job already computed are reused unless --recompute.")
@click.option("--job", help="With --store: the job's name (lowercase letters, digits, '-'); running the same job again "
              "resumes it [default: the study's name, a timestamp and a random suffix].")
@click.option("--recompute", is_flag=True, help="With --store: run tasks even when another job already has a "
              "successful result for the same inputs (the job's own results are kept either way).")
@click.option("--store-wait", default=600.0, show_default=True, type=click.FloatRange(min=0),
              help="With --store: seconds a write waits for a store that stops answering (retrying with backoff, "
              "the results held in memory) before the run gives up; at the start, at most 30 s.")
@click.option("--wait-workers", default=120.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for at least one worker, or, when the scheduler lists the release's worker "
              "groups, for a first worker of a group the study can run on (one scaling from zero), before "
              f"giving up (exit {EXIT_UNREACHABLE}); and, mid-study, for a worker of the study's executor again when "
              f"none is left (e.g. a `helm upgrade` changed the workers' executor), before failing (exit {EXIT_FAILED}) "
              "naming what changed.")
@click.option("--group", "require_group", help="Run only on workers of this worker group (MODELOPS_WORKER_GROUP); "
              "overrides the study's requires.group.")
@click.option("--require-executor", type=click.Choice(EXECUTORS), help="Run only on workers running this executor; "
              "overrides the study's requires.executor. Without it (and without requires.executor) the study keeps to "
              "the executor of the workers that serve it when it starts, and refuses to start when they run several.")
@click.option("--any-executor", is_flag=True, help="Do not keep to one executor: the study's tasks may run on workers "
              "of any executor, before and after the workers change (its results may then mix executors).")
@click.option("--max-in-flight", type=click.IntRange(1), help="Tasks submitted at once [default: max(200, 4 x cluster threads)].")
@click.option("--chunk-size", default="auto", show_default=True, metavar="N|auto",
              help="Tasks per Dask task: 'auto' puts short tasks together (about 0.15 s of work per Dask task, sized "
              "from the durations measured in the run; tasks that long run one each); N fixes it; 1 runs one task "
              "per Dask task. Each task keeps its own result, seed, provenance and failure either way.")
@click.option("--progress", type=click.Choice(["bar", "lines", "none"]), help="How progress is shown "
              "[default: a bar on a terminal, else a line every 10 s].")
@tls_options
def run(study_path, scheduler, local, workers, threads, executor, cold_start, bundles_dir, output, resume, store_url,
        job, recompute, store_wait, wait_workers, require_group, require_executor, any_executor, max_in_flight,
        chunk_size, progress, tls_ca_file, tls_cert, tls_key):
    """Run a study and print a summary (tasks, failures, executor per worker, child PIDs)."""
    chunk_size = parse_chunk_size(chunk_size)
    if bool(scheduler) == bool(local):
        raise click.UsageError("give exactly one of --scheduler ADDRESS or --local")
    if not local and (executor or cold_start or bundles_dir):
        raise click.UsageError("--executor, --cold-start and --bundles-dir only apply with --local; "
                               "a running cluster's workers take their executor from their own environment")
    if resume and not output:
        raise click.UsageError("--resume needs --output")
    if (job or recompute) and not store_url:
        raise click.UsageError("--job and --recompute need --store")
    if resume and store_url:
        raise click.UsageError("--resume is for --output files; with --store a job always keeps its own results "
                               "(run the same --job again to resume it)")
    if local and (tls_ca_file or tls_cert or tls_key):
        raise click.UsageError("--tls-ca-file, --tls-cert and --tls-key are for --scheduler tls://HOST:PORT, "
                               "not --local")
    security = None if local else security_or_usage_error(scheduler, tls_ca_file, tls_cert, tls_key)
    try:
        study = Study.load(study_path)
    except StudyError as exc:
        raise StudyRejectedError(str(exc)) from None
    study = with_requirement(study, require_group, require_executor)
    if any_executor and study.requires.executor:
        raise click.UsageError(f"--any-executor lets a study run on any executor, but it requires executor "
                               f"{study.requires.executor.value!r} (--require-executor or the study's requires.executor): "
                               "give one or the other")
    store = open_store(store_url, store_wait) if store_url else None
    if store is not None:
        job = job or default_job_name(study.name)
        _check_job_name(job)

    signal.signal(signal.SIGTERM, _terminate)  # unwind: what has arrived is written before exiting
    cluster = None
    try:
        if local:
            cluster = _start_local(study_path, workers, threads, executor, cold_start, bundles_dir)
            scheduler = cluster.address
        _run_study(study, scheduler, output, resume, store, job, recompute, max_in_flight, wait_workers, progress,
                   security, chunk_size, any_executor)
        if cluster is not None:
            _print_worker_log_lines(cluster)
    except Terminated:
        click.echo("SIGTERM: stopped; the results that arrived are written (run the same job again to resume)",
                   err=True)
        sys.exit(EXIT_TERMINATED)
    except (click.ClickException, click.exceptions.Exit, SystemExit, KeyboardInterrupt):
        raise
    except Exception:  # noqa: BLE001 - a lost connection, a bug: said in full, and retried by a runner's Job
        import traceback

        traceback.print_exc()
        click.echo(f"mops run stopped by an unexpected error (exit {EXIT_CRASHED}); the results that arrived are "
                   "written", err=True)
        sys.exit(EXIT_CRASHED)
    finally:
        if cluster is not None:
            cluster.close()


class Terminated(BaseException):
    """SIGTERM (a runner pod being stopped): unwinds through the study's finally blocks."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def parse_chunk_size(value: str) -> int | None:
    """`--chunk-size`: 'auto' (None: sized from measured durations) or a whole number from 1 to CHUNK_MAX."""
    from modelops.services.dask_simulation import CHUNK_MAX, check_chunk_size

    text = value.strip().lower()
    if text == "auto":
        return None
    try:
        return check_chunk_size(int(text))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not allowed: give 'auto' (sized from measured task durations) or a "
                                 f"whole number from 1 to {CHUNK_MAX} (1: one task per Dask task)",
                                 param_hint="--chunk-size") from None


def with_requirement(study: Study, group: str | None, executor: str | None) -> Study:
    """The study with `--group` / `--require-executor` laid over its `requires`."""
    if not (group or executor):
        return study
    overrides = {"group": group} if group else {}
    if executor:
        overrides["executor"] = executor
    requires = Requirement.model_validate({**study.requires.model_dump(exclude_none=True), **overrides})
    return study.model_copy(update={"requires": requires})


def open_store(url: str, wait: float):
    from modelops.results.blobs import Retry
    from modelops.results.store import ResultsStore
    from modelops.results.url import StoreUrlError

    try:
        return ResultsStore.open(url, Retry(deadline=wait))
    except StoreUrlError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None


def default_job_name(study_name: str) -> str:
    """`<study>-<UTC time>-<random>`, as a DNS label (a job's name is also its Kubernetes Job's)."""
    slug = re.sub(r"[^a-z0-9]+", "-", study_name.lower()).strip("-")[:36].strip("-") or "study"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:4]}"


def _check_job_name(job: str) -> None:
    from modelops.results.store import StoreError, check_job_name

    try:
        check_job_name(job)
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="--job") from None


def _start_local(study_path, workers, threads, executor, cold_start, bundles_dir):
    from modelops.local_cluster import ClusterStartError, LocalProcessCluster

    env = {}
    if executor:
        env[EXECUTOR_TYPE_VARIABLE] = executor
    if cold_start:
        env[COLD_START_VARIABLE] = cold_start
    env[BUNDLES_DIR_VARIABLE] = str(Path(bundles_dir or Path(study_path).resolve().parent.parent).resolve())
    try:
        RuntimeConfig.from_env({**os.environ, **env})
    except ConfigError as exc:
        raise click.ClickException(f"local workers would not start: {exc}") from None
    log_dir = tempfile.mkdtemp(prefix="mops-local-")
    click.echo(f"Starting local cluster: 1 scheduler + {workers} worker(s), env {env}; logs in {log_dir}")
    cluster = LocalProcessCluster(n_workers=workers, env=env, nthreads=threads, log_dir=log_dir)
    try:
        cluster.start()
    except ClusterStartError as exc:
        cluster.close()
        raise click.ClickException(str(exc)) from None
    return cluster


def connect(scheduler: str, wait_workers: float, security=None):
    """A Client of `scheduler` with at least one worker (unless the scheduler lists the release's worker
    groups: the study then waits for a group it can run on, which may be at zero pods), and one line about
    differing versions (instead of distributed's table). `security`: the client's TLS
    (modelops.tls.client_security)."""
    from distributed import Client

    from modelops.services.dask_simulation import DaskSimulationService
    from modelops.services.versions import quiet_version_table

    try:
        with quiet_version_table():
            client = Client(scheduler, timeout=60, security=security)
    except OSError as exc:
        raise UnreachableError(f"cannot reach scheduler {scheduler}: {exc}") from None
    if DaskSimulationService(client).group_demand():
        return client
    try:
        client.wait_for_workers(1, timeout=wait_workers)
    except TimeoutError:
        client.close()
        raise UnreachableError(
            f"no worker connected to {scheduler} within {wait_workers:g} s "
            "(check the workers' logs: a worker with an invalid environment exits at start)"
        ) from None
    return client


def _run_study(study: Study, scheduler: str, output, resume: bool, store, job, recompute: bool, max_in_flight,
               wait_workers: float, progress: str | None, security=None, chunk_size: int | None = None,
               any_executor: bool = False) -> None:
    from modelops.results.url import StoreError
    from modelops.services.study_run import StudyRejected, StudyRun
    from modelops.services.worker_wait import WorkersNotReady

    started = time.perf_counter()
    show = progress or ("bar" if sys.stderr.isatty() else "lines")
    with connect(scheduler, wait_workers, security) as client:
        study_run = StudyRun(client, study, output=output, resume=resume, store=store, job=job, recompute=recompute,
                             max_in_flight=max_in_flight, chunk_size=chunk_size, progress={"bar": True, "lines": "lines"}.get(show, False),
                             say=click.echo, warn=lambda text: click.echo(text, err=True), worker_wait_s=wait_workers,
                             any_executor=any_executor)
        try:
            outcome = study_run.run()
        except StudyRejected as exc:
            raise StudyRejectedError(str(exc)) from None
        except (StoreError, WorkersNotReady) as exc:
            raise UnreachableError(str(exc)) from None
    wall = time.perf_counter() - started
    summary = outcome.summary
    _print_summary(summary, outcome.runtimes, wall)
    click.echo(outcome.runs_on.describe())
    where = f"in {output}" if output and store is None else f"of job {job}" if store is not None else ""
    if summary.study is not None:
        click.echo(f"study, by the latest result of each task {where}: {summary.study.describe()}")
    retryable = summary.study.retryable if summary.study is not None else summary.retryable
    if retryable and (output or store is not None):
        again = f"run the same --job {job} again" if store is not None else "run again with --resume"
        click.echo(f"{retryable} task(s) failed with a retryable error: {again} to rerun them", err=True)
    if not outcome.complete:
        sys.exit(EXIT_FAILED)


def _print_summary(summary, runtimes: dict, wall: float) -> None:
    from modelops.results.summary import Summary

    if not isinstance(summary, Summary):
        summary = Summary(summary)
    click.echo("")
    reused = f" (reused: {summary.reused})" if summary.reused else ""
    click.echo(f"tasks: {summary.total}  succeeded: {summary.succeeded}{reused}  failed: {summary.failed}  "
               f"wall time: {wall:.2f} s")
    for address, info in sorted(runtimes.items()):
        executor = info.get("executor") or f"NONE ({info.get('error')})"
        cold = f" ({info['cold_start']})" if info.get("cold_start") else ""
        click.echo(f"worker {address}: executor {executor}{cold}, group {info.get('worker_group')}")
        for bundle, fallback in sorted((info.get("spawn_fallbacks") or {}).items()):
            click.echo(f"  bundle {bundle} served by spawn instead of fork ({fallback['tasks']} task(s)): "
                       f"{fallback['reason']}")
    click.echo(f"tasks per executor: {dict(summary.by_executor)}")
    if summary.by_start:
        click.echo(f"cold tasks per start method (as really started): {dict(summary.by_start)}")
    computed = summary.computed
    click.echo(f"distinct child PIDs, counted as (worker, PID) pairs: {len(summary.pairs)} for {computed} tasks"
               + (" run here" if summary.reused else ""))
    for line in summary.failures:
        click.echo(line, err=True)


def _print_worker_log_lines(cluster) -> None:
    click.echo("Worker log lines:")
    for path, text in zip(cluster.worker_log_paths, cluster.worker_logs()):
        lines = [ln for ln in text.splitlines() if any(m in ln for m in LOG_MARKERS)]
        pid_lines = [ln for ln in text.splitlines() if "Child process PID" in ln]
        # a client registering the plugin again repeats the setup lines: show each once
        for message in dict.fromkeys(line.split(" - ")[-1] for line in lines if "Child process PID" not in line):
            click.echo(f"  [{path.stem}] {message}")
        for line in pid_lines[:3]:
            click.echo(f"  [{path.stem}] {line.split(' - ')[-1]}")
        if len(pid_lines) > 3:
            click.echo(f"  [{path.stem}] ... {len(pid_lines)} 'Child process PID' lines in all")
