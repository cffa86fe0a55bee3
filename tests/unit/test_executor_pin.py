"""A study keeps to the executor it starts on (issue 22 item 5): the pin at start, the refusal when several
executors could serve a study, how the choice is said and recorded, and the waiting line `mops jobs status`
finds. The behaviour through a real change of executor mid-study: tests/integration/test_keep_executor.py."""

from __future__ import annotations

import json

import pytest

from modelops.jobs.manifests import runner_args
from modelops.jobs.status import runner_waiting
from modelops.results.store import JobRecord, ResultsStore
from modelops.routing import (
    ExecutorNotChosen,
    NoWorkerForRequirement,
    Requirement,
    pin_executor,
    serving_executors,
    worker_resources,
)
from modelops.services.study_run import RunsOn
from tests.unit.test_cli import REPO, mops

COLD = {"resources": worker_resources("cold", "default")}
COLD_B = {"resources": worker_resources("cold", "b")}
WARM = {"resources": worker_resources("isolated_warm", "fast")}
PLAIN = {"resources": {}}  # a worker without modelops' plugin advertises nothing


def test_a_study_without_an_executor_is_pinned_to_the_one_executor_serving_it():
    pinned = pin_executor(Requirement(), {"a": COLD, "b": COLD_B})
    assert pinned == Requirement(executor="cold")
    assert pinned.resources() == {"modelops-executor-cold": 1}  # so Dask never places its tasks elsewhere


def test_a_group_requirement_is_pinned_to_that_groups_executor():
    assert pin_executor(Requirement(group="fast"), {"a": COLD, "b": WARM}) == Requirement(executor="isolated_warm",
                                                                                            group="fast")


def test_a_required_executor_is_kept_as_it_is():
    required = Requirement(executor="direct")
    assert pin_executor(required, {"a": COLD, "b": WARM}) is required


def test_several_executors_serving_a_study_refuse_it_naming_them_and_the_choices():
    with pytest.raises(ExecutorNotChosen) as err:
        pin_executor(Requirement(), {"a": COLD, "b": WARM, "c": COLD_B})
    message = str(err.value)
    assert "cold (groups b, default), isolated_warm (group fast)" in message
    assert "--require-executor cold|isolated_warm" in message and "--any-executor" in message


def test_no_serving_worker_reporting_an_executor_is_an_error_not_a_silent_unpinned_run():
    with pytest.raises(NoWorkerForRequirement, match="reports its executor.*--any-executor"):
        pin_executor(Requirement(), {"a": PLAIN})


def test_serving_executors_leave_out_workers_that_do_not_meet_the_requirement():
    workers = {"a": COLD, "b": WARM, "c": PLAIN}
    assert serving_executors(Requirement(), workers) == {"cold": ["default"], "isolated_warm": ["fast"]}
    assert serving_executors(Requirement(group="default"), workers) == {"cold": ["default"]}


@pytest.mark.parametrize("how, said", [
    ("pinned", "executor: cold (pinned at start; --any-executor to allow others), group: default"),
    ("required", "executor: cold (required), group: default"),
    ("recorded", "executor: cold (the executor the job started on; --any-executor to allow others), group: default"),
])
def test_the_summary_line_says_which_executor_and_why(how, said):
    assert RunsOn(Requirement(executor="cold"), how, {"cold": ["default"]}).describe() == said


def test_any_executor_is_said_as_such():
    runs_on = RunsOn(Requirement(), "any", {"cold": ["default"], "isolated_warm": ["fast"]})
    assert runs_on.describe() == ("executor: any (--any-executor: tasks may run on workers of any executor), "
                                  "group: default, fast")


def test_the_job_record_keeps_the_executor_and_reads_records_written_before_it(tmp_path):
    store = ResultsStore.open(f"file://{tmp_path}/store")
    store.prepare()
    record = JobRecord(job="j", study={"name": "s"}, bundle_digest="sha256:x", entrypoint="m:f", tasks=2, created=1.0,
                       executor="cold", groups=["default"])
    store.put_job(record)
    assert store.job("j").executor == "cold" and store.job("j").groups == ["default"]
    old = JobRecord(job="old", study={"name": "s"}, bundle_digest="sha256:x", entrypoint="m:f", tasks=2, created=1.0)
    store.put_job(old)
    assert store.job("old").executor is None


