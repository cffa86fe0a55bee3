"""Per-group flexibility on a real cluster: a worker group with an init container, an extra volume
and mount, a sidecar and a postStart hook beside the drain's preStop, and `null` clearing the
nodeSelector it inherits (a selector no node has, which would leave it Pending), all from the
release's own image. The group's pod runs both containers and its worker sees what the init
container wrote."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def release(releases, target, tmp_path_factory):
    rel = releases.new("helm4")
    group = {
        "replicas": 1,
        "nodeSelector": None,
        "extraVolumes": [{"name": "shared", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        "initContainers": [{
            "name": "prepare", "image": target.image,
            "command": ["sh", "-c", "echo prepared-by-init > /shared/init.txt"],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        }],
        "extraContainers": [{
            "name": "sidecar", "image": target.image,
            "command": ["sh", "-c", "while true; do sleep 3600; done"],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        }],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hook > /tmp/post-start.txt"]}}},
    }
    values = {"worker": {"nodeSelector": {"modelops-test/no-such-node": "true"}, "replicas": 0,
                         "groups": {"extras": group}}}
    path = tmp_path_factory.mktemp("values") / "extras.json"
    path.write_text(json.dumps(values))
    rel.helm("install", rel.name, *rel.chart_args(["local.yaml"]), "-f", str(path), "--create-namespace",
             "--wait", "--timeout", "5m")
    yield rel
    rel.uninstall()


def test_group_with_init_container_volume_sidecar_and_hooks_runs(release):
    [pod] = release.pods("app.kubernetes.io/component=worker,modelops-dask.io/worker-group=extras")
    spec, status = pod["spec"], pod["status"]
    assert "nodeSelector" not in spec, spec.get("nodeSelector")
    assert [c["name"] for c in spec["containers"]] == ["worker", "sidecar"]
    assert all(c["ready"] for c in status["containerStatuses"]), status["containerStatuses"]
    assert spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][:2] == ["mops", "drain"]
    name = pod["metadata"]["name"]
    seen = release.kubectl("exec", name, "-c", "worker", "--", "cat", "/shared/init.txt", "/tmp/post-start.txt")
    assert seen.split() == ["prepared-by-init", "hook"], seen
