"""The chart README's parameters table is generated from values.yaml by the pinned helm-docs
(scripts/helm-docs.sh); `--check` (run by `make chart-lint`) fails, naming the README, when a value
or its `# --` comment changed without regenerating it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from chartlib import CHART, REPO

SCRIPT = REPO / "scripts" / "helm-docs.sh"
pytestmark = pytest.mark.chart


def check(chart) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HELM_DOCS_CHART": str(chart)})


def test_committed_table_is_current():
    proc = check(CHART)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| worker.executor.type | string | `\"isolated_warm\"` |" in (CHART / "README.md").read_text()


def test_a_changed_value_makes_the_table_stale(tmp_path):
    chart = tmp_path / "modelops-dask"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    text = values.read_text()
    assert "  nworkers: 1\n" in text
    values.write_text(text.replace("  nworkers: 1\n", "  nworkers: 3\n", 1))
    proc = check(chart)
    assert proc.returncode == 1
    assert "README.md is stale" in proc.stderr and "+| worker.nworkers | int | `3` |" in proc.stderr, proc.stderr[-3000:]
