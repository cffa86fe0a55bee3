"""Results files: atomic appends, torn lines ignored, resume sees completed tasks."""

from __future__ import annotations

import json

from modelops.services.dask_simulation import task_error_result
from modelops.services.results_file import ResultsFile
from modelops.tasks import Task


def result(i: int):
    task = Task(bundle="b", bundle_digest="sha256:x", entrypoint="m:f", params={"i": i}, seed=i)
    return task_error_result(task, RuntimeError(f"boom {i}"))


def test_append_and_read_back(tmp_path):
    results = ResultsFile(tmp_path / "r.jsonl")
    results.open(truncate=True)
    for i in range(3):
        results.append(result(i))
    results.close()
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["params"]["i"] for line in lines] == [0, 1, 2]
    assert results.completed_task_ids() == {result(i).task_id for i in range(3)}


def test_a_torn_last_line_is_ignored_and_dropped_on_resume(tmp_path):
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path)
    results.open(truncate=True)
    results.append(result(0))
    results.close()
    with path.open("a") as fh:
        fh.write('{"task_id": "half')  # a client killed mid-write by an older tool
    assert results.completed_task_ids() == {result(0).task_id}
    results.open(truncate=False)
    results.append(result(1))
    results.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_truncate_starts_afresh(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"task_id": "old"}) + "\n")
    results = ResultsFile(path)
    results.open(truncate=True)
    results.close()
    assert results.completed_task_ids() == set()
