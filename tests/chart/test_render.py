"""Every values file renders with Helm 3 and Helm 4, every object validates against the Kubernetes
schemas of the chart's minimum and of a current Kubernetes version, and every worker pod carries
the executor its values ask for."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from chartlib import CHART, env_of, file_id, load_values, values_files, workers

pytestmark = pytest.mark.chart

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
MIN_KUBE = CHART_META["kubeVersion"].removeprefix(">=").removesuffix("-0")  # ">=1.27.0-0" -> "1.27.0"
KUBE_VERSIONS = [MIN_KUBE, kubernetes_validate.latest_version()]
# Custom resources have no schema in kubernetes-validate; only these may appear.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor"),
                ("keda.sh/v1alpha1", "ScaledObject")}
SERVICEMONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


def test_minimum_kube_version_is_older_than_current():
    assert MIN_KUBE == "1.27.0"
    assert tuple(map(int, KUBE_VERSIONS[1].split("."))) > (1, 27, 0)


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", values_files(), ids=file_id)
def test_every_object_validates_against_kubernetes_schemas(helm, values, kube):
    objects = helm.template(
        "-f", str(values), "--kube-version", f"v{kube}", "--api-versions", SERVICEMONITOR_API
    )
    assert objects, "nothing rendered"
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {kube}: {exc.message}")
        checked += 1
    assert checked >= 3  # the Service, the scheduler and at least one worker Deployment


def test_validation_can_fail(helm):
    """Guard for the test above: a broken object really is reported by kubernetes-validate."""
    obj = workers(helm.template())[0]
    obj["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)


def expected_executors(values: dict) -> dict[str, str]:
    """Group name -> executor type the values ask for (groups inherit worker.executor.type)."""
    worker = values.get("worker") or {}
    default = (worker.get("executor") or {}).get("type", "isolated_warm")
    out = {"default": default}
    for name, group in (worker.get("groups") or {}).items():
        out[name] = ((group or {}).get("executor") or {}).get("type", default)
    return out


@pytest.mark.parametrize("values", values_files(), ids=file_id)
def test_every_worker_pod_has_the_executor_env_from_its_values(helm, values):
    expected = expected_executors(load_values(values))
    found: dict[str, str] = {}
    for deployment in workers(helm.template("-f", str(values))):
        pod = deployment["spec"]["template"]
        group = pod["metadata"]["labels"]["modelops-dask.io/worker-group"]
        env = env_of(pod["spec"]["containers"][0])
        assert "MODELOPS_EXECUTOR_TYPE" in env, f"{deployment['metadata']['name']} has no MODELOPS_EXECUTOR_TYPE"
        assert env["MODELOPS_WORKER_GROUP"] == group
        found[group] = env["MODELOPS_EXECUTOR_TYPE"]
    assert found == expected


def standing_replicas(deployment: dict, objects: list[dict]) -> int:
    """A worker Deployment's replicas, or its ScaledObject's minReplicaCount when KEDA owns them."""
    if "replicas" in deployment["spec"]:
        return deployment["spec"]["replicas"]
    (scaled,) = [o for o in objects if o["kind"] == "ScaledObject"
                 and o["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
    return scaled["spec"]["minReplicaCount"]


@pytest.mark.parametrize("values", values_files(), ids=file_id)
def test_helm_test_pods_expect_the_same_executor_as_the_workers(helm, values):
    objects = helm.template("-f", str(values))
    if (load_values(values).get("tests") or {}).get("enabled", True) is False:
        assert not [o for o in objects if o["kind"] == "Pod"]
        return
    by_group = {
        d["spec"]["template"]["metadata"]["labels"]["modelops-dask.io/worker-group"]: env_of(
            d["spec"]["template"]["spec"]["containers"][0]
        )["MODELOPS_EXECUTOR_TYPE"]
        for d in workers(objects)
        if standing_replicas(d, objects) > 0  # a group scaled to zero (or autoscaled from zero) has nothing to test
    }
    tests = [o for o in objects if o["kind"] == "Pod" and o["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    seen = {}
    for pod in tests:
        args = pod["spec"]["containers"][0]["args"]
        assert args[:2] == ["mops", "doctor"]
        seen[args[args.index("--group") + 1]] = args[args.index("--expect-executor") + 1]
    assert seen == by_group
    assert seen, "no helm test pod rendered"


def test_values_files_cover_every_executor(helm):
    """values/cold.yaml and values/warm.yaml select what their names say."""
    from chartlib import VALUES_DIR

    assert expected_executors(load_values(VALUES_DIR / "cold.yaml"))["default"] == "cold"
    assert expected_executors(load_values(VALUES_DIR / "warm.yaml"))["default"] == "isolated_warm"
    production = expected_executors(load_values(VALUES_DIR / "production.yaml"))
    assert set(production.values()) == {"isolated_warm", "cold"}


def test_local_overlays_change_sizes_never_the_executor(helm):
    """values/local.yaml (and local-production.yaml) scale a file down to one small node: every worker
    group keeps exactly the MODELOPS_* environment the file alone gives it."""
    from chartlib import VALUES_DIR

    def modelops_env(*files):
        args = [a for f in files for a in ("-f", str(VALUES_DIR / f))]
        out = {}
        for deployment in workers(helm.template(*args)):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", []) if e["name"].startswith("MODELOPS_")}
            out[deployment["metadata"]["name"]] = (env, deployment["spec"].get("replicas"))
        return out

    for main, overlays in {"cold.yaml": ["local.yaml"], "warm.yaml": ["local.yaml"],
                           "production.yaml": ["local.yaml", "local-production.yaml"]}.items():
        alone, scaled = modelops_env(main), modelops_env(main, *overlays)
        assert set(alone) == set(scaled), main
        for name in alone:
            assert alone[name][0] == scaled[name][0], f"{main} + {overlays} changed the env of {name}"
            assert scaled[name][1] == 1, f"{name} is not scaled to one replica"


def test_servicemonitor_only_with_its_crd(helm):
    from chartlib import VALUES_DIR

    production = str(VALUES_DIR / "production.yaml")
    without = helm.template("-f", production)
    with_crd = helm.template("-f", production, "--api-versions", SERVICEMONITOR_API)
    assert "ServiceMonitor" not in {o["kind"] for o in without}
    assert "ServiceMonitor" in {o["kind"] for o in with_crd}


def test_test_pods_are_removed_when_they_pass_where_helm_can_still_show_their_logs(helm):
    """Helm 4 prints a test pod's logs before hook-succeeded removes it (so `helm uninstall` leaves no
    test pod behind); Helm 3 would fail `helm test --logs` on a removed pod, so there it stays."""
    pods = [o for o in helm.template() if o["kind"] == "Pod" and o["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    assert pods
    policies = {p["metadata"]["annotations"]["helm.sh/hook-delete-policy"] for p in pods}
    want = "before-hook-creation,hook-succeeded" if helm.name == "helm" else "before-hook-creation"
    assert policies == {want}
