"""`mops bench`: runs for real with tiny N; checks the shape of what it reports, never speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelops.benchmark.accounting import tree_cpu_s
from modelops.benchmark.runner import EXECUTORS, percentile
from modelops.benchmark.targets import Targets, check_targets
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


def test_targets_are_passed_in_as_options(tmp_path):
    """Before: the thresholds were numbers written into check_targets; now `--target-*` sets them."""
    result, data = invoke(
        tmp_path, "--mode", "realistic", "--tasks", "2", "--executors", "isolated_warm,cold-fork",
        "--concurrency", "1", "--heavy-modules", "", "--target-realistic-fork-vs-warm-x", "1000",
    )
    assert result.exit_code == 0, result.output
    (check,) = data["targets"]["1"]
    assert check["target"] == "cold-fork p50 <= 1000 x warm p50" and check["met"]
    assert check["limit"] == round(1000 * data["executors"]["isolated_warm"]["p50_ms"], 3)


def test_check_targets_uses_the_targets_it_is_given():
    row = {
        "isolated_warm": {"p50_ms": 10.0, "p95_ms": 12.0, "cpu_ms_per_task": 3.0},
        "cold-fork": {"p50_ms": 14.0, "p95_ms": 30.0, "cpu_ms_per_task": 8.0},
        "cold-spawn": {"p50_ms": 700.0, "p95_ms": 900.0, "cpu_ms_per_task": 600.0},
    }
    default = {c["target"]: c["met"] for c in check_targets(row, "trivial", Targets())}
    assert default == {
        "cold-fork p50 <= warm p50 + 10 ms": True, "cold-fork p95 <= warm p95 + 25 ms": True,
        "cold-fork CPU <= 20 ms/task": True, "cold-fork >= 50x faster than cold-spawn (p50)": True,
    }
    strict = Targets(fork_p50_over_warm_ms=1, fork_p95_over_warm_ms=1, fork_cpu_ms_per_task=1, spawn_vs_fork_x=100)
    assert not any(c["met"] for c in check_targets(row, "trivial", strict))
    bundle = check_targets(row, "bundle", Targets(bundle_fork_vs_warm_x=2.0))
    assert bundle[0] == {"target": "cold-fork p50 <= 2 x warm p50", "value": 14.0, "limit": 20.0,
                         "unit": "ms", "met": True}


@pytest.mark.parametrize("bad", [["--target-spawn-vs-fork-x", "-1"], ["--target-fork-cpu-ms-per-task", "x"]])
def test_bad_targets_are_rejected_naming_the_option(bad):
    result = CliRunner().invoke(bench, bad)
    assert result.exit_code == 2 and bad[0] in result.output


def test_selected_executors_only(tmp_path):
    result, data = invoke(tmp_path, "--tasks", "2", "--executors", "isolated_warm,cold-fork", "--concurrency", "1",
                          "--heavy-modules", "")
    assert result.exit_code == 0, result.output
    assert set(data["executors"]) == {"isolated_warm", "cold-fork"}
    assert data["heavy_modules"] == []


def test_environment_compare_runs_child_executors_in_a_bundle_environment(tmp_path):
    pytest.importorskip("uv", reason="bundle environments need the uv installer")
    result, data = invoke(tmp_path, "--tasks", "3", "--executors", "direct,isolated_warm,cold-fork",
                          "--concurrency", "1", "--heavy-modules", "", "--environment-compare")
    assert result.exit_code == 0, result.output
    assert list(data["executors"]) == ["direct", "isolated_warm", "isolated_warm+env", "cold-fork", "cold-fork+env"]
    row = data["executors"]
    # the first +env column's warm-up built the environment, once; the plain columns built none
    assert row["isolated_warm+env"]["environment_build_ms"] > 0
    assert row["cold-fork+env"]["environment_build_ms"] == 0
    assert row["cold-fork"]["environment_build_ms"] == 0
    effect = data["environment_effect"]["1"]
    assert effect["fork_overhead_ms"] == round(row["cold-fork"]["p50_ms"] - row["isolated_warm"]["p50_ms"], 3)
    assert "bundle environment: cold fork costs" in result.output


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


# ---- mops bench --bundle: a user's own bundle -----------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def test_bundle_bench_runs_a_users_bundle_and_its_study_under_every_executor(tmp_path):
    """examples/sir declares no warm-up: the extra column tries one built from its study's first task."""
    result, data = invoke(tmp_path, "--bundle", str(REPO / "examples" / "sir"), "--tasks", "3", "--spawn-tasks", "1",
                          "--concurrency", "1", "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert data["mode"] == "bundle" and data["bundle_name"] == "sir"
    assert data["study"] == str(REPO / "examples" / "sir" / "study.json") and data["study_tasks"] == 12
    assert data["warmup"] == "none"
    assert list(data["executors"]) == ["direct", "isolated_warm", "cold-spawn", "cold-fork", "cold-fork+warmup"]
    for name, stats in data["executors"].items():
        assert_positive_finite(stats, name)
        assert stats["failed"] == 0 and stats["tasks"] == (1 if name == "cold-spawn" else 3)
        assert stats["p50_vs_warm_x"] > 0
    assert data["executors"]["isolated_warm"]["p50_vs_warm_x"] == 1
    assert "candidate warm-up: entrypoint with params {'beta': 0.2, 'gamma': 0.1}" in data["warmup_columns"]["cold-fork+warmup"]
    effect = data["warmup_effect"]["1"]  # the candidate is the "with" side when none is declared
    assert effect["p50_with_ms"] == data["executors"]["cold-fork+warmup"]["p50_ms"]
    assert effect["p50_without_ms"] == data["executors"]["cold-fork"]["p50_ms"]
    targets = [t["target"] for t in data["targets"]["1"]]
    assert targets[0] == "cold-fork p50 <= 1.1 x warm p50" and any("50x" in t for t in targets)
    for name in data["executors"]:
        assert result.output.count(f"\n{name} ") == 1, name
    assert "declared warm-up: none" in result.output and "x warm" in result.output


def test_bundle_bench_compares_the_declared_warmup_with_none(tmp_path):
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "s", "bundle": "anything", "parameters": [{"n": 10}, {"n": 20}],
                                 "replicates": 2, "base_seed": 5}))
    result, data = invoke(tmp_path, "--bundle", str(REPO / "tests" / "bundles" / "warmup_cache"), "--study", str(study),
                          "--executors", "isolated_warm,cold-fork", "--tasks", "2", "--concurrency", "1,2")
    assert result.exit_code == 0, result.output
    assert data["study"] == str(study) and data["study_tasks"] == 4
    assert data["warmup"] == "function warmup_cache:warm"
    assert data["warmup_columns"] == {"cold-fork": "warm-up as declared", "cold-fork-nowarmup": "declared warm-up removed",
                                      "cold-fork-nospare": "declared warm-up, not repeated by spares while they wait"}
    for c, effect in data["warmup_effect"].items():
        row = data["by_concurrency"][c]
        assert effect["p50_with_ms"] == row["cold-fork"]["p50_ms"]
        assert effect["p50_without_ms"] == row["cold-fork-nowarmup"]["p50_ms"]
        assert effect["saves_ms_per_task"] == pytest.approx(effect["p50_without_ms"] - effect["p50_with_ms"], abs=1e-3)
    assert result.output.count("  warm-up: cold-fork p50") == 2
    assert result.output.count("  spares repeating the warm-up: cold-fork p50") == 2
    for row in data["by_concurrency"].values():
        assert list(row) == ["isolated_warm", "cold-fork", "cold-fork-nospare", "cold-fork-nowarmup"]
        assert all(stats["failed"] == 0 for stats in row.values())


