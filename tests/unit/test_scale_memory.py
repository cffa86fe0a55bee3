"""What a client holds for a study does not grow with it (issue 23, item 5): a study's tasks come out
each once (so the stream keeps no set of ids seen), and `--resume`'s plan keeps 17 bytes per task with a
line in the results file, not a dict of id strings."""

from __future__ import annotations

import tracemalloc

from modelops.services.dask_simulation import IN_FLIGHT_CHUNKED_MAX, in_flight_bound
from modelops.services.results_file import OK, RETRYABLE, ResultsFile
from modelops.study import Study

DIGEST = "sha256:" + "ab" * 32
ENTRYPOINT = "model:simulate"


def test_repeated_parameter_sets_and_colliding_seeds_are_one_task_each():
    study = Study(name="dup", bundle="b", parameters=[{"a": 1}, {"a": 2}, {"a": 1}, {"a": 1.0}], replicates=3)
    ids = [t.task_id for t in study.iter_tasks(DIGEST, ENTRYPOINT)]
    # {"a": 1} twice is one set; {"a": 1.0} is another (its task id differs, as its JSON does)
    assert len(ids) == len(set(ids)) == 9 == study.task_count()
    assert study.seeds() == [study.replicate_seed(r) for r in range(3)]


def test_the_resume_plan_of_a_20000_line_file_holds_bytes_per_task_not_objects(tmp_path):
    n = 20_000
    tasks = list(Study(name="big", bundle="b", parameters=[{"i": i} for i in range(n // 4)],
                       replicates=4).iter_tasks(DIGEST, ENTRYPOINT))
    path = tmp_path / "results.jsonl"
    results = ResultsFile(path)
    results.open(truncate=True)
    for i, task in enumerate(tasks[: n // 2]):  # half done, every tenth failed retryably
        results.add({"task_id": task.task_id, "status": "failed" if i % 10 == 0 else "ok",
                     "error": {"retryable": True} if i % 10 == 0 else None})
    results.close()
    ids = [t.task_id for t in tasks]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        plan = ResultsFile(path).plan_resume(iter(ids))
        held = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    # 17 bytes per task with a line (10,000: ~172 kB); the dict of the kept tasks' id strings and the set of
    # the missing ones held 733 kB, and grew on as the rerun's results arrived
    assert held < 20_000 + 24 * (n // 2), held
    assert (plan.kept_ok, plan.retry, plan.missing, plan.foreign) == (n // 2 - n // 20, n // 20, n // 2, 0)
    assert plan.latest.state(ids[0]) == RETRYABLE and plan.latest.state(ids[1]) == OK
    assert plan.latest.state(ids[-1]) is None and plan.runs(ids[-1]) and not plan.runs(ids[1])


def test_chunks_put_at_most_a_fixed_number_of_tasks_in_flight_but_never_fewer_than_unchunked():
    assert in_flight_bound(threads=2, chunk_size=10_000) == IN_FLIGHT_CHUNKED_MAX  # was 80,000
    assert in_flight_bound(threads=2, chunk_size=100) == 800
    assert in_flight_bound(threads=2) == 200
    assert in_flight_bound(threads=10_000, chunk_size=50) == 40_000  # 4 per thread, as unchunked
