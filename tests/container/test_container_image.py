"""The built image itself: user, entrypoint, labels, contents, read-only root filesystem."""

from __future__ import annotations

import json
import re

import pytest
from container_support import REPO, docker, project_version

pytestmark = pytest.mark.container


def run(image: str, *args: str, entrypoint: str | None = None) -> tuple[int, str]:
    opts = ["--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"]
    if entrypoint:
        opts += ["--entrypoint", entrypoint]
    proc = docker("run", *opts, image, *args, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_config_user_entrypoint_and_labels(image):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["modelops-entrypoint"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.source"].startswith("https://")
    revision = labels["org.opencontainers.image.revision"]
    assert revision != "unknown" and len(revision.split("-")[0]) == 40
    assert "PATH=/opt/venv/bin:" in " ".join(config["Env"])


def test_dev_tag_is_the_same_image(image):
    ids = {docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
           for ref in (image, "modelops-dask:dev")}
    assert len(ids) == 1


def test_runtime_has_no_compilers_and_no_pip(image):
    code, out = run(image, "-c", "for c in gcc cc c++ g++ clang make pip pip3; do command -v $c; done; true",
                    entrypoint="sh")
    assert code == 0
    assert out.strip() == "", f"found in the runtime image: {out}"


def test_contents(image):
    script = (
        "import json, sys, modelops, distributed, pathlib;"
        "b = pathlib.Path('/opt/modelops/bundles/sir/bundle.json');"
        "print(json.dumps({'py': sys.version_info[:2], 'exe': sys.executable,"
        " 'modelops': modelops.__version__, 'distributed': distributed.__version__,"
        " 'bundle': json.loads(b.read_text())['name']}))"
    )
    code, out = run(image, "python", "-c", script)
    assert code == 0, out
    info = json.loads(out.strip().splitlines()[-1])
    assert info["py"] == [3, 11]
    assert info["exe"] == "/opt/venv/bin/python"
    assert info["modelops"] == project_version()
    assert info["distributed"] == "2026.8.0"
    assert info["bundle"] == "sir"
    code, out = run(image, "sh", "-c", "command -v tini")
    assert code == 0 and out.strip().endswith("/tini")


def test_installs_exactly_the_committed_lock(image):
    """Every package in the image is the lock's version (and nothing else is), and the image carries
    the committed lock with its hashes: an image built from a stale lock or context fails here."""
    script = (
        "import json, importlib.metadata as m;"
        "print(json.dumps(sorted([d.metadata['Name'], d.version] for d in m.distributions())))"
    )
    code, out = run(image, "python", "-c", script)
    assert code == 0, out
    installed = {_canonical(name): version for name, version in json.loads(out.strip().splitlines()[-1])}
    assert installed.pop("modelops-dask") == project_version()
    lock_text = (REPO / "images" / "worker" / "requirements.lock").read_text()
    locked = {_canonical(m["name"]): m["version"]
              for m in re.finditer(r"(?m)^(?P<name>[A-Za-z0-9][\w.-]*)==(?P<version>\S+) \\$", lock_text)}
    assert len(locked) > 10
    assert installed == locked
    code, out = run(image, "cat", "/opt/modelops/requirements.lock")
    assert code == 0 and out == lock_text


def test_image_can_pull_oci_bundles(image):
    """The worker extra brings the ORAS SDK, so the OCI bundle cache runs in the image."""
    code, out = run(image, "python", "-c",
                    "import oras.provider, modelops.bundles.oci_source as s; print(s.SOURCE)")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "oci"


def test_bundle_artifacts_unpack_with_the_images_python(image):
    """The image's Python may predate tarfile's extraction filters: a pull's unpack must still work."""
    code, out = run(image, "python", "-c", (
        "from pathlib import Path; from modelops.bundles import artifact; from modelops.bundles.digest import "
        "content_digest as d; src = Path('/opt/modelops/bundles/sir'); a = artifact.build(src); "
        "artifact.unpack(a.layer_bytes, Path('/tmp/x')); print(d(Path('/tmp/x')) == a.config['content_digest'])"))
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "True"


def test_a_bundle_environment_builds_and_runs_in_the_image_offline(image, tmp_path):
    """uv in the image builds a bundle's environment from its wheels under a read-only root with no
    network, and a cold-fork child runs in it, seeing the lock's version of its package."""
    from tests.helpers import make_env_bundle

    make_env_bundle(tmp_path / "bundles", "probe", "modelops-probe-pkg", "7.0")
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's non-root user
    script = (
        "import json; from modelops.worker.config import RuntimeConfig; from modelops.worker.runtime import "
        "WorkerRuntime; from modelops.tasks import Task\n"
        "rt = WorkerRuntime(RuntimeConfig.from_env({'MODELOPS_BUNDLES_DIR': '/bundles', 'MODELOPS_EXECUTOR_TYPE': "
        "'cold', 'MODELOPS_BUNDLE_CACHE_DIR': '/tmp/cache'}), 'w', 1)\n"
        "b = rt.resolver.resolve('probe')\n"
        "r = rt.execute(Task(bundle='probe', bundle_digest=b.digest, entrypoint=b.entrypoint, params={}, seed=1))\n"
        "rt.close()\n"
        "print(json.dumps({'ok': r.ok, 'error': r.error and r.error.message, 'outputs': r.outputs, "
        "'environment': r.provenance.environment}))"
    )
    proc = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp:exec",
                  "-v", f"{tmp_path / 'bundles'}:/bundles:ro", image, "python", "-c", script, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"], result["error"]
    assert result["outputs"]["version"] == "7.0"
    assert result["outputs"]["prefix"].startswith("/tmp/cache/environments/")
    assert result["environment"]["built"] and result["environment"]["installed_from"] == "wheels"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_config_check_passes_read_only_with_defaults(image):
    code, out = run(image, "mops", "config", "check")
    assert code == 0, out
    assert '"executor"' in out


def test_root_filesystem_really_is_read_only_and_tmp_writable(image):
    code, out = run(image, "sh", "-c", "touch /tmp/ok && ! touch /opt/venv/x 2>/dev/null && ! touch /x 2>/dev/null")
    assert code == 0, out


def test_invalid_executor_stops_before_dask(image):
    proc = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                  "-e", "MODELOPS_EXECUTOR_TYPE=clod", image, "worker", "tcp://127.0.0.1:9", check=False,
                  timeout=60)
    assert proc.returncode == 2
    assert "MODELOPS_EXECUTOR_TYPE='clod'" in proc.stderr
    assert "distributed." not in proc.stderr


def test_invalid_executor_stops_dask_even_without_the_entrypoint(image):
    """A user who bypasses the entrypoint still gets no worker: the preload refuses at import, and
    `dask worker` exits before it ever contacts a scheduler."""
    proc = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "dask",
                  "-e", "MODELOPS_EXECUTOR_TYPE=clod", image, "worker", "tcp://127.0.0.1:9",
                  "--preload", "modelops.worker.preload", "--no-dashboard", check=False, timeout=90)
    assert proc.returncode != 0
    logs = proc.stdout + proc.stderr
    assert "MODELOPS_EXECUTOR_TYPE" in logs and "clod" in logs
    assert "Executor:" not in logs