def test_bundle_bench_without_the_comparison_has_no_extra_column(tmp_path):
    result, data = invoke(tmp_path, "--bundle", str(REPO / "tests" / "bundles" / "warmup_cache"), "--no-warmup-compare",
                          "--executors", "cold-fork", "--tasks", "1", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert list(data["executors"]) == ["cold-fork"] and data["study"] is None
    assert data["warmup_effect"] == {} and "  warm-up: cold-fork p50" not in result.output


def test_bundle_bench_refuses_a_bad_warmup_declaration_naming_it(tmp_path):
    bundle = tmp_path / "bad"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps(
        {"name": "bad", "version": "1", "entrypoint": "m:f", "warmup": {"params": {}, "seed": "one"}}))
    result = CliRunner().invoke(bench, ["--bundle", str(bundle)])
    assert result.exit_code == 1
    assert "'warmup.seed' is 'one'" in result.output and "[0, 2**32)" in result.output


@pytest.mark.parametrize("bad", [["--study", "examples/sir/study.json"],
                                 ["--bundle", "examples/sir", "--mode", "realistic"],
                                 ["--bundle", "examples/sir", "--heavy-modules", "numpy"]])
def test_bundle_only_and_builtin_only_options_do_not_mix(bad):
    result = CliRunner().invoke(bench, [a if not a.startswith("examples") else str(REPO / a) for a in bad])
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize("value, message", [
    ("tcp,ssl", "transports 'tcp,ssl': unknown ['ssl']; allowed: a comma list of tcp, tls, each at most once"),
    ("tls,tls", "transports 'tls,tls': repeated ['tls']; allowed: a comma list of tcp, tls, each at most once"),
    (",", "transports '': none given; allowed: a comma list of tcp, tls, each at most once"),
])
def test_throughput_transports_are_checked_before_any_cluster_starts(value, message):
    result = CliRunner().invoke(bench, ["--throughput", str(REPO / "examples/sir/study.json"), "--transports", value])
    assert result.exit_code == 2 and "Invalid value for --transports" in result.output, result.output
    assert message in " ".join(result.output.split()), result.output


def test_transports_apply_to_the_throughput_benchmark_only():
    result = CliRunner().invoke(bench, ["--transports", "tcp,tls"])
    assert result.exit_code == 2 and "--transports" in result.output and "applies to --throughput only" in result.output



def test_the_cold_floor_runs_no_more_tasks_at_once_than_there_are_cores(tmp_path):
    """4 threads on 2 cores fork and run 2 tasks at a time: the floor is 2 / median duration, not 4 / it."""
    from modelops.benchmark.throughput import cold_floor

    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"provenance": {"duration_s": d}}) + "\n" for d in (0.01, 0.02, 0.04)))
    assert cold_floor(results, slots=4, cores=2) == {"slots": 4, "cores": 2, "task_s": 0.02, "floor_tasks_per_s": 100.0}
    assert cold_floor(results, slots=2, cores=8)["floor_tasks_per_s"] == 100.0