def test_jobs_status_finds_the_mid_study_waiting_line_until_workers_are_back():
    waiting = ("waiting for workers of executor cold: 0 ready; the study started on cold (group default); "
               "connected now: isolated_warm (group default)")
    log = f"progress: 18/20 run, 0 failed\n{waiting}\n"
    assert runner_waiting(log) == waiting
    assert runner_waiting(log + "workers ready after 12 s: 1 worker(s) serve the study\n") is None


def test_a_job_passes_any_executor_and_the_wait_bound_to_its_runner():
    assert runner_args("/s.json", "tcp://s:8786", "file:///r", "j", any_executor=True)[-1] == "--any-executor"
    assert "--any-executor" not in runner_args("/s.json", "tcp://s:8786", "file:///r", "j")
    bounded = runner_args("/s.json", "tcp://s:8786", "file:///r", "j", wait_workers=30.0)
    assert bounded[-2:] == ["--wait-workers", "30"]


def test_mops_run_refuses_any_executor_with_a_required_executor():
    done = mops("run", str(REPO / "examples/sir/study.json"), "--scheduler", "tcp://127.0.0.1:1", "--any-executor",
                "--require-executor", "cold")
    assert done.returncode == 2
    assert "--any-executor" in done.stderr and "requires executor 'cold'" in done.stderr


def test_a_resumed_results_file_names_the_executor_of_its_successful_results(tmp_path):
    from modelops.services.results_file import ResultsFile

    path = tmp_path / "r.jsonl"
    lines = [{"task_id": "a", "status": "ok", "provenance": {"executor": "cold"}},
             {"task_id": "b", "status": "failed", "provenance": {"executor": "unknown"}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert ResultsFile(path).ok_executors() == {"cold"}
    assert ResultsFile(tmp_path / "none.jsonl").ok_executors() == set()


def release_with(groups: dict):
    from modelops.jobs.release import ReleaseJobs

    return ReleaseJobs(release="sims", namespace="ns", scheduler="tcp://s:8786", store="file:///r",
                       results_service={}, groups={n: {"executor": e} for n, e in groups.items()}, job_template={})


def test_jobs_submit_refuses_a_study_two_executors_of_the_release_could_serve():
    from modelops.jobs.kube import JobsError

    release = release_with({"default": "isolated_warm", "cold": "cold"})
    with pytest.raises(JobsError) as err:
        release.check_one_executor(Requirement())
    assert ("release 'sims': worker groups of several executors could run it: cold (group cold), isolated_warm "
            "(group default)") in str(err.value)
    assert "--executor cold|isolated_warm" in str(err.value) and "--any-executor" in str(err.value)
    release.check_one_executor(Requirement(group="cold"))  # one group: one executor
    release.check_one_executor(Requirement(executor="cold"))
    release_with({"default": "cold", "more": "cold"}).check_one_executor(Requirement())


def test_a_wait_that_ends_while_results_flow_is_said_to_be_over():
    """Once workers serve the study again its results flow and the stream no longer waits (so no longer calls
    the watch): the first result after the wait must still end it with the ready line, or `mops jobs status`
    would go on showing the waiting line (seen in CI: a study that finished without saying so)."""
    from types import SimpleNamespace

    from modelops.services.worker_wait import READY, WAITING, ServingWatch
    from modelops.settings import ExecutorType

    connected: dict = {"tcp://w1": {"resources": worker_resources("isolated_warm", "default")}}
    service = SimpleNamespace(client=SimpleNamespace(scheduler_info=lambda n_workers=-1: {"workers": connected}))
    lines: list[str] = []
    watch = ServingWatch(service, Requirement(executor=ExecutorType.COLD), {"cold": ["default"]}, lines.append,
                         bound=None)
    watch.next_check = 0.0
    watch()  # no cold worker: waiting
    assert lines and lines[-1].startswith(WAITING), lines
    connected["tcp://w2"] = {"resources": worker_resources("cold", "default")}
    watch.result_arrived()  # a cold worker is back and its results arrive before the watch's next poll
    assert lines[-1].startswith(READY) and "1 worker(s) serve the study" in lines[-1], lines
    watch.result_arrived()  # no longer waiting: nothing more said, no scheduler call
    assert len(lines) == 2
