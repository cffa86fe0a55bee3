"""`mops run STUDY`: run a study on a cluster, or on a real local one with `--local`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import click

from modelops.bundles import BundleError
from modelops.routing import NoWorkerForRequirement, Requirement
from modelops.study import Study, StudyError
from modelops.worker.config import ConfigError, ExecutorType, RuntimeConfig

EXECUTORS = [e.value for e in ExecutorType]
LOG_MARKERS = ("Executor:", "Bundle source:", "Cold start:", "Worker group:")


@click.command()
@click.argument("study_path", metavar="STUDY", type=click.Path(dir_okay=False))
@click.option("--scheduler", help="Address of a running Dask scheduler, e.g. tcp://host:8786.")
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
@click.option("--wait-workers", default=120.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for at least one worker before giving up.")
@click.option("--group", "require_group", help="Run only on workers of this worker group (MODELOPS_WORKER_GROUP); "
              "overrides the study's requires.group.")
@click.option("--require-executor", type=click.Choice(EXECUTORS), help="Run only on workers running this executor; "
              "overrides the study's requires.executor.")
@click.option("--max-in-flight", type=click.IntRange(1), help="Tasks submitted at once [default: max(200, 4 x cluster threads)].")
def run(study_path, scheduler, local, workers, threads, executor, cold_start, bundles_dir, output, resume,
        wait_workers, require_group, require_executor, max_in_flight):
    """Run a study and print a summary (tasks, failures, executor per worker, child PIDs)."""
    if bool(scheduler) == bool(local):
        raise click.UsageError("give exactly one of --scheduler ADDRESS or --local")
    if not local and (executor or cold_start or bundles_dir):
        raise click.UsageError("--executor, --cold-start and --bundles-dir only apply with --local; "
                               "a running cluster's workers take their executor from their own environment")
    if resume and not output:
        raise click.UsageError("--resume needs --output")
    try:
        study = Study.load(study_path)
    except StudyError as exc:
        raise click.ClickException(str(exc)) from None
    if require_group or require_executor:
        overrides = {"group": require_group} if require_group else {}
        if require_executor:
            overrides["executor"] = require_executor
        requires = Requirement.model_validate({**study.requires.model_dump(exclude_none=True), **overrides})
        study = study.model_copy(update={"requires": requires})

    cluster = None
    try:
        if local:
            cluster = _start_local(study_path, workers, threads, executor, cold_start, bundles_dir)
            scheduler = cluster.address
        _run_study(study, scheduler, output, resume, max_in_flight, wait_workers)
        if cluster is not None:
            _print_worker_log_lines(cluster)
    finally:
        if cluster is not None:
            cluster.close()


def _start_local(study_path, workers, threads, executor, cold_start, bundles_dir):
    from modelops.local_cluster import ClusterStartError, LocalProcessCluster

    env = {}
    if executor:
        env["MODELOPS_EXECUTOR_TYPE"] = executor
    if cold_start:
        env["MODELOPS_COLD_START"] = cold_start
    env["MODELOPS_BUNDLES_DIR"] = str(Path(bundles_dir or Path(study_path).resolve().parent.parent).resolve())
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


def _run_study(study: Study, scheduler: str, output, resume: bool, max_in_flight, wait_workers: float) -> None:
    from distributed import Client

    started = time.perf_counter()
    try:
        client = Client(scheduler, timeout=60)
    except OSError as exc:
        raise click.ClickException(f"cannot reach scheduler {scheduler}: {exc}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=wait_workers)
        except TimeoutError:
            raise click.ClickException(
                f"no worker connected to {scheduler} within {wait_workers:g} s "
                "(check the workers' logs: a worker with an invalid environment exits at start)"
            ) from None
        summary, runtimes = run_study_on(client, study, output, resume, max_in_flight)
    wall = time.perf_counter() - started
    _print_summary(summary, runtimes, wall)
    study_tally = summary.study
    if study_tally is not None:
        click.echo(f"study, by the latest result line of each task in {output}: {study_tally.describe()}")
    retryable = study_tally.retryable if study_tally is not None else summary.retryable
    if retryable and output:
        click.echo(f"{retryable} task(s) failed with a retryable error (their results are in {output}): "
                   "run again with --resume to rerun them", err=True)
    if summary.failed or (study_tally is not None and not study_tally.complete):
        sys.exit(1)


def run_study_on(client, study: Study, output, resume: bool, max_in_flight, progress: bool = True,
                 count_attempts: bool = True):
    """The study on a connected client, as `mops run` does it (the throughput benchmark times this).

    Memory stays bounded in the study's size: tasks are generated as they are submitted, results
    go to the file in batches and into a running Summary, and no list of either is kept."""
    from modelops.services.dask_simulation import DaskSimulationService
    from modelops.services.results_file import ResultsFile

    service = DaskSimulationService(client)
    runtimes = service.worker_runtime()
    if mismatch := service.version_mismatch(runtimes):
        click.echo(f"WARNING: {mismatch}", err=True)  # once, before the study
    requirement = study.requires
    if requirement:
        try:
            service.check_requirement(requirement)
        except NoWorkerForRequirement as exc:
            raise click.ClickException(f"study {study.name!r}: {exc}") from None
    try:
        from modelops.services.bundle_pinning import pin_study

        study = pin_study(study)  # an OCI tag becomes one digest for every task of the study
        bundle = service.resolve_bundle(study.bundle, requirement)
    except BundleError as exc:
        raise click.ClickException(f"study {study.name!r}: {exc}") from None
    digest, entrypoint = bundle["digest"], bundle["entrypoint"]
    tasks = study.iter_tasks(digest, entrypoint)
    n_tasks, skipped = study.task_count(), 0
    results_file = ResultsFile(output) if output else None
    plan = None
    if results_file:
        if resume:
            # by each task's latest line: missing and retryably failed tasks run, the rest are kept
            plan = results_file.plan_resume(t.task_id for t in study.iter_tasks(digest, entrypoint))
            n_tasks, skipped = plan.to_run, plan.kept
            tasks = (t for t in tasks if plan.runs(t.task_id))
            click.echo(plan.describe(output))
        results_file.open(truncate=not resume)
    click.echo(f"Study {study.name!r}: {n_tasks} tasks on {len(runtimes)} worker(s), "
               f"bundle {bundle['name']} {digest[:19]}" + (f", {skipped} already done" if skipped else ""))
    summary = Summary()
    try:
        for completed in service.stream(tasks, max_in_flight=max_in_flight, progress=n_tasks if progress else False,
                                        requirement=requirement, count_attempts=count_attempts):
            if results_file:
                results_file.add(completed.record)
                if completed.batch_end:  # never hold a finished result while waiting for the next
                    results_file.flush()
            if plan is not None:
                plan.record(completed.record)
            summary.add(completed.result)
    finally:
        if results_file:
            results_file.close()
    runtimes = {**runtimes, **service.worker_runtime()}  # fallbacks happen during the study
    if plan is not None:
        summary.study = plan.tally()
    return summary, runtimes


class Summary:
    """What `mops run` prints at the end, counted as results arrive (no list of results kept).

    It counts this run's results (one per task: the stream runs a task id once). With --resume,
    `study` counts the whole study by the latest result line of each task (kept lines and this run's)."""

    def __init__(self, results=()):
        self.total = self.succeeded = self.retryable = 0
        self.study = None  # a results_file.StudyTally, set by run_study_on when it resumes
        self.by_executor: Counter = Counter()
        self.by_start: Counter = Counter()
        self.pairs: set[tuple[str, int]] = set()  # (worker, PID): PIDs are per PID namespace (pod)
        self.failures: list[str] = []
        for result in results:
            self.add(result)

    @property
    def failed(self) -> int:
        return self.total - self.succeeded

    def add(self, r) -> None:
        self.total += 1
        self.succeeded += r.ok
        p = r.provenance
        self.by_executor[p.executor] += 1
        if p.cold_start:
            self.by_start[p.cold_start] += 1
        if p.pid:
            self.pairs.add((sys.intern(p.worker), p.pid))
        if not r.ok:
            self.retryable += bool(r.error and r.error.retryable)
            self.failures.append(f"FAILED {r.task_id} params={r.params} seed={r.seed}: "
                                 f"{r.error.kind}: {r.error.type}: {r.error.message}")


def _print_summary(summary, runtimes: dict, wall: float) -> None:
    if not isinstance(summary, Summary):
        summary = Summary(summary)
    click.echo("")
    click.echo(f"tasks: {summary.total}  succeeded: {summary.succeeded}  failed: {summary.failed}  "
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
    click.echo(f"distinct child PIDs, counted as (worker, PID) pairs: {len(summary.pairs)} for {summary.total} tasks")
    for line in summary.failures:
        click.echo(line, err=True)


def _print_worker_log_lines(cluster) -> None:
    click.echo("Worker log lines:")
    for path, text in zip(cluster.worker_log_paths, cluster.worker_logs()):
        lines = [ln for ln in text.splitlines() if any(m in ln for m in LOG_MARKERS)]
        pid_lines = [ln for ln in text.splitlines() if "Child process PID" in ln]
        # a client registering the plugin again repeats the setup lines: show each once
        for message in dict.fromkeys(line.split(" - ")[-1] for line in lines):
            click.echo(f"  [{path.stem}] {message}")
        for line in pid_lines[:3]:
            click.echo(f"  [{path.stem}] {line.split(' - ')[-1]}")
        if len(pid_lines) > 3:
            click.echo(f"  [{path.stem}] ... {len(pid_lines)} 'Child process PID' lines in all")
