"""What `helm upgrade` depends on: executor changes roll the pods, selectors never change."""

from __future__ import annotations

import shutil

import pytest
import yaml

from chartlib import CHART, env_of, values_files, workers

pytestmark = pytest.mark.chart


def by_name(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("executor", ["direct", "cold"])
def test_changing_the_executor_changes_the_worker_pod_template(helm, executor):
    before = workers(helm.template())[0]
    after = workers(helm.template("--set", f"worker.executor.type={executor}"))[0]
    assert before["metadata"]["name"] == after["metadata"]["name"]
    assert before["spec"]["template"] != after["spec"]["template"]
    assert env_of(after["spec"]["template"]["spec"]["containers"][0])["MODELOPS_EXECUTOR_TYPE"] == executor
    # ... and only what the executor decides: the selector stays.
    assert before["spec"]["selector"] == after["spec"]["selector"]


@pytest.mark.parametrize(
    "setting",
    [
        "worker.executor.coldStart=spawn",
        "worker.executor.taskTimeoutSeconds=30",
        "worker.executor.warmMaxTasksPerProcess=5",
        "worker.bundles.source=image",
        "worker.bundles.dir=/bundles",
    ],
)
def test_every_executor_setting_is_in_the_pod_template(helm, setting):
    before = workers(helm.template())[0]["spec"]["template"]
    after = workers(helm.template("--set", setting))[0]["spec"]["template"]
    assert before != after


def test_changing_one_groups_executor_rolls_only_that_group(helm):
    base = ["--set", "worker.groups.cold.executor.type=cold", "--set", "worker.groups.warm.replicas=1"]
    before = by_name(helm.template(*base), "Deployment")
    after = by_name(helm.template(*base, "--set", "worker.groups.warm.executor.type=direct"), "Deployment")
    assert before.keys() == after.keys()
    changed = {n for n in before if before[n]["spec"]["template"] != after[n]["spec"]["template"]}
    assert changed == {"rel-modelops-dask-worker-warm"}


def test_selectors_identical_across_values_files(helm):
    """Every Deployment/Service/PDB that exists in two renders has the same selector in both."""
    renders = [helm.template()] + [helm.template("-f", str(v)) for v in values_files()]
    renders.append(helm.template("--set", "worker.podLabels.team=x", "--set", "image.tag=9.9.9"))
    selectors: dict[tuple[str, str], dict] = {}
    compared = 0
    for objects in renders:
        for obj in objects:
            if obj["kind"] in {"Deployment", "PodDisruptionBudget"}:
                sel = obj["spec"]["selector"]
            elif obj["kind"] == "Service":
                sel = obj["spec"]["selector"]
            else:
                continue
            key = (obj["kind"], obj["metadata"]["name"])
            if key in selectors:
                assert selectors[key] == sel, f"{key} selector changed"
                compared += 1
            selectors[key] = sel
    assert compared > 10


def test_selectors_survive_a_chart_and_app_version_bump(helm, tmp_path):
    bumped = tmp_path / "modelops-dask"
    shutil.copytree(CHART, bumped)
    meta = yaml.safe_load((bumped / "Chart.yaml").read_text())
    meta["version"], meta["appVersion"] = "9.9.9", "9.9.9"
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
    groups = ["--set", "worker.groups.cold.executor.type=cold"]
    old = by_name(helm.template(*groups), "Deployment")
    new = by_name(helm.template(*groups, chart=bumped), "Deployment")
    assert old.keys() == new.keys()
    for name in old:
        assert old[name]["spec"]["selector"] == new[name]["spec"]["selector"]
        assert old[name]["metadata"]["labels"] != new[name]["metadata"]["labels"]  # version labels did move


def test_worker_groups_have_disjoint_selectors(helm):
    objects = helm.template(
        "--set", "worker.groups.cold.executor.type=cold", "--set", "worker.groups.warm.replicas=1"
    )
    deployments = workers(objects)
    assert len(deployments) == 3
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for d in deployments:
        selector = d["spec"]["selector"]["matchLabels"]
        matching = [labels for labels in pods if selector.items() <= labels.items()]
        assert len(matching) == 1, f"{d['metadata']['name']} selects pods of other groups"
