"""helm lint --strict with Helm 3 and Helm 4, for the defaults and every chart-testing scenario."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chartlib import CHART, REPO, file_id, lint_args, load_values, values_files

pytestmark = pytest.mark.chart


def test_lint_strict_defaults(helm):
    proc = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", values_files(), ids=file_id)
def test_lint_strict_every_values_file(helm, values):
    proc = helm.run("lint", "--strict", str(CHART), "-f", str(values), *lint_args(load_values(values)))
    assert "0 chart(s) failed" in proc.stdout


def test_lint_fails_on_a_broken_values_file(helm, tmp_path):
    """The lint run above can fail: a values file with a misspelt key makes it exit non-zero."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  replica: 3\n")
    proc = helm.run("lint", "--strict", str(CHART), "-f", str(bad), check=False)
    assert proc.returncode != 0
    assert "replica" in proc.stdout + proc.stderr


def test_values_schema_is_generated_from_tools_values_schema_py():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "values_schema.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_yamllint_values_files_and_unittest_suites():
    """ct lints the chart's own values.yaml; this covers Chart.yaml (before ct lint does), values/, ci/ and the suites."""
    targets = [CHART / "Chart.yaml", REPO / "values", CHART / "ci", CHART / "tests", REPO / "ct.yaml", REPO / "chart_schema.yaml"]
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(REPO / "lintconf.yaml"), "-f", "parsable",
         *[str(t) for t in targets]],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
