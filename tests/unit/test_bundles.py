"""Bundles: lookup under each source, manifests, content digests."""

from __future__ import annotations

import os
import shutil

import pytest

from modelops.bundles import BundleError, BundleResolver
from modelops.bundles.digest import content_digest
from tests.helpers import EXECUTOR_ENVS, make_task


@pytest.fixture
def sir_copy(bundles_dir, tmp_path):
    root = tmp_path / "bundles"
    shutil.copytree(bundles_dir / "sir", root / "sir")
    return root


def test_digest_ignores_mtimes_and_bytecode_but_not_content(sir_copy):
    bundle_dir = sir_copy / "sir"
    before = content_digest(bundle_dir)
    model = bundle_dir / "sir_model.py"
    os.utime(model, (1, 1))
    (bundle_dir / "__pycache__").mkdir()
    (bundle_dir / "__pycache__" / "sir_model.cpython-311.pyc").write_bytes(b"junk")
    assert content_digest(bundle_dir) == before
    model.write_text(model.read_text() + "\n# changed\n")
    assert content_digest(bundle_dir) != before


def test_resolver_notices_a_changed_bundle(sir_copy):
    resolver = BundleResolver("file", sir_copy)
    first = resolver.resolve("sir")
    assert resolver.resolve("sir") is first  # cached while unchanged
    (sir_copy / "sir" / "extra.py").write_text("X = 1\n")
    assert resolver.resolve("sir").digest != first.digest


def test_file_bundle_fields(bundles_dir):
    bundle = BundleResolver("file", bundles_dir).resolve("sir")
    assert (bundle.name, bundle.version, bundle.entrypoint, bundle.source) == (
        "sir", "1.0.0", "sir_model:simulate", "file")
    assert bundle.import_path == str(bundles_dir / "sir")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "bundle.json not found"),
        ("{not json", "is not valid JSON"),
        ('["a"]', "expected an object"),
        ('{"name": "m", "version": "1"}', "field 'entrypoint' is missing"),
        ('{"name": "m", "version": 1, "entrypoint": "a:b"}', "field 'version' is missing or not a non-empty string"),
        ('{"name": "m", "version": "1", "entrypoint": "no_colon"}', "is not of the form 'module:function'"),
    ],
)
def test_malformed_manifest_is_an_error_naming_the_file(tmp_path, manifest, message):
    (tmp_path / "m").mkdir()
    if manifest is not None:
        (tmp_path / "m" / "bundle.json").write_text(manifest)
    with pytest.raises(BundleError, match=message) as info:
        BundleResolver("file", tmp_path).resolve("m")
    assert str(tmp_path / "m" / "bundle.json") in str(info.value)


@pytest.mark.parametrize("name", ["missing", "../etc", ".hidden"])
def test_unknown_or_unsafe_bundle_name(bundles_dir, name):
    with pytest.raises(BundleError, match=repr(name)):
        BundleResolver("file", bundles_dir).resolve(name)


def test_builtin_probe_resolves_under_both_sources(bundles_dir, tmp_path):
    for resolver in (BundleResolver("file", bundles_dir), BundleResolver("image", tmp_path / "none")):
        bundle = resolver.resolve("modelops:probe")
        assert bundle.entrypoint == "modelops_probe:simulate" and bundle.source == "builtin"


@pytest.mark.parametrize("executor", ["direct", "isolated_warm", "cold-spawn", "cold-fork"])
def test_image_bundle_is_imported_from_the_environment(make_runtime, tmp_path, monkeypatch, executor):
    site = tmp_path / "site"
    site.mkdir()
    (site / "imgmodel.py").write_text("import os\ndef simulate(params, seed):\n    return {'pid': os.getpid(), 'seed': seed}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    runtime = make_runtime(**EXECUTOR_ENVS[executor], MODELOPS_BUNDLE_SOURCE="image")
    bundle = runtime.resolver.resolve("imgmodel")
    assert bundle.source == "image" and bundle.entrypoint == "imgmodel:simulate"
    result = runtime.execute(make_task(runtime, "imgmodel", seed=3))
    assert result.ok and result.outputs["seed"] == 3


def test_image_bundle_that_is_not_installed(tmp_path):
    with pytest.raises(BundleError, match="no module 'not_installed_model' installed in this image"):
        BundleResolver("image", tmp_path).resolve("not_installed_model")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("raise ImportError('missing dependency scipy')", "cannot import module 'broken'"),
        ("simulate = 42", "has no callable 'simulate'"),
    ],
)
def test_entrypoint_that_does_not_import_or_is_not_callable(make_runtime, bundles_dir, module, message):
    target = bundles_dir / "broken"
    target.mkdir(exist_ok=True)
    (target / "bundle.json").write_text('{"name": "broken", "version": "1", "entrypoint": "broken:simulate"}')
    (target / "broken.py").write_text(module + "\n")
    try:
        runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"])
        result = runtime.execute(make_task(runtime, "broken"))
        assert result.status == "failed" and message in result.error.message
        assert "bundle 'broken'" in result.error.message
    finally:
        shutil.rmtree(target)
