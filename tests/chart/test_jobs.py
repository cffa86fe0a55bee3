"""Studies in the cluster (jobs.enabled): the runner Job template that `mops jobs submit` reads from
the jobs ConfigMap's runner.json is a valid batch/v1 Job for the Kubernetes versions the chart
supports, for both store kinds, before and after the CLI fills in what it owns (name, labels, the
study's ConfigMap, args); its pods are admitted by the release's NetworkPolicies; credentials are
only ever referenced."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from chartlib import CI_DIR, NAMESPACE, RELEASE

pytestmark = pytest.mark.chart

from test_render import KUBE_VERSIONS  # noqa: E402  (the versions every rendered object is checked against)

STORES = {
    "pvc": CI_DIR / "jobs-pvc-values.yaml",
    "s3": CI_DIR / "jobs-s3-values.yaml",
}
FULLNAME = f"{RELEASE}-modelops-dask"


def render(helm, *args: str) -> list[dict]:
    return helm.template(*args)


def runner_json(objects: list[dict]) -> dict:
    [cm] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{FULLNAME}-jobs"]
    return json.loads(cm["data"]["runner.json"])


def one(objects: list[dict], kind: str, name: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def filled_in(job: dict) -> dict:
    """What `mops jobs submit` does to the template: a name, its labels, the study's ConfigMap, args."""
    job = copy.deepcopy(job)
    job["metadata"]["name"] = "sir-20260101-abcd"
    job["metadata"]["namespace"] = NAMESPACE
    job["metadata"]["labels"]["modelops-dask.io/job"] = "sir-20260101-abcd"
    pod = job["spec"]["template"]
    pod["metadata"]["labels"]["modelops-dask.io/job"] = "sir-20260101-abcd"
    pod["spec"]["volumes"].append({"name": "study", "configMap": {"name": "sir-20260101-abcd-study"}})
    container = pod["spec"]["containers"][0]
    container["volumeMounts"].append({"name": "study", "mountPath": "/etc/modelops/study", "readOnly": True})
    container["args"] = ["mops", "run", "/etc/modelops/study/study.json", "--scheduler", "tcp://x:8786"]
    return job


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("store", sorted(STORES))
def test_runner_job_template_validates_as_a_batch_v1_job(helm, store, kube):
    job = runner_json(render(helm, "-f", str(STORES[store]), "--kube-version", f"v{kube}"))["job"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert "name" not in job["metadata"] and "namespace" not in job["metadata"]
    for candidate in (job, filled_in(job)):
        try:
            kubernetes_validate.validate(candidate, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"runner Job ({store} store) invalid for Kubernetes {kube}: {exc.message}")


def test_a_broken_runner_job_is_reported(helm):
    """Guard for the test above: kubernetes-validate does reject a misspelt Job field."""
    job = runner_json(render(helm, "-f", str(STORES["pvc"])))["job"]
    job["spec"]["podFailurePolicy"]["rules"][0]["onExitCode"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(("kube", "present"), [(KUBE_VERSIONS[0], False), ("1.28.9", False), ("1.29.0", True),
                                               (KUBE_VERSIONS[-1], True)])
def test_pod_replacement_policy_where_kubernetes_serves_it(helm, kube, present):
    spec = runner_json(render(helm, "--set", "jobs.enabled=true", "--kube-version", f"v{kube}"))["job"]["spec"]
    assert ("podReplacementPolicy" in spec) is present
    if present:
        assert spec["podReplacementPolicy"] == "Failed"
    fail_job = {"action": "FailJob", "onExitCodes": {"containerName": "runner", "operator": "In", "values": [1, 2]}}
    if not present:
        fail_job["onPodConditions"] = []  # required by the batch/v1 schema of 1.27 and 1.28
    assert spec["podFailurePolicy"]["rules"] == [
        fail_job,
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]


def test_runner_json_shape_for_the_defaults(helm):
    doc = runner_json(render(helm, "--set", "jobs.enabled=true"))
    assert set(doc) == {"version", "release", "namespace", "chart", "scheduler", "store", "resultsService",
                        "groups", "tls", "job"}
    assert doc["tls"] is None  # tls.enabled false (tests/chart/test_tls.py: on)
    assert doc["version"] == 1
    assert (doc["release"], doc["namespace"]) == (RELEASE, NAMESPACE)
    assert doc["chart"].startswith("modelops-dask-")
    assert doc["scheduler"] == f"tcp://{FULLNAME}-scheduler:8786"
    assert doc["store"] == "file:///var/lib/modelops/results"
    assert doc["resultsService"] == {"name": f"{FULLNAME}-results", "port": 8080}
    assert doc["groups"] == {"default": {"executor": "isolated_warm", "coldStart": "fork", "replicas": 2,
                                         "nworkers": 1, "nthreads": 1}}


def test_groups_in_runner_json_are_the_worker_deployments(helm):
    objects = render(helm, "-f", str(CI_DIR / "groups-values.yaml"), "--set", "jobs.enabled=true")
    groups = runner_json(objects)["groups"]
    deployments = {
        d["spec"]["template"]["metadata"]["labels"]["modelops-dask.io/worker-group"]: d
        for d in objects if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }
    assert set(groups) == set(deployments) and len(groups) > 1
    for name, group in groups.items():
        env = {e["name"]: e.get("value") for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert group["executor"] == env["MODELOPS_EXECUTOR_TYPE"]
        assert group["coldStart"] == env["MODELOPS_COLD_START"]
        assert group["replicas"] == deployments[name]["spec"]["replicas"]


@pytest.mark.parametrize("store", sorted(STORES))
def test_runner_pods_are_admitted_by_the_release_network_policies(helm, store):
    """Runners are Dask clients: the scheduler's and the workers' policies admit them by the release's
    own-pods peer, whose selector the runner Job template's pod labels match (Job controller labels and
    the CLI's labels are added to these, never replace them)."""
    objects = render(helm, "-f", str(STORES[store]))
    labels = runner_json(objects)["job"]["spec"]["template"]["metadata"]["labels"]
    for policy in (f"{FULLNAME}-scheduler", f"{FULLNAME}-worker"):
        rule = one(objects, "NetworkPolicy", policy)["spec"]["ingress"][0]
        selectors = [peer["podSelector"]["matchLabels"] for peer in rule["from"]
                     if "podSelector" in peer and "namespaceSelector" not in peer]
        assert any(sel.items() <= labels.items() for sel in selectors), (policy, selectors, labels)
        if policy.endswith("scheduler"):
            assert {"port": "comm", "protocol": "TCP"} in rule["ports"]
        else:
            assert "ports" not in rule  # every worker port


def test_s3_credentials_are_only_referenced(helm):
    objects = render(helm, "-f", str(STORES["s3"]))
    job = runner_json(objects)["job"]
    server = one(objects, "Deployment", f"{FULLNAME}-results")
    for where, container in (("runner", job["spec"]["template"]["spec"]["containers"][0]),
                             ("results server", server["spec"]["template"]["spec"]["containers"][0])):
        env = {e["name"]: e for e in container["env"]}
        for name, key in (("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")):
            assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "results-s3", "key": key}}}, where
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.storage.svc:9000"
        assert env["AWS_REGION"]["value"] == "us-east-1"
        assert "volumeMounts" not in container or "results" not in [m["name"] for m in container["volumeMounts"]]
    assert not [o for o in objects if o["kind"] in {"PersistentVolumeClaim", "Secret"}]


