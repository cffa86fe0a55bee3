"""The chart's lists of settings come from the one registry (src/modelops/settings.py): the schema's
enums, the generated `_helpers-settings.tpl`, the variables the chart sets in every worker (and so
refuses in a group's env), and the refusal of a MODELOPS_* name that nothing reads."""

from __future__ import annotations

import json
import re

import pytest
from chartlib import CHART, Helm, env_of, workers

from modelops import settings
from modelops.settings import SETTINGS

WORKER = [s for s in SETTINGS if s.reader == "worker"]


def generated_lists() -> dict[str, list[str]]:
    text = (CHART / "templates" / "_helpers-settings.tpl").read_text()
    return {m[0]: json.loads(m[1]) for m in re.findall(r'define "modelops-dask\.settings\.(\w+)" -}}(\[.*?\]){{', text)}


def test_the_generated_lists_and_the_schemas_enums_are_the_registrys():
    lists = generated_lists()
    assert lists == {
        "variables": list(settings.KNOWN_VARS),
        "workerVariables": [name for s in WORKER for name in s.names],
        "executorTypes": [e.value for e in settings.ExecutorType],
    }
    schema = json.loads((CHART / "values.schema.json").read_text())
    executor, bundles = schema["definitions"]["executor"]["properties"], schema["definitions"]["bundles"]["properties"]
    assert executor["type"]["enum"] == [e.value for e in settings.ExecutorType]
    assert executor["coldStart"]["enum"] == [e.value for e in settings.ColdStart]
    assert executor["coldImportRng"]["enum"] == [e.value for e in settings.ImportRng]
    assert bundles["source"]["enum"] == [e.value for e in settings.BundleSource]
    assert bundles["oci"]["properties"]["plainHttp"]["enum"][:3] == [e.value for e in settings.PlainHttp]


def test_every_worker_setting_is_set_by_the_chart_and_refused_in_a_groups_env(helm4: Helm):
    [worker] = workers(helm4.template())
    container = next(c for c in worker["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")
    set_by_chart = {n for n in env_of(container) if n.startswith(settings.PREFIX)}
    assert set_by_chart == {s.variable for s in WORKER}
    for name in (n for s in WORKER for n in s.names):
        proc = helm4.run("template", "rel", str(CHART), "--set", f"worker.env[0].name={name}",
                         "--set", "worker.env[0].value=x", check=False)
        assert proc.returncode != 0 and f"worker.env: {name} is set by the chart" in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize(("typo", "meant", "where"), [
    ("MODELOPS_COLD_STRAT", "MODELOPS_COLD_START", "worker.groups.cold.env"),
    ("MODELOPS_EXECUTER_TYPE", "MODELOPS_EXECUTOR_TYPE", "worker.env"),
    ("MODELOPS_LOGLEVEL", "MODELOPS_LOG_LEVEL", "scheduler.env"),
])
def test_a_misspelt_setting_is_refused_naming_the_closest_one(helm4: Helm, typo, meant, where):
    proc = helm4.run("template", "rel", str(CHART), "--set", f"{where}[0].name={typo}",
                     "--set", f"{where}[0].value=spawn", "--set", "worker.groups.cold.replicas=1", check=False)
    assert proc.returncode != 0
    assert f"{where}: {typo} is not a modelops setting (did you mean {meant}?)" in proc.stderr, proc.stderr
