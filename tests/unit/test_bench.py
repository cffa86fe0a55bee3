"""`mops bench`: runs for real with tiny N; checks the shape of what it reports, never speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from click.testing import CliRunner

from modelops.benchmark.runner import EXECUTORS, percentile, tree_cpu_s
from modelops.cli.bench import bench

NUMBERS = ("p50_ms", "p95_ms", "cpu_ms_per_task", "tasks_per_s", "first_task_ms")


def invoke(tmp_path, *args: str):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [*args, "--json", str(out)], catch_exceptions=False)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def assert_positive_finite(stats: dict, where: str) -> None:
    for key in NUMBERS:
        value = stats[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (where, key, value)
    assert stats["p95_ms"] >= stats["p50_ms"], where


def test_trivial_bench_reports_every_executor_at_each_concurrency(tmp_path):
    result, data = invoke(
        tmp_path, "--tasks", "3", "--spawn-tasks", "2", "--concurrency", "1,2", "--heavy-modules", "json,decimal"
    )
    assert result.exit_code == 0, result.output
    assert set(data["executors"]) == set(EXECUTORS) == {"direct", "isolated_warm", "cold-spawn", "cold-fork"}
    for name, stats in data["executors"].items():
        assert_positive_finite(stats, name)
        assert stats["failed"] == 0
    assert set(data["by_concurrency"]) == {"1", "2"}
    for concurrency, row in data["by_concurrency"].items():
        assert set(row) == set(EXECUTORS)
        for name, stats in row.items():
            assert_positive_finite(stats, f"{name} x{concurrency}")
            assert stats["concurrency"] == int(concurrency)
            assert stats["tasks"] == (2 if name == "cold-spawn" else 3)
            assert math.isfinite(stats["overhead_vs_warm_p50_ms"])
        assert row["isolated_warm"]["overhead_vs_warm_p50_ms"] == 0
    assert data["heavy_modules"] == ["json", "decimal"] and data["mode"] == "trivial"
    targets = {t["target"] for t in data["targets"]["1"]}
    assert any("50x" in t for t in targets) and any("CPU" in t for t in targets)
    # the printed table names every executor at both concurrencies
    for name in EXECUTORS:
        assert result.output.count(f"\n{name} ") == 2
    assert "concurrency 1" in result.output and "concurrency 2" in result.output


def test_realistic_mode_runs_the_simulation(tmp_path):
    result, data = invoke(
        tmp_path, "--mode", "realistic", "--tasks", "2", "--spawn-tasks", "1", "--concurrency", "1",
        "--heavy-modules", "numpy",
    )
    assert result.exit_code == 0, result.output
    assert data["mode"] == "realistic"
    for name, stats in data["executors"].items():
        assert_positive_finite(stats, name)
    assert [t["target"] for t in data["targets"]["1"]] == ["cold-fork p50 <= 1.2 x warm p50"]


def test_selected_executors_only(tmp_path):
    result, data = invoke(tmp_path, "--tasks", "2", "--executors", "isolated_warm,cold-fork", "--concurrency", "1",
                          "--heavy-modules", "")
    assert result.exit_code == 0, result.output
    assert set(data["executors"]) == {"isolated_warm", "cold-fork"}
    assert data["heavy_modules"] == []


def test_tasks_that_fail_make_the_bench_fail_loudly(tmp_path):
    # (not `direct`: it would reuse the bench module this test process imported earlier)
    result, data = invoke(tmp_path, "--tasks", "1", "--executors", "cold-fork", "--concurrency", "1",
                          "--heavy-modules", "no_such_module_xyz")
    assert result.exit_code != 0
    assert "no_such_module_xyz" in result.output and "some benchmark tasks failed" in result.output
    assert data["failures"]


@pytest.mark.parametrize("bad", [["--executors", "cold"], ["--concurrency", "0"], ["--concurrency", "a"]])
def test_bad_options_are_rejected(bad):
    result = CliRunner().invoke(bench, bad)
    assert result.exit_code == 2


def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0


def test_tree_cpu_counts_live_and_reaped_descendants():
    spin = (
        "import time, sys\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print(time.process_time(), flush=True)\n"
        "time.sleep(60)\n"
    )
    before = tree_cpu_s()
    child = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
    try:
        used = float(child.stdout.readline())
        alive = tree_cpu_s() - before  # the child is still running: read from /proc
        assert alive >= 0.9 * used
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert tree_cpu_s() - before >= 0.9 * used  # reaped: now in RUSAGE_CHILDREN
