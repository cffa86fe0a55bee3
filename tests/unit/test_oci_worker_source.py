"""MODELOPS_BUNDLE_SOURCE=oci without a registry: its settings, what a worker refuses before any
network call, one cache per worker process, and the client's pinning of references.
(With the real registry: tests/registry/test_oci_studies.py and test_oci_bundle_cache.py.)"""

from __future__ import annotations

import pickle
import socket

import pytest

from modelops.bundles import BundleError, BundleResolver
from modelops.bundles.oci import RegistryError
from modelops.bundles.oci_source import OciBundleError
from modelops.services.bundle_pinning import pin_reference, pin_study
from modelops.settings import PlainHttp
from modelops.study import Study
from modelops.tasks import Task
from modelops.settings import ConfigError
from modelops.worker.config import RuntimeConfig

DIGEST = "sha256:" + "ab" * 32


def dead_host() -> str:
    """A loopback port nobody listens on: contacting it fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def oci_config(tmp_path, **env: str):
    return RuntimeConfig.from_env({"MODELOPS_BUNDLE_SOURCE": "oci",
                                   "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "cache"), **env})


def test_oci_settings_are_read_and_the_cache_directory_is_created(tmp_path):
    config = oci_config(tmp_path, MODELOPS_BUNDLE_CACHE_MAX_MB=" 64 ", MODELOPS_REGISTRY_PLAIN_HTTP="Yes")
    assert config.bundle_source.value == "oci" and config.bundle_cache_max_mb == 64
    assert config.registry_plain_http is PlainHttp.TRUE and (tmp_path / "cache").is_dir()
    defaults = RuntimeConfig.from_env({"MODELOPS_BUNDLE_SOURCE": "image"})
    assert defaults.registry_plain_http.as_option() is None  # auto: plain HTTP for loopback only
    assert str(defaults.bundle_cache_dir).startswith("/tmp/")  # the pod's one writable path


def test_an_unwritable_cache_directory_stops_an_oci_worker_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="MODELOPS_BUNDLE_CACHE_DIR=.* a writable directory when "
                                          "MODELOPS_BUNDLE_SOURCE=oci"):
        oci_config(tmp_path, MODELOPS_BUNDLE_CACHE_DIR=str(blocker / "cache"))
    # other sources do not use it
    RuntimeConfig.from_env({"MODELOPS_BUNDLE_SOURCE": "image", "MODELOPS_BUNDLE_CACHE_DIR": str(blocker / "c")})


def test_a_worker_refuses_a_tag_a_plain_name_and_a_bad_reference_without_asking_a_registry(tmp_path):
    resolver = BundleResolver.for_config(oci_config(tmp_path))
    tag = f"{dead_host()}/team/sir:1.0"
    with pytest.raises(OciBundleError, match="digest-pinned references only") as err:
        resolver.resolve(tag)
    assert not err.value.retryable and tag in str(err.value)
    with pytest.raises(BundleError, match="plain name, but this worker's MODELOPS_BUNDLE_SOURCE=oci"):
        resolver.resolve("sir")
    with pytest.raises(OciBundleError, match="invalid") as err:
        resolver.resolve("localhost:5000/Team/UPPER@" + DIGEST)
    assert not err.value.retryable
    assert resolver.resolve("modelops:probe").source == "builtin"  # the doctor probe still resolves


def test_an_oci_reference_on_a_file_worker_says_which_source_it_needs(bundles_dir):
    with pytest.raises(BundleError, match="is an OCI reference, but this worker's MODELOPS_BUNDLE_SOURCE=file"):
        BundleResolver("file", bundles_dir).resolve(f"localhost:5000/team/sir@{DIGEST}")


def test_an_unreachable_registry_fails_the_task_retryably(make_runtime, tmp_path):
    runtime = make_runtime(MODELOPS_BUNDLE_SOURCE="oci", MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"),
                           MODELOPS_EXECUTOR_TYPE="direct")
    ref = f"{dead_host()}/team/sir@{DIGEST}"
    result = runtime.execute(Task(bundle=ref, bundle_digest=DIGEST, entrypoint="m:f", params={}, seed=0))
    assert result.status == "failed" and result.error.kind == "runtime"
    assert result.error.type == "OciBundleError" and result.error.retryable
    assert "unreachable" in result.error.message and ref in result.error.message
    tag = runtime.execute(Task(bundle=ref.split("@")[0] + ":1", bundle_digest=DIGEST, entrypoint="m:f",
                               params={}, seed=0))
    assert tag.error.type == "OciBundleError" and not tag.error.retryable


def test_runtimes_of_one_worker_process_share_one_cache(make_runtime, tmp_path):
    env = dict(MODELOPS_BUNDLE_SOURCE="oci", MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"),
               MODELOPS_EXECUTOR_TYPE="direct")
    first, second = make_runtime(**env), make_runtime(**env)
    assert first.resolver.oci_cache is second.resolver.oci_cache
    other = make_runtime(**{**env, "MODELOPS_BUNDLE_CACHE_MAX_MB": "7"})
    assert other.resolver.oci_cache is not first.resolver.oci_cache
    assert other.resolver.oci_cache.max_bytes == 7 * 1024 * 1024


def test_pinning_leaves_names_and_digests_alone_and_resolves_tags(tmp_path):
    assert pin_reference("sir") == "sir"
    host = dead_host()
    # already pinned: normalised without asking the registry (it is down)
    assert pin_reference(f"{host}/team/sir:1.0@{DIGEST}") == f"{host}/team/sir@{DIGEST}"
    with pytest.raises(BundleError, match="cannot pin bundle") as err:
        pin_reference(f"{host}/team/sir:1.0")
    assert err.value.retryable and "unreachable" in str(err.value)
    study = Study(name="s", bundle=f"{host}/team/sir@{DIGEST}", parameters=[{"a": 1}])
    assert pin_study(study).bundle == f"{host}/team/sir@{DIGEST}"
    plain = Study(name="s", bundle="sir", parameters=[{"a": 1}])
    assert pin_study(plain) is plain


def test_retryable_survives_pickling_from_worker_to_client():
    for error in (RegistryError("r", retryable=True), OciBundleError("o", retryable=True)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.retryable and str(copy) == str(error)
    assert isinstance(OciBundleError("x"), BundleError)
