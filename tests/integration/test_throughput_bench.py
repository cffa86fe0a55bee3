"""`mops bench --throughput STUDY`: runs for real (a local cluster, tiny N); checks what it reports,
never how fast."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelops.cli.bench import bench

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
STUDY = str(REPO / "examples" / "sir" / "study.json")
PATHS = ("plain_dask", "mops_run", "mops_run_chunk_1")
NUMBERS = ("tasks_per_s", "client_cpu_ms_per_task", "client_peak_rss_mib", "scheduler_peak_rss_mib", "ratio_vs_plain")


def test_throughput_reports_plain_dask_and_mops_run_side_by_side(tmp_path):
    out = tmp_path / "t.json"
    result = CliRunner().invoke(bench, ["--throughput", STUDY, "--tasks", "24", "--rounds", "2",
                                        "--executors", "direct", "--json", str(out), "--target-throughput-direct-x", "5"],
                                 catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["tasks"] == 24 and data["rounds"] == 2 and list(data["executors"]) == ["direct"]
    row = data["executors"]["direct"]
    for path in PATHS:
        assert len(row["rounds"][path]) == 2 and all(r["tasks"] == 24 for r in row["rounds"][path])
        for key in NUMBERS:
            value = row[path][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (path, key, value)
    assert row["plain_dask"]["ratio_vs_plain"] == 1.0
    profile = row["profile"]
    assert profile["tasks"] == 24 and len(profile["top_tottime"]) == 15
    assert not any("acquire" in r["function"] or "epoll" in r["function"] for r in profile["top_tottime"])
    for label in ("plain Dask client.map", "mops run", "mops run --chunk-size 1", "where the client's time goes"):
        assert label in result.output
    # the targets (benchmark/targets.py, overridable by --target-* options), each PASS or FAIL
    assert [t["target"] for t in data["targets"]] == [
        "direct: mops run >= 5x plain Dask tasks/s", "direct, 200 ms tasks: mops run >= 0.97x plain Dask tasks/s"]
    assert data["long_tasks"]["tasks"] == 40 and data["long_tasks"]["plain_dask"]["ratio_vs_plain"] == 1.0
    for t in data["targets"]:
        assert f"target {t['target']}: measured {t['value']}x -> {'PASS' if t['met'] else 'FAIL'}" in result.output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI makes the TLS cluster's certificates")
def test_throughput_compares_tls_with_plain_tcp_on_real_clusters(tmp_path):
    """Both transports side by side; the addresses the client and workers really use say TLS was in use."""
    out = tmp_path / "t.json"
    result = CliRunner().invoke(bench, ["--throughput", STUDY, "--tasks", "12", "--rounds", "1", "--executors",
                                        "direct", "--transports", "tls,tcp", "--json", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["transports"] == ["tcp", "tls"]
    row = data["executors"]["direct"]
    assert row["transport"] == "tcp" and row["tls"]["transport"] == "tls"
    assert row["scheduler_address"].startswith("tcp://")
    assert row["tls"]["scheduler_address"].startswith("tls://")
    assert len(row["tls"]["worker_addresses"]) == 2
    assert all(a.startswith("tls://") for a in row["tls"]["worker_addresses"]), row["tls"]["worker_addresses"]
    for path in PATHS:
        for side in (row, row["tls"]):
            assert [r["tasks"] for r in side["rounds"][path]] == [12]
            assert side[path]["tasks_per_s"] > 0
        cost = row["tls_vs_tcp"][path]
        assert cost["tcp_tasks_per_s"] > 0 and cost["tls_tasks_per_s"] > 0 and cost["ratio"] > 0
        assert math.isfinite(cost["added_us_per_task"]) and math.isfinite(cost["added_client_cpu_us_per_task"])
        assert cost["tls_tasks_per_s"] == row["tls"][path]["tasks_per_s"]
    assert "tls against tcp" in result.output and row["tls"]["scheduler_address"] in result.output


@pytest.mark.parametrize("args, message", [
    (["--executors", "cold-spawn"], "unknown ['cold-spawn']; allowed: direct, isolated_warm, cold-fork"),
    (["--mode", "realistic"], "does not apply to the study throughput benchmark"),
])
def test_throughput_rejects_what_it_cannot_measure(args, message):
    result = CliRunner().invoke(bench, ["--throughput", STUDY, *args])
    assert result.exit_code != 0 and message in result.output, result.output
