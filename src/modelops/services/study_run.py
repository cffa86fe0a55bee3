"""StudyRun: one run of a study on a connected Dask client, as `mops run` and the runner pods of
`mops jobs` do it, without the CLI (it reports through callbacks and raises typed errors).

    keep to one executor (the study's requirement, or the one its job recorded when it first started or the
    results file it resumes holds, or the one executor of the workers serving it at the start;
    --any-executor: none)
    -> pin the bundle (an OCI tag -> one digest; a digest pinned at submit must be the workers')
    -> plan: a results file's resume, and/or the job's own rows and reusable rows in a results store
    -> copy reused results into the job -> stream the rest through DaskSimulationService
    -> every result to the results file and/or the store as its batch arrives -> a Summary

Memory stays bounded in the study's size: tasks are generated as they are submitted, results go to
the file and the store in batches and into a running Summary; a store's plan keeps 16 bytes per task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelops.bundles import BundleError
from modelops.results.summary import Summary
from modelops.routing import ExecutorNotChosen, NoWorkerForRequirement, Requirement, pin_executor, serving_executors
from modelops.services.worker_wait import ServingWatch, WorkersGone, wait_for_workers
from modelops.settings import ExecutorType
from modelops.study import Study
from modelops.tasks import TaskResult

PROGRESS_EVERY_S = 10.0
# A results store that does not answer when a run starts fails it after this long (a runner pod then
# exits 4 and the Job starts another); one that stops answering mid-study is waited for longer (the
# store's own Retry), its results held in memory.
START_WAIT_S = 30.0


class StudyRejected(Exception):
    """The study cannot run here as asked (no worker group for its requirement, no such bundle, a job of
    that name for another study, workers of several executors and none chosen, no worker of its executor
    left mid-study): running it again would fail the same way."""


@dataclass(frozen=True)
class RunsOn:
    """Where a study runs: the requirement it keeps to for the whole run, how it came by it, and the
    executors (with their groups) of the workers serving it when it started."""

    requirement: Requirement
    how: str  # "required" (by the study or its options), "pinned" (at start), "recorded" (by its job), "resumed"
    # (by the results file it resumes), "any" (--any-executor)
    started_on: dict  # {executor: [groups]}

    def describe(self) -> str:
        """`executor: cold (pinned at start; --any-executor to allow others), group: default`."""
        executor = self.requirement.executor.value if self.requirement.executor else "any"
        groups = sorted({g for gs in self.started_on.values() for g in gs})
        group = self.requirement.group or ", ".join(groups) or "none"
        return f"executor: {executor} ({self.why()}), group: {group}"

    def why(self) -> str:
        return {"required": "required",
                "pinned": "pinned at start; --any-executor to allow others",
                "recorded": "the executor the job started on; --any-executor to allow others",
                "resumed": "the executor of the results already in --output; --any-executor to allow others",
                "any": "--any-executor: tasks may run on workers of any executor"}[self.how]


@dataclass
class StudyOutcome:
    summary: Summary
    runtimes: dict  # worker address -> describe_worker(), before and after the study
    job: str | None = None
    runs_on: RunsOn | None = None
    plan: object | None = None  # results.plan.PlanCounts, with a store
    resume: object | None = None  # results_file.ResumePlan, with --resume
    wall_s: float = 0.0

    @property
    def complete(self) -> bool:
        tally = self.summary.study
        return not self.summary.failed and (tally is None or tally.complete)


@dataclass
class StudyRun:
    client: object
    study: Study
    output: str | None = None  # a JSON-lines results file
    resume: bool = False  # keep what `output` holds and run only what is missing or failed retryably
    store: object | None = None  # a results.store.ResultsStore
    job: str | None = None  # the job's name in the store
    recompute: bool = False  # run tasks the store already has results for (from other jobs)
    max_in_flight: int | None = None
    progress: bool | str = True  # True: a progress bar; "lines": a line every PROGRESS_EVERY_S; False: none
    count_attempts: bool = True
    chunk_size: int | None = None  # tasks per Dask task: None sizes chunks from measured durations; 1: one each
    say: Callable[[str], None] = print
    warn: Callable[[str], None] = print
    on_result: Callable[[TaskResult], None] | None = None
    worker_wait_s: float | None = None  # how long to wait for a required group's first worker, and mid-study for
    # a worker serving the study again (None: no bound)
    any_executor: bool = False  # True: do not keep to the executor the study starts on (results may mix executors)
    _writer: object | None = field(default=None, init=False)

    def run(self) -> StudyOutcome:
        from modelops.services.dask_simulation import DaskSimulationService

        started = time.perf_counter()
        service = DaskSimulationService(self.client)
        if line := service.version_mismatch():  # once, in one line (services/versions.py)
            self.warn(line)
        study = self.study
        if self.store is not None:
            self.store.prepare(wait=min(self.store.blobs.retry.deadline, START_WAIT_S))
        try:  # a group scaling from zero is waited for; a group the release lacks fails at once
            runs_on = self._runs_on(service)
        except (NoWorkerForRequirement, ExecutorNotChosen) as exc:
            raise StudyRejected(f"study {study.name!r}: {exc}") from None
        requirement = runs_on.requirement
        runtimes = service.worker_runtime()
        digest, entrypoint, bundle_name, study = self._pin(service, study, requirement)
        outcome = StudyOutcome(Summary(), runtimes, job=self.job, runs_on=runs_on)

        tasks = study.iter_tasks(digest, entrypoint)
        n_tasks, kept = study.task_count(), 0
        store_plan = results_file = resume_plan = None
        if self.store is not None:
            store_plan = self._plan_store(study, digest, entrypoint, runs_on)
            outcome.plan = store_plan.counts
            n_tasks, kept = store_plan.counts.run, store_plan.counts.kept_ok + store_plan.counts.kept_failed
            tasks = store_plan.runs(tasks)
        if self.output:
            from modelops.services.results_file import ResultsFile

            results_file = ResultsFile(self.output)
            if self.resume and store_plan is None:
                # by each task's latest line: missing and retryably failed tasks run, the rest are kept
                resume_plan = results_file.plan_resume(t.task_id for t in study.iter_tasks(digest, entrypoint))
                n_tasks, kept = resume_plan.to_run, resume_plan.kept
                tasks = (t for t in tasks if resume_plan.runs(t.task_id))
                self.say(resume_plan.describe(self.output))
                outcome.resume = resume_plan
            results_file.open(truncate=not self.resume)
        summary = outcome.summary
        self.say(f"Study {study.name!r}: {n_tasks} tasks on {len(runtimes)} worker(s), bundle "
                 f"{bundle_name} {digest[:19]}" + (f", {kept} already done" if kept else "")
                 + (f", job {self.job} in results store {self.store.description}" if self.store else ""))
        self.say(runs_on.describe())
        watch = ServingWatch(service, requirement, runs_on.started_on, self.say, self.worker_wait_s)
        try:
            if store_plan is not None and store_plan.counts.reuse:
                for record in store_plan.copy_reused(self._writer):
                    if results_file:
                        results_file.add(record)
                    self._count(summary, TaskResult.model_validate(record))
                self._writer.flush()
                if results_file:
                    results_file.flush()
                self.say(f"reused {summary.reused} result(s) from earlier jobs ({', '.join(store_plan.sources)}) "
                         f"instead of running them again (--recompute runs them)")
            bar = self.progress is True and n_tasks
            progress = _ProgressLines(self.say, n_tasks) if self.progress == "lines" else None
            for completed in service.stream(tasks, max_in_flight=self.max_in_flight, progress=bar,
                                            requirement=requirement, count_attempts=self.count_attempts,
                                            chunk_size=self.chunk_size, expected=n_tasks, watch=watch,
                                            distinct=True):
                watch.result_arrived()
                if self._writer is not None:
                    self._writer.add(completed.record)
                if results_file:
                    results_file.add(completed.record)
                if completed.batch_end:  # never hold a finished result while waiting for the next
                    if self._writer is not None:
                        self._writer.batch_end()
                    if results_file:
                        results_file.flush()
                if resume_plan is not None:
                    resume_plan.record(completed.record)
                self._count(summary, completed.result)
                if progress:
                    progress.update(summary)
        except WorkersGone as exc:
            raise StudyRejected(f"study {study.name!r}: {exc}") from None
        finally:
            # on any exit (a SIGTERM's exception included) what has arrived is written
            try:
                if self._writer is not None:
                    self._writer.close()
            finally:
                if results_file:
                    results_file.close()
        outcome.runtimes = {**runtimes, **service.worker_runtime()}  # fallbacks happen during the study
        if store_plan is not None:
            summary.study = _store_tally(store_plan.counts, summary, study.task_count())
        elif resume_plan is not None:
            summary.study = resume_plan.tally()
        outcome.wall_s = time.perf_counter() - started
        return outcome

    def _count(self, summary: Summary, result: TaskResult) -> None:
        summary.add(result)
        if self.on_result:
            self.on_result(result)

    def _runs_on(self, service) -> RunsOn:
        """The requirement the study keeps to (see RunsOn), once a worker serving it is connected."""
        requirement = self.study.requires
        if self.any_executor and requirement.executor:
            raise ValueError(f"any_executor lets study {self.study.name!r} run on any executor, but it requires "
                             f"executor {requirement.executor.value!r}: give one or the other")
        how, earlier = ("required" if requirement.executor else "pinned"), self._earlier_executor()
        if earlier is not None and not requirement.executor and not self.any_executor:
            # a later run keeps to what the first one started on, whatever is connected now
            requirement, how = requirement.model_copy(update={"executor": earlier[0]}), earlier[1]
        try:
            wait_for_workers(service, requirement, self.say, self.worker_wait_s)
        except NoWorkerForRequirement as exc:
            if how in ("recorded", "resumed"):
                raise NoWorkerForRequirement(f"{exc}; {RunsOn(requirement, how, {}).why()}") from None
            raise
        workers = service.client.scheduler_info(n_workers=-1)["workers"]
        started_on = serving_executors(requirement, workers)
        if self.any_executor:
            return RunsOn(requirement, "any", started_on)
        return RunsOn(pin_executor(requirement, workers), how, started_on)

    def _earlier_executor(self) -> tuple[ExecutorType, str] | None:
        """(executor, how) an earlier run of this study kept to: its job's record ("recorded"), or the one
        executor of the results file's successful results when resuming it ("resumed"); None otherwise."""
        if self.store is not None:
            record = self.store.job(self.job)
            if record is not None and record.executor:
                return ExecutorType(record.executor), "recorded"
        elif self.resume and self.output:
            from modelops.services.results_file import ResultsFile

            executors = ResultsFile(self.output).ok_executors()
            if len(executors) == 1 and (executor := executors.pop()) in {e.value for e in ExecutorType}:
                return ExecutorType(executor), "resumed"
        return None

    def _pin(self, service, study: Study, requirement: Requirement) -> tuple[str, str, str, Study]:
        """(bundle digest, entrypoint, bundle name, the study with its bundle pinned) as the workers see
        the bundle (asked of a worker meeting `requirement`)."""
        from modelops.services.bundle_pinning import pin_study

        try:
            study = pin_study(study)  # an OCI tag becomes one digest for every task of the study
            bundle = service.resolve_bundle(study.bundle, requirement)
        except BundleError as exc:
            if getattr(exc, "retryable", False):
                raise
            raise StudyRejected(f"study {study.name!r}: {exc}") from None
        if study.bundle_digest and study.bundle_digest != bundle["digest"]:
            raise StudyRejected(
                f"study {study.name!r}: bundle {study.bundle!r} was pinned to {study.bundle_digest} when the study "
                f"was submitted, but the workers' copy has digest {bundle['digest']}: the bundle changed since "
                "(submit the study again to run the workers' copy)")
        return bundle["digest"], study.entrypoint or bundle["entrypoint"], bundle["name"], study

    def _plan_store(self, study: Study, digest: str, entrypoint: str, runs_on: RunsOn):
        from modelops.results.plan import StorePlan
        from modelops.results.store import JobMismatch, JobRecord

        requirement = runs_on.requirement
        executor = requirement.executor.value if requirement.executor else None
        record = JobRecord(job=self.job, study=study.model_dump(mode="json", exclude_none=True),
                           bundle_digest=digest, entrypoint=entrypoint, tasks=study.task_count(),
                           created=time.time(), recompute=self.recompute, executor=executor,
                           groups=sorted({g for gs in runs_on.started_on.values() for g in gs}))
        try:
            record = self.store.start_job(record)
        except JobMismatch as exc:
            raise StudyRejected(str(exc)) from None
        plan = StorePlan(self.store, record, executor=executor, recompute=self.recompute)
        plan.classify(study.iter_tasks(digest, entrypoint))
        self._writer = self.store.writer(self.job)
        self.say(f"Results store {self.store.description}, job {self.job}: {plan.counts.describe()} "
                 f"(looked up in {plan.counts.lookup_seconds:.2f} s)")
        return plan


def _store_tally(counts, summary: Summary, tasks: int):
    """The study by the latest result of each task: the job's kept rows, reused and this run's results."""
    from modelops.services.results_file import StudyTally

    ok = counts.kept_ok + summary.succeeded
    failed_now = summary.failed - summary.retryable
    failed = counts.kept_failed + failed_now
    return StudyTally(tasks=tasks, ok=ok, failed=failed, retryable=summary.retryable,
                      missing=tasks - ok - failed - summary.retryable)


class _ProgressLines:
    """Progress as a line every PROGRESS_EVERY_S (logs of a pod, not a terminal)."""

    def __init__(self, say: Callable[[str], None], total: int):
        self.say, self.total, self.next = say, total, time.monotonic() + PROGRESS_EVERY_S

    def update(self, summary: Summary) -> None:
        if time.monotonic() >= self.next:
            self.next = time.monotonic() + PROGRESS_EVERY_S
            self.say(f"progress: {summary.computed}/{self.total} run, {summary.failed} failed")
