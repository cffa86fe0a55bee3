"""`--resume` by each task's latest line: tasks without a line and tasks whose latest line failed
retryably run again; ok lines and failures a rerun would repeat are kept. The file stays
append-only, and every reader counts a task once, by its latest line."""

from __future__ import annotations

import json

from modelops.failures import Failure
from modelops.services.results_file import FAILED, OK, RETRYABLE, ResultsFile, line_state
from modelops.study import Study
from modelops.tasks import Provenance, TaskError, TaskResult

DIGEST = "sha256:" + "ab" * 32
ENTRYPOINT = "model:simulate"


def study() -> Study:
    return Study(name="resume", bundle="example.test:5000/team/model@" + DIGEST,
                 parameters=[{"beta": b} for b in (0.1, 0.2, 0.3, 0.4, 0.5)], replicates=2)


def provenance(task) -> Provenance:
    return Provenance(executor="cold", worker="tcp://127.0.0.1:1", worker_group="default", pid=4242,
                      bundle=task.bundle, bundle_digest=task.bundle_digest, started=1.0, duration_s=0.1)


def ok(task) -> dict:
    return TaskResult(task_id=task.task_id, status="ok", params=task.params, seed=task.seed,
                      outputs={"beta": task.params["beta"]}, provenance=provenance(task)).model_dump(mode="json")


def failed(task, retryable: bool) -> dict:
    failure = Failure(kind="runtime", type="OciBundleError" if retryable else "ValueError",
                      message="registry unreachable" if retryable else "bad parameter set", retryable=retryable)
    return TaskResult(task_id=task.task_id, status="failed", params=task.params, seed=task.seed,
                      error=TaskError(**failure.error()), provenance=provenance(task)).model_dump(mode="json")


def write(path, records, truncate=False) -> None:
    results = ResultsFile(path)
    results.open(truncate=truncate)
    for record in records:
        results.add(record)
    results.close()


def test_the_state_of_a_line():
    task = study().tasks(DIGEST, ENTRYPOINT)[0]
    assert line_state(ok(task)) == OK
    assert line_state(failed(task, retryable=True)) == RETRYABLE
    assert line_state(failed(task, retryable=False)) == FAILED
    assert line_state({"task_id": "x", "status": "failed", "error": None}) == FAILED


def test_resume_reruns_exactly_the_retryable_and_the_missing_tasks_and_counts_each_task_by_its_latest_line(tmp_path):
    tasks = study().tasks(DIGEST, ENTRYPOINT)
    assert len({t.task_id for t in tasks}) == 10
    good, bad, flaky, missing = tasks[0:3], tasks[3:5], tasks[5:8], tasks[8:10]
    path = tmp_path / "results.jsonl"
    # the first run: the flaky tasks failed first retryably, were rerun and failed retryably again
    first = ([ok(t) for t in good] + [failed(t, retryable=False) for t in bad]
             + [failed(t, retryable=True) for t in flaky] + [failed(t, retryable=True) for t in flaky])
    write(path, first, truncate=True)
    before = path.read_bytes()

    results = ResultsFile(path)
    plan = results.plan_resume(t.task_id for t in tasks)
    runs = {t.task_id for t in tasks if plan.runs(t.task_id)}
    assert runs == {t.task_id for t in flaky + missing}  # retryable + missing, nothing else
    assert (plan.kept_ok, plan.kept_failed, plan.retry, plan.missing, plan.foreign) == (3, 2, 3, 2, 0)
    assert (plan.kept, plan.to_run) == (5, 5)
    assert plan.describe(path) == (f"Resume from {path}: 5 kept (3 ok, 2 failed not retryable), "
                                   "3 rerun (failed retryable), 2 missing")
    # the old reader said every task with any line was done: the flaky ones would never run again
    assert results.completed_task_ids() == {t.task_id for t in good + bad + flaky}

    # the rerun: two flaky tasks and one missing now succeed; one flaky fails retryably again;
    # one missing fails for good
    rerun = [ok(flaky[0]), ok(flaky[1]), failed(flaky[2], retryable=True), ok(missing[0]),
             failed(missing[1], retryable=False)]
    write(path, rerun)
    for record in rerun:
        plan.record(record)

    data = path.read_bytes()
    assert data.startswith(before)  # append-only: the earlier failed lines are still there
    assert len(data.splitlines()) == len(first) + len(rerun)
    tally = plan.tally()
    assert (tally.tasks, tally.ok, tally.failed, tally.retryable, tally.missing) == (10, 6, 3, 1, 0)
    assert not tally.complete
    assert tally.describe() == "10 tasks: 6 ok, 4 failed (1 retryable), 0 without a result"

    states = results.latest_states()
    assert states == {**{t.task_id: OK for t in good + flaky[:2] + missing[:1]},
                      **{t.task_id: FAILED for t in bad + missing[1:]}, flaky[2].task_id: RETRYABLE}
    latest = list(results.latest_records())
    assert len(latest) == 10 and len({r["task_id"] for r in latest}) == 10  # each task once
    by_id = {r["task_id"]: r for r in latest}
    assert by_id[flaky[0].task_id] == rerun[0] and by_id[good[0].task_id] == first[0]

    # the file, read afresh, plans the same: only the one still retryable runs
    again = ResultsFile(path).plan_resume(t.task_id for t in tasks)
    assert {t.task_id for t in tasks if again.runs(t.task_id)} == {flaky[2].task_id}
    assert (again.kept_ok, again.kept_failed, again.retry, again.missing) == (6, 3, 1, 0)
    assert again.tally() == tally


def test_a_study_without_a_results_file_runs_everything(tmp_path):
    tasks = study().tasks(DIGEST, ENTRYPOINT)
    plan = ResultsFile(tmp_path / "none.jsonl").plan_resume(t.task_id for t in tasks)
    assert all(plan.runs(t.task_id) for t in tasks)
    assert (plan.kept, plan.retry, plan.missing) == (0, 0, 10)
    assert plan.tally().missing == 10


def test_lines_of_other_tasks_are_left_alone_and_named(tmp_path):
    """A results file of another bundle digest (a tag that moved between runs) shares no task id."""
    path = tmp_path / "results.jsonl"
    old = study().tasks("sha256:" + "cd" * 32, ENTRYPOINT)
    write(path, [ok(t) for t in old[:4]], truncate=True)
    tasks = study().tasks(DIGEST, ENTRYPOINT)
    plan = ResultsFile(path).plan_resume(t.task_id for t in tasks)
    assert (plan.kept, plan.missing, plan.foreign) == (0, 10, 4)
    assert "4 task id(s) in the file are not tasks of this study" in plan.describe(path)
    assert plan.tally().tasks == 10  # the other tasks' lines are not counted as the study's


def test_a_torn_last_line_does_not_count_as_a_result(tmp_path):
    tasks = study().tasks(DIGEST, ENTRYPOINT)
    path = tmp_path / "results.jsonl"
    write(path, [failed(tasks[0], retryable=True)], truncate=True)
    with path.open("a") as fh:
        fh.write(json.dumps(ok(tasks[0]))[:40])  # the rerun's line, cut short by a killed client
    plan = ResultsFile(path).plan_resume([tasks[0].task_id])
    assert plan.runs(tasks[0].task_id) and plan.retry == 1
    assert [r["status"] for r in ResultsFile(path).latest_records()] == ["failed"]
