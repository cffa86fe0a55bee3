"""Bundle artifacts (bundles/artifact.py) and OCI references (bundles/oci.py), without a registry.

The registry round trips are in tests/registry/test_bundle_registry.py.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from modelops.bundles import artifact
from modelops.bundles.bundle import BundleError
from modelops.bundles.digest import content_digest
from modelops.bundles.oci import (
    Reference,
    RegistryError,
    docker_config_path,
    is_loopback,
    manifest_for,
    parse_reference,
)

REPO = Path(__file__).resolve().parents[2]
SIR = REPO / "examples" / "sir"


def _copy(source: Path, target: Path, mtime: int, file_mode: int, reverse: bool = False) -> Path:
    """A copy of `source` with its own mtimes, permission bits and file creation order."""
    target.mkdir(parents=True)
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in reversed(files) if reverse else files:
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
        os.chmod(dest, file_mode)
        os.utime(dest, (mtime, mtime))
    return target


def _bundle(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(SIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pkg").mkdir()
    (root / "pkg" / "helpers.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "junk.pyc").write_bytes(b"not part of the bundle")
    return root


def test_same_files_give_the_same_bytes_whatever_their_mtimes_modes_and_order(tmp_path):
    source = _bundle(tmp_path)
    one = _copy(source, tmp_path / "one", mtime=1_000_000_000, file_mode=0o644)
    two = _copy(source, tmp_path / "two", mtime=1_700_000_000, file_mode=0o664, reverse=True)
    os.chmod(one / "run.sh", 0o700)  # executable by its owner in both copies, other bits differ
    os.chmod(two / "run.sh", 0o775)
    a, b = artifact.build(one), artifact.build(two)
    assert a.layer_bytes == b.layer_bytes
    assert a.config_bytes == b.config_bytes
    assert manifest_for(a) == manifest_for(b)


def test_layer_entries_are_sorted_with_fixed_metadata(tmp_path):
    source = _bundle(tmp_path)
    os.utime(source / "bundle.json", (1_234_567_890, 1_234_567_890))
    built = artifact.build(source)
    with tarfile.open(fileobj=io.BytesIO(built.layer_bytes)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=str.encode)
    assert "pkg/helpers.py" in names and "bundle.json" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    for member in members:
        assert member.isreg()
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == (0o755 if member.name == "run.sh" else 0o644), member.name


def test_a_changed_file_changes_the_digests(tmp_path):
    source = _bundle(tmp_path)
    before = artifact.build(source)
    (source / "pkg" / "helpers.py").write_text("X = 2\n")
    after = artifact.build(source)
    assert after.layer_digest != before.layer_digest
    assert after.config["content_digest"] != before.config["content_digest"]
    assert manifest_for(after) != manifest_for(before)


def test_config_describes_the_bundle_and_unpacks_to_the_same_content(tmp_path):
    source = _bundle(tmp_path)
    built = artifact.build(source)
    assert built.config["name"] == "sir" and built.config["version"] == "1.0.0"
    assert built.config["entrypoint"] == "sir_model:simulate"
    assert built.config["environment"] == {"kind": "image"}
    target = tmp_path / "unpacked"
    artifact.unpack(built.layer_bytes, target)
    assert content_digest(target) == built.config["content_digest"] == content_digest(source)
    assert os.stat(target / "run.sh").st_mode & 0o100


def test_environment_lock_is_described(tmp_path):
    source = _bundle(tmp_path)
    (source / "requirements.txt").write_text("# pinned\nsix==1.17.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    env = artifact.build(source).config["environment"]
    assert env["kind"] == "lock" and env["lock"] == "requirements.txt"
    assert env["packages"] == ["six==1.17.0"]
    assert env["lock_digest"] == artifact.sha256_digest((source / "requirements.txt").read_bytes())


def test_push_refuses_a_bad_lock_and_misused_wheel_options_before_any_network(tmp_path):
    """`mops bundle push` exits 2 naming the problem; nothing reaches a registry or an index."""
    from click.testing import CliRunner

    from modelops.cli.bundle_cmd import bundle as bundle_cli

    source = _bundle(tmp_path)
    ref = "127.0.0.1:9/never/contacted:1"  # port 9 (discard): a push that got this far would fail otherwise
    cases = [
        (["--with-wheels"], "has no requirements.txt"),
        (["--wheels-python", "3.12"], "--wheels-python is only used with --with-wheels"),
    ]
    for extra, expected in cases:
        result = CliRunner().invoke(bundle_cli, ["push", str(source), ref, *extra])
        assert result.exit_code == 2 and expected in result.output, (extra, result.output)
    (source / "requirements.txt").write_text("six==1.17.0\nrequests>=2\n")
    for extra in ([], ["--with-wheels"]):
        result = CliRunner().invoke(bundle_cli, ["push", str(source), ref, *extra])
        assert result.exit_code == 2, result.output
        assert "line 2" in result.output and "'requests>=2'" in result.output and "name==version" in result.output


def test_unpack_refuses_links_and_paths_leaving_the_target(tmp_path):
    for make in (lambda t: t.addfile(_info("../escape.py", b"x"), io.BytesIO(b"x")),
                 lambda t: t.addfile(_link("link", "/etc/passwd"))):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            make(tar)
        with pytest.raises((BundleError, tarfile.TarError)):
            artifact.unpack(buffer.getvalue(), tmp_path / "target")
    assert not (tmp_path / "escape.py").exists()


def _info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def test_a_directory_without_a_manifest_is_refused_naming_it(tmp_path):
    with pytest.raises(BundleError, match="bundle.json"):
        artifact.build(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        artifact.build(tmp_path / "missing")


@pytest.mark.parametrize("text, expected", [
    ("localhost:5000/bundles/sir:1.0.0", Reference("localhost:5000", "bundles/sir", "1.0.0")),
    ("ghcr.io/team/models/sir", Reference("ghcr.io", "team/models/sir")),
    ("127.0.0.1:5000/sir@sha256:" + "a" * 64, Reference("127.0.0.1:5000", "sir", None, "sha256:" + "a" * 64)),
    ("[::1]:5000/a_b/c-d:v1.2_rc", Reference("[::1]:5000", "a_b/c-d", "v1.2_rc")),
    ("registry:5000/sir:1", Reference("registry:5000", "sir", "1")),
])
def test_references_parse(text, expected):
    assert parse_reference(text) == expected
    assert str(parse_reference(text)) == text


@pytest.mark.parametrize("text", [
    "sir",                                   # a plain bundle name, no registry
    "bundles/sir:1.0.0",                     # no host
    "localhost:5000/Bundles/sir:1",          # repository must be lowercase
    "localhost:5000/sir:",                   # empty tag
    "localhost:5000/sir@sha256:abc",         # short digest
    "localhost:5000/sir@md5:" + "a" * 32,    # not sha256
    "localhost:5000//sir",
    "https://localhost:5000/sir:1",
])
def test_bad_references_are_refused_naming_the_text_and_the_form(text):
    with pytest.raises(RegistryError) as err:
        parse_reference(text)
    assert repr(text) in str(err.value)
    assert "HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]" in str(err.value)
    assert not err.value.retryable


def test_loopback_hosts_and_docker_config(monkeypatch, tmp_path):
    assert is_loopback("localhost:5000") and is_loopback("127.0.0.1:5000") and is_loopback("[::1]:5000")
    assert not is_loopback("ghcr.io") and not is_loopback("10.0.0.1:5000")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_path() == tmp_path / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    assert docker_config_path() == Path.home() / ".docker" / "config.json"


# ---- hostile layers: bounded unpacking ---------------------------------------------------------
MANIFEST = b'{"name": "x", "version": "1", "entrypoint": "m:f"}'


def _disk_usage(path: Path) -> int:
    """Bytes really allocated under PATH (holes and unwritten files count nothing)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*")) if path.exists() else 0


