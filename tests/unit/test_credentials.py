"""Credentials in MODELOPS_PACKAGE_INDEX_URL (https://user:secret@host/simple) reach the package index and
nothing else: not the worker's logs, describe_worker, `mops config check`, error messages, results or
provenance. They are shown masked (https://user:***@host/...) by one function, settings.mask_credentials."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import LoopbackServer, clean_env, make_env_bundle, make_wheel, run_task

from modelops.settings import ConfigError
from modelops.worker.config import RuntimeConfig

SECRET = "s3cr3t-T0ken"


@pytest.mark.parametrize("text, masked", [
    (f"https://user:{SECRET}@pypi.example/simple", "https://user:***@pypi.example/simple"),
    (f"see https://user:{SECRET}@a.example/x and http://{SECRET}@b.example/y",
     "see https://user:***@a.example/x and http://***@b.example/y"),
    (f"https://user:p@ss{SECRET}@host/simple", "https://user:***@host/simple"),  # an unescaped @ in it
    ("https://pypi.example/simple", "https://pypi.example/simple"),
    ("user@example.com wrote", "user@example.com wrote"),
])
def test_mask_credentials(text, masked):
    from modelops.settings import mask_credentials

    assert mask_credentials(text) == masked


def test_describe_worker_and_config_check_mask_the_index_credentials(make_runtime):
    url = f"https://modelops:{SECRET}@pypi.example/simple"
    runtime = make_runtime(MODELOPS_PACKAGE_INDEX_URL=url)
    described = json.dumps(runtime.describe())
    assert SECRET not in described
    assert "https://modelops:***@pypi.example/simple" in described
    assert runtime.config.package_index_url == url  # the worker itself still has the real one
    env = {**clean_env(), "MODELOPS_BUNDLE_SOURCE": "image", "MODELOPS_PACKAGE_INDEX_URL": url}
    checked = subprocess.run([sys.executable, "-m", "modelops.cli.main", "config", "check"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert SECRET not in checked.stdout + checked.stderr
    assert "https://modelops:***@pypi.example/simple" in checked.stdout


def test_a_bad_index_url_is_refused_without_its_credentials(caplog):
    bad = f"https://modelops:{SECRET}@pypi.example/simple index"
    with pytest.raises(ConfigError) as err:
        RuntimeConfig.from_env({"MODELOPS_PACKAGE_INDEX_URL": bad})
    assert SECRET not in str(err.value) and "https://modelops:***@pypi.example/simple index" in str(err.value)
    assert SECRET not in err.value.value


def test_installs_from_an_index_use_its_credentials_and_show_them_nowhere(make_runtime, tmp_path, caplog):
    """The index (a real server on loopback) sees the credentials; the task's results, provenance, error
    messages and the worker's log records never do."""
    root = tmp_path / "bundles"
    make_env_bundle(root, "from-index", "modelops-probe-pkg", "7.0", wheels=False)
    make_env_bundle(root, "missing", "modelops-probe-pkg", "8.0", wheels=False)  # the index has no 8.0
    wheel = make_wheel(tmp_path / "index", "modelops-probe-pkg", "7.0", {"modelops_probe_pkg/__init__.py": "VERSION = '7.0'\n"})
    exposed = []
    with LoopbackServer() as server, caplog.at_level(logging.DEBUG):
        index = server.serve_index([wheel]).replace("http://", f"http://modelops:{SECRET}@")
        page = server.routes["/simple/modelops-probe-pkg/"]

        def answer_after_looking_at_every_command_line(handler) -> None:
            """uv waits for this answer: any process in the pod (a bundle's child too) could read its argv now."""
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if SECRET.encode() in cmdline.read_bytes():
                        exposed.append(cmdline.read_bytes().replace(b"\0", b" ").decode())
                except OSError:
                    pass
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(page)))
            handler.end_headers()
            handler.wfile.write(page)

        server.routes["/simple/modelops-probe-pkg/"] = answer_after_looking_at_every_command_line
        runtime = make_runtime(MODELOPS_BUNDLES_DIR=str(root), MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"),
                               MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_PACKAGE_INDEX_URL=index)
        ok, failed = run_task(runtime, "from-index"), run_task(runtime, "missing")
    assert ok.ok and ok.outputs["version"] == "7.0", ok.error
    assert not failed.ok and "modelops-probe-pkg" in failed.error.message
    assert f"Basic {base64.b64encode(f'modelops:{SECRET}'.encode()).decode()}" in server.authorizations
    for result in (ok, failed):
        assert SECRET not in result.model_dump_json()
    assert SECRET not in caplog.text
    assert not exposed, exposed  # never on a command line
    assert "modelops:***@127.0.0.1" in caplog.text  # the build's log line names the index, masked


CREDENTIAL_ENV = {
    "DOCKER_CONFIG": "/secret/docker",
    "DOCKER_AUTH_CONFIG": '{"auths": {}}',
    "REGISTRY_AUTH_FILE": "/secret/auth.json",
    "UV_INDEX_URL": f"https://u:{SECRET}@idx.example/simple",
    "UV_EXTRA_INDEX_URL": f"https://u:{SECRET}@idx.example/extra",
    "UV_INDEX_PRIVATE_PASSWORD": SECRET,
    "PIP_INDEX_URL": f"https://u:{SECRET}@idx.example/simple",
}
SPY = "import os; open({path!r}, 'a').write(' '.join(sorted(os.environ)) + '\\n' + repr(dict(os.environ)) + '\\n')\n"


@pytest.mark.parametrize("executor, extra", [("isolated_warm", {}), ("cold", {"MODELOPS_COLD_START": "spawn"}),
                                             ("cold", {"MODELOPS_COLD_START": "fork"})])
def test_bundle_processes_never_see_registry_or_index_credentials(make_runtime, tmp_path, monkeypatch, executor, extra):
    """A spy (.pth in the bundle's pinned wheel: it runs at every start of the environment's interpreter,
    the build's own checks included) records the environment of every process that runs bundle code."""
    for name, value in CREDENTIAL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELOPS_PACKAGE_INDEX_URL", f"https://u:{SECRET}@idx.example/simple")  # as in a pod
    seen = tmp_path / "seen.txt"
    root = tmp_path / "bundles"
    bundle = make_env_bundle(root, "spy", "modelops-probe-pkg", "1.0", wheels=False)
    make_wheel(bundle / "wheels", "modelops-probe-pkg", "1.0", {"modelops_probe_pkg/__init__.py": "VERSION = '1.0'\n",
                                                                 "zz_spy.pth": SPY.format(path=str(seen))})
    runtime = make_runtime(MODELOPS_BUNDLES_DIR=str(root), MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"),
                           MODELOPS_EXECUTOR_TYPE=executor, MODELOPS_PACKAGE_INDEX_URL=f"https://u:{SECRET}@idx.example/simple",
                           **extra)
    result = run_task(runtime, "spy")
    assert result.ok, result.error
    text = seen.read_text()
    assert text.count("\n") >= 4  # the build's checks and the bundle's processes
    leaked = sorted({name for name in (*CREDENTIAL_ENV, "MODELOPS_PACKAGE_INDEX_URL") if name in text.split()})
    assert not leaked and SECRET not in text, leaked
