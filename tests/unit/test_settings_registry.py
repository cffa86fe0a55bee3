"""The settings registry, the chart's reserved-variable list and the README's table agree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from modelops import settings
from modelops.worker.config import RuntimeConfig, WORKER_SETTINGS
from tests.helpers import REPO

def test_runtime_config_is_built_from_the_registry():
    fields = RuntimeConfig.model_fields
    assert list(fields) == [s.field for s in WORKER_SETTINGS]
    for s in WORKER_SETTINGS:
        assert fields[s.field].default == s.default, s.variable


def literal_setting_names(root) -> list[str]:
    """`path:line NAME` for each string constant that is exactly a setting's name, outside the registry."""
    names = set(settings.KNOWN_VARS)
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "modelops":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value}")
    return found


def test_no_setting_name_is_written_as_a_literal_outside_the_registry(tmp_path):
    """Other modules take a setting's name from modelops.settings (its *_VARIABLE constants, `setting()`),
    so a renamed setting cannot leave a stale copy behind; names inside messages are prose, not copies."""
    assert literal_setting_names(REPO / "src" / "modelops") == []
    planted = tmp_path / "planted.py"
    planted.write_text('env = {"MODELOPS_COLD_START": "fork"}\n')
    assert literal_setting_names(tmp_path) == ["planted.py:1 MODELOPS_COLD_START"]  # the check sees a planted one


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