def _pax_sparse_layer(real_size: int) -> bytes:
    """A PAX layer (GNU sparse 0.1 headers, written by hand) whose one data byte stands for REAL_SIZE bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info("bundle.json", MANIFEST), io.BytesIO(MANIFEST))
        info = _info("big.bin", b"x")
        info.pax_headers = {"GNU.sparse.map": "0,1", "GNU.sparse.size": str(real_size)}
        tar.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def _gnu_tar_sparse_layer(tmp_path: Path, fmt: str, real_size: int) -> bytes:
    """The same made by GNU tar --sparse from a file with a hole (`gnu`: type 'S' members; `pax`: 1.0 maps)."""
    import subprocess

    if not shutil.which("tar") or "GNU tar" not in subprocess.run(["tar", "--version"], capture_output=True,
                                                                   text=True).stdout:
        pytest.skip("GNU tar is not installed")
    source = tmp_path / f"src-{fmt}"
    source.mkdir()
    (source / "bundle.json").write_bytes(MANIFEST)
    with open(source / "big.bin", "wb") as handle:
        handle.write(b"x")
        handle.truncate(real_size)  # a hole of real_size - 1 bytes
    layer = tmp_path / f"layer-{fmt}.tar"
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", str(layer), "-C", str(source),
                    "bundle.json", "big.bin"], check=True)
    return layer.read_bytes()


@pytest.mark.parametrize("kind", ["pax-0.1-by-hand", "gnu-tar-gnu", "gnu-tar-pax"])
def test_a_sparse_member_is_refused_and_nothing_large_is_written(tmp_path, kind):
    """A sparse member passes isreg(), and its holes would be written as real zeros: a 10 KiB layer
    unpacked to 64 MiB (and to whatever its header says). Only plain file members are accepted."""
    real_size = 64 * 1024 * 1024
    if kind == "pax-0.1-by-hand":
        layer = _pax_sparse_layer(real_size)
    else:
        layer = _gnu_tar_sparse_layer(tmp_path, kind.rsplit("-", 1)[1], real_size)
    assert len(layer) < 64 * 1024
    target = tmp_path / "target"
    with pytest.raises(BundleError) as err:
        artifact.unpack(layer, target)
    assert "'big.bin'" in str(err.value) and "sparse" in str(err.value), str(err.value)
    assert _disk_usage(target) < 1024 * 1024


def _plain_layer(files: dict[str, int]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, size in files.items():
            tar.addfile(_info(name, b"\0" * size), io.BytesIO(b"\0" * size))
    return buffer.getvalue()


def test_unpacked_bytes_and_entries_are_bounded_before_anything_is_written(tmp_path):
    mib = 1024 * 1024
    layer = _plain_layer({"bundle.json": 10, "a.bin": mib, "b.bin": mib, "c.bin": mib})
    target = tmp_path / "bytes"
    with pytest.raises(BundleError) as err:
        artifact.unpack(layer, target, max_bytes=2 * mib)
    assert "3145738 bytes" in str(err.value) and "2097152" in str(err.value), str(err.value)
    assert not target.exists() or not any(target.iterdir())
    many = _plain_layer({"bundle.json": 10, **{f"f{i}.py": 0 for i in range(50)}})
    target = tmp_path / "entries"
    with pytest.raises(BundleError) as err:
        artifact.unpack(many, target, max_entries=10)
    assert "more than 10 entries" in str(err.value) and "at most 10" in str(err.value), str(err.value)
    assert not target.exists() or not any(target.iterdir())
    artifact.unpack(layer, tmp_path / "fits", max_bytes=4 * mib, max_entries=4)  # within both: unpacked
    assert (tmp_path / "fits" / "c.bin").stat().st_size == mib


def test_the_duplicate_entry_check_is_linear(tmp_path):
    """10,000 entries (the default bound) naming 100 paths are refused naming the duplicates, and the check
    compares names about once each, not pairwise (10^8 comparisons took seconds): counted, not timed."""
    layer = _plain_layer({"bundle.json": 10})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(10_000):
            tar.addfile(_info(f"f{i % 100}.py", b""), io.BytesIO(b""))
    with pytest.raises(BundleError, match=r"duplicate entries: \['f0.py', 'f1.py', 'f10.py'"):
        artifact.unpack(buffer.getvalue(), tmp_path / "target")
    assert layer

    comparisons = 0

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            nonlocal comparisons
            comparisons += 1
            return str.__eq__(self, other)

    names = [Name(f"f{i % 100}.py") for i in range(10_000)]
    assert artifact.duplicate_names(names)[:3] == ["f0.py", "f1.py", "f10.py"]
    assert comparisons <= 2 * len(names), f"{comparisons} comparisons for {len(names)} names"


def test_the_content_digest_hashes_in_chunks(tmp_path):
    """A 64 MiB file is hashed without holding it in memory."""
    import tracemalloc

    (tmp_path / "big.bin").write_bytes(b"\1" * (64 * 1024 * 1024))
    tracemalloc.start()
    try:
        content_digest(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak


@pytest.mark.parametrize("name", ["__pycache__/m.cpython-311.pyc", "pkg/m.pyc", ".git/config"])
def test_a_layer_carrying_what_the_digest_does_not_cover_is_refused(tmp_path, name):
    """Bytecode in a layer would pass the content-digest check (which skips it) and then be imported."""
    layer = _plain_layer({"bundle.json": 10, name: 10})
    with pytest.raises(BundleError, match="not covered by the bundle's content digest") as err:
        artifact.unpack(layer, tmp_path / "target")
    assert repr(name) in str(err.value)


def _bundle_with_links(tmp_path: Path) -> tuple[Path, Path]:
    """A bundle holding a link to a file outside it (a fake ~/.docker/config.json) and a link to a directory."""
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    secret = home / ".docker" / "config.json"
    secret.write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0LXRva2Vu"}}}')
    source = _bundle(tmp_path)
    (source / "settings.json").symlink_to(secret)
    (source / "docker").symlink_to(home / ".docker")
    return source, secret


def test_build_refuses_symlinks_naming_the_link_and_its_target(tmp_path):
    source, secret = _bundle_with_links(tmp_path)
    with pytest.raises(BundleError) as err:
        built = artifact.build(source)
        assert b"c2VjcmV0LXRva2Vu" not in built.layer_bytes  # what was uploaded before
    message = str(err.value)
    assert f"{source / 'settings.json'} -> {secret}" in message, message
    assert f"{source / 'docker'} -> {secret.parent}" in message, message


@pytest.mark.parametrize("extra", [[], ["--with-wheels"]])
def test_push_refuses_symlinks_before_any_network(tmp_path, extra):
    from click.testing import CliRunner

    from modelops.cli.bundle_cmd import bundle as bundle_cli

    source, secret = _bundle_with_links(tmp_path)
    (source / "requirements.txt").write_text("six==1.17.0\n")
    result = CliRunner().invoke(bundle_cli, ["push", str(source), "127.0.0.1:9/never/contacted:1", *extra])
    assert result.exit_code == 2
    assert f"{source / 'settings.json'} -> {secret}" in result.output, result.output
    assert "symbolic link" in result.output and "unreachable" not in result.output


def test_push_with_wheels_names_the_users_lock_not_a_temporary_copy(tmp_path):
    from click.testing import CliRunner

    from modelops.cli.bundle_cmd import bundle as bundle_cli

    source = _bundle(tmp_path)
    (source / "requirements.txt").write_text("six==1.17.0\nrequests>=2\n")
    result = CliRunner().invoke(bundle_cli, ["push", str(source), "127.0.0.1:9/never/contacted:1", "--with-wheels"])
    assert result.exit_code == 2
    assert f"{source / 'requirements.txt'} line 2" in result.output, result.output
    assert "modelops-push-" not in result.output