def test_claim_store_runner_writes_and_server_reads(helm):
    objects = render(helm, "-f", str(STORES["pvc"]))
    pod = runner_json(objects)["job"]["spec"]["template"]["spec"]
    server = one(objects, "Deployment", f"{FULLNAME}-results")["spec"]["template"]["spec"]
    claim = one(objects, "PersistentVolumeClaim", f"{FULLNAME}-results")
    for spec in (pod, server):
        assert {"name": "results", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in spec["volumes"]
    [runner_mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "results"]
    [server_mount] = [m for m in server["containers"][0]["volumeMounts"] if m["name"] == "results"]
    assert runner_mount == {"name": "results", "mountPath": "/var/lib/modelops/results"}
    assert server_mount == {"name": "results", "mountPath": "/var/lib/modelops/results", "readOnly": True}
    # ReadWriteOnce: the runner follows the server's pod to the node the volume is attached to.
    term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][-1]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    server_labels = one(objects, "Deployment", f"{FULLNAME}-results")["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= server_labels.items()
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["storageClassName"] == "standard"


def test_submitter_role_grants_the_service_proxy_names_the_api_server_routes(helm):
    """The API server authorizes a service proxy request on the name as written in its URL; a named
    Service port is reached by NAME:PORT or SCHEME:NAME:PORT (a bare NAME reaches unnamed ports only)."""
    objects = render(helm, "-f", str(STORES["pvc"]))
    role = one(objects, "Role", f"{FULLNAME}-submitter")
    service = one(objects, "Service", f"{FULLNAME}-results")
    [port] = service["spec"]["ports"]
    assert port["name"] == "http"
    [proxy] = [r for r in role["rules"] if r["resources"] == ["services/proxy"]]
    assert proxy["resourceNames"] == [f"http:{FULLNAME}-results:{port['port']}", f"{FULLNAME}-results:{port['port']}"]
    assert proxy["verbs"] == ["get"]
    binding = one(objects, "RoleBinding", f"{FULLNAME}-submitter")
    assert binding["subjects"] == [
        {"kind": "Group", "name": "sim-team", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "ServiceAccount", "name": "ci-submitter", "namespace": NAMESPACE},
    ]
    runner_sa = one(objects, "ServiceAccount", f"{FULLNAME}-runner")
    assert runner_sa["automountServiceAccountToken"] is False
    bound = [o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}
             for s in o["subjects"] if s["kind"] == "ServiceAccount" and s["name"] == f"{FULLNAME}-runner"]
    assert not bound, "the runner uses no Kubernetes API: nothing may be bound to its ServiceAccount"
