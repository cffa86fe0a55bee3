"""values.schema.json stops bad values before anything is applied, with an error naming them."""

from __future__ import annotations

import pytest

from chartlib import CHART

pytestmark = pytest.mark.chart


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "worker.executor.type=frozen"], "executor"),
        (["--set", "worker.groups.cold.executor.type=Cold"], "executor"),
        (["--set", "worker.exector.type=cold"], "exector"),
        (["--set", "worker.executor.coldstart=spawn"], "coldstart"),
        (["--set", "worker.groups.cold.replica=1"], "replica"),
        (["--set", "schedular.ports.comm=1"], "schedular"),
    ],
    ids=["bad-executor", "bad-group-executor", "misspelt-worker-key", "misspelt-executor-key",
         "misspelt-group-key", "misspelt-root-key"],
)
def test_schema_rejects_with_an_error_naming_the_problem(helm, args, named):
    proc = helm.run("template", "rel", str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr
    assert named in proc.stderr


def test_bad_executor_error_lists_the_allowed_values(helm):
    proc = helm.run("template", "rel", str(CHART), "--set", "worker.executor.type=frozen", check=False)
    assert proc.returncode != 0
    for allowed in ("direct", "isolated_warm", "cold"):
        assert allowed in proc.stderr


def test_bad_values_file_is_rejected(helm, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  executor:\n    type: warm\n")
    proc = helm.run("template", "rel", str(CHART), "-f", str(bad), check=False)
    assert proc.returncode != 0
    assert "executor" in proc.stderr


def test_valid_values_render(helm):
    proc = helm.run("template", "rel", str(CHART), "--set", "worker.executor.type=cold")
    assert "MODELOPS_EXECUTOR_TYPE" in proc.stdout


def test_null_in_a_group_clears_an_inherited_map_under_both_helms(helm, tmp_path):
    """A values file's `null` reaches the schema and the templates (Helm keeps it for keys the chart's
    defaults do not have): the schema admits it for maps, and the group renders without the map."""
    values = tmp_path / "null.yaml"
    values.write_text("worker:\n  nodeSelector: {pool: main}\n  bundles:\n    volume: {configMap: {name: b}}\n"
                      "  groups:\n    spot:\n      nodeSelector: null\n      bundles: {volume: null}\n")
    docs = helm.template("-f", str(values), "--show-only", "templates/worker-deployment.yaml")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs}
    assert pods["rel-modelops-dask-worker"]["nodeSelector"] == {"pool": "main"}
    assert "nodeSelector" not in pods["rel-modelops-dask-worker-spot"]
    assert "bundles" not in [v["name"] for v in pods["rel-modelops-dask-worker-spot"]["volumes"]]


def test_a_group_cannot_set_a_non_map_to_null(helm, tmp_path):
    values = tmp_path / "null.yaml"
    values.write_text("worker:\n  groups:\n    spot:\n      executor: null\n")
    proc = helm.run("template", "rel", str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0 and "executor" in proc.stderr, proc.stderr
