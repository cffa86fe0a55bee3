"""How many tasks go to one Dask task (ChunkSizer), and `mops run --chunk-size` refusing what it cannot use."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from modelops.cli.run import run
from modelops.services.dask_simulation import CHUNK_MAX, CHUNK_TARGET_S, ChunkSizer, check_chunk_size
from modelops.tasks import Provenance, TaskResult


def result(duration_s: float, executor: str = "direct") -> TaskResult:
    return TaskResult(task_id="t", status="ok", params={}, seed=1, outputs={},
                      provenance=Provenance(executor=executor, worker="w", worker_group="default", pid=1,
                                            bundle="b", bundle_digest="d", started=0.0, duration_s=duration_s))


def test_one_task_per_dask_task_until_a_duration_is_measured_then_about_the_target_of_work():
    sizer = ChunkSizer(None, threads=4)
    assert not sizer.measured and sizer.size() == 1
    sizer.observe(result(0.001))
    assert sizer.measured and sizer.size() == int(CHUNK_TARGET_S / 0.001)


def test_tasks_as_long_as_the_target_run_one_per_dask_task():
    sizer = ChunkSizer(None, threads=4)
    for _ in range(5):
        sizer.observe(result(0.2))
    assert sizer.size() == 1


def test_dask_level_failures_measure_nothing():
    sizer = ChunkSizer(None, threads=4)
    sizer.observe(result(0.0, executor="unknown"))
    assert not sizer.measured and sizer.size() == 1


def test_the_rest_of_a_study_keeps_every_thread_busy_and_a_bound_holds_two_chunks_per_thread():
    sizer = ChunkSizer(None, threads=4)
    sizer.observe(result(1e-5))
    assert sizer.size() == CHUNK_MAX
    assert sizer.size(remaining=1000) == 63  # ceil(1000 / (4 threads x 4 chunks))
    assert sizer.size(remaining=3) == 1
    assert sizer.size(bound=40) == 5


def test_a_fixed_size_is_kept():
    sizer = ChunkSizer(7, threads=4)
    sizer.observe(result(0.001))
    assert sizer.measured and sizer.size(remaining=1) == 7


@pytest.mark.parametrize("bad", [0, -1, CHUNK_MAX + 1, 1.5, True, "3"])
def test_check_chunk_size_names_what_is_allowed(bad):
    with pytest.raises(ValueError, match=f"from 1 to {CHUNK_MAX}"):
        check_chunk_size(bad)


@pytest.mark.parametrize("bad", ["0", "-2", "ten", "1.5", str(CHUNK_MAX + 1)])
def test_mops_run_chunk_size_refuses_a_bad_value_naming_the_option_the_value_and_what_is_allowed(bad):
    out = CliRunner().invoke(run, ["study.json", "--local", "--chunk-size", bad])
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert "--chunk-size" in text and repr(bad) in text and f"whole number from 1 to {CHUNK_MAX}" in text
    assert "'auto'" in text


def test_a_chunk_looks_its_bundle_up_once_and_each_task_keeps_its_own_result(make_runtime):
    from tests.helpers import make_task

    runtime = make_runtime(MODELOPS_EXECUTOR_TYPE="direct")
    tasks = [make_task(runtime, "faulty", {"i": i, "fault": "exception" if i == 1 else "none"}, seed=i)
             for i in range(3)]
    alone = [runtime.execute(t) for t in tasks]
    looked_up = []
    resolve = runtime.resolver.resolve
    runtime.resolver.resolve = lambda name: looked_up.append(name) or resolve(name)
    prepared: dict = {}
    chunked = [runtime.execute(t, prepared) for t in tasks]
    assert looked_up == ["faulty"]
    assert [r.status for r in chunked] == [r.status for r in alone] == ["ok", "failed", "ok"]
    assert [(r.task_id, r.seed, r.outputs and r.outputs["seed"]) for r in chunked] == \
        [(r.task_id, r.seed, r.outputs and r.outputs["seed"]) for r in alone]
