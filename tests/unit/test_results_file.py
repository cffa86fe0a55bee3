"""Results files: atomic appends, torn lines ignored, resume sees completed tasks."""

from __future__ import annotations

import json

import pytest

from modelops.services.dask_simulation import task_error_result
from modelops.results.json_lines import json_line
from modelops.services.results_file import ResultsFile
from modelops.tasks import Task, TaskResult


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


def test_added_results_are_written_only_as_whole_lines_at_flush(tmp_path):
    """Batching: add() buffers, flush() writes every buffered line at once, never a part of one."""
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path)
    results.open(truncate=True)
    for i in range(5):
        results.add(result(i).model_dump(mode="json"))
    assert path.read_bytes() == b""  # nothing on disk until the batch is flushed
    results.flush()
    data = path.read_bytes()
    assert data.endswith(b"\n") and [json.loads(line)["params"]["i"] for line in data.splitlines()] == list(range(5))
    results.add(result(5).model_dump(mode="json"))
    results.close()  # close flushes what is left
    assert len(path.read_bytes().splitlines()) == 6


def test_a_full_buffer_is_flushed_without_waiting_for_the_caller(tmp_path):
    path = tmp_path / "r.jsonl"
    one = len(json_line(result(0).model_dump(mode="json"))) + 1
    results = ResultsFile(path, flush_bytes=3 * one)
    results.open(truncate=True)
    for i in range(4):
        results.add(result(i).model_dump(mode="json"))
    assert len(path.read_bytes().splitlines()) == 3  # the first three filled the batch
    results.close()


def test_lines_are_the_same_as_the_validated_result_dumped(tmp_path):
    """Writing the worker's JSON-mode dict gives the line the validated result would give."""
    record = result(7).model_dump(mode="json")
    record["status"], record["error"] = "ok", None
    record["outputs"] = {"series": {"I": [1, 2, 3]}, "rate": 0.25, "label": "é"}
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path)
    results.open(truncate=True)
    results.add(record)
    results.append(TaskResult.model_validate(record))
    results.close()
    first, second = path.read_text().splitlines()
    assert first == second and json.loads(first)["outputs"]["label"] == "é"


def test_non_finite_floats_and_bytes_stay_strict_json():
    line = json_line({"a": float("nan"), "b": [float("inf"), -float("inf")], "c": b"\x00\xff", "d": 1.5})
    assert json.loads(line) == {"a": "nan", "b": ["inf", "-inf"], "c": {"__bytes__": "00ff"}, "d": 1.5}
    assert "NaN" not in line and "Infinity" not in line
    with pytest.raises(TypeError, match="cannot write a set to a results file"):
        json_line({"x": {1}})


def test_a_torn_tail_longer_than_the_look_back_step_is_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    whole = json.dumps({"task_id": "a"}) + "\n"
    path.write_text(whole + '{"task_id": "b", "outputs": "' + "x" * 200_000)  # torn, 200 kB long
    results = ResultsFile(path)
    assert results.completed_task_ids() == {"a"}
    results.open(truncate=False)
    results.close()
    assert path.read_text() == whole


def test_the_client_writer_does_not_depend_on_executor_code():
    """The results file is client-side: it must not import modelops.executors (worker-side code)."""
    import subprocess
    import sys

    code = ("import sys, modelops.services.results_file, modelops.results.json_lines; "
            "print(sorted(m for m in sys.modules if m.startswith('modelops.executors.invoke')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
