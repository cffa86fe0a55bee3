"""The settings registry, the chart's reserved-variable list and the README's table agree."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from modelops import settings
from modelops.worker.config import RuntimeConfig, WORKER_SETTINGS
from tests.helpers import REPO

TEMPLATES = REPO / "charts" / "modelops-dask" / "templates"


def chart_reserved_variables() -> set[str]:
    """The MODELOPS_* names of the chart's one-line `list "MODELOPS_..."` literal (the variables
    the chart sets itself and refuses in users' extraEnv), wherever the chart keeps it."""
    found = [
        line for path in sorted(TEMPLATES.glob("*")) if path.is_file()
        for line in path.read_text().splitlines() if 'list "MODELOPS_' in line
    ]
    assert len(found) == 1, f"expected one reserved-variable list in {TEMPLATES}, found {found}"
    return {name for name in re.findall(r'"([A-Z0-9_]+)"', found[0]) if name.startswith(settings.PREFIX)}


def test_runtime_config_is_built_from_the_registry():
    fields = RuntimeConfig.model_fields
    assert list(fields) == [s.field for s in WORKER_SETTINGS]
    for s in WORKER_SETTINGS:
        assert fields[s.field].default == s.default, s.variable


def test_the_chart_reserves_exactly_the_worker_settings():
    worker_names = {name for s in WORKER_SETTINGS for name in s.names}
    reserved = chart_reserved_variables()
    assert reserved == worker_names, (
        f"only in the chart: {sorted(reserved - worker_names)}; only in modelops.settings: "
        f"{sorted(worker_names - reserved)}"
    )


def test_the_readme_table_is_generated_from_the_registry():
    proc = subprocess.run(
        [sys.executable, "-m", "modelops.settings", "--check", str(REPO / "README.md")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for s in settings.SETTINGS:
        assert f"`{s.variable}`" in settings.markdown_table()


def test_check_fails_on_a_stale_table(tmp_path):
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_text()
    readme.write_text(text.replace("`MODELOPS_COLD_START` | `fork`, `spawn`", "`MODELOPS_COLD_START` | `fork`"))
    assert settings.main(["--check", str(readme)]) == 1
    assert settings.main(["--write", str(readme)]) == 0
    assert readme.read_text() == text


@pytest.mark.parametrize("s", settings.SETTINGS, ids=lambda s: s.variable)
def test_every_default_is_what_its_parser_reads_and_bad_input_names_the_variable(s):
    assert s.read({}) == s.default
    errors = []
    for bad in (" ", "not valid!"):
        try:
            s.read({s.variable: bad})
        except settings.ConfigError as exc:
            errors.append(str(exc))
    assert errors and all(e.startswith(f"{s.variable}=") and "allowed" in e for e in errors)
