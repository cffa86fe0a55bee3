"""Per-bundle Python environments (bundles/environments.py) through a real WorkerRuntime: real uv,
real venvs, real warm / cold-fork / cold-spawn children running in them."""

from __future__ import annotations

import concurrent.futures
import json
import threading
from pathlib import Path

import pytest

from tests.helpers import CHILD_EXECUTORS, EXECUTOR_ENVS, make_env_bundle, make_wheel, run_task

from modelops.bundles.bundle import BundleError
from modelops.bundles.environments import parse_lock
from modelops.worker.runtime import WorkerRuntime

pytest.importorskip("uv", reason="bundle environments need the uv installer (pip install modelops-dask[worker])")


@pytest.fixture
def env_root(tmp_path) -> Path:
    root = tmp_path / "bundles"
    make_env_bundle(root, "probe-one", "modelops-probe-pkg", "1.0")
    make_env_bundle(root, "probe-two", "modelops-probe-pkg", "2.0")
    make_env_bundle(root, "probe-one-again", "modelops-probe-pkg", "1.0")  # same lock as probe-one
    return root


@pytest.fixture
def make_env_runtime(make_runtime, env_root, tmp_path):
    """conftest's make_runtime on these bundles and this test's cache, under executor `executor`."""

    def make(executor: str, slots: int = 2, **extra: str) -> WorkerRuntime:
        return make_runtime(slots, MODELOPS_BUNDLES_DIR=str(env_root),
                            MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"), **EXECUTOR_ENVS[executor], **extra)

    return make


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
def test_two_bundles_see_their_own_version_of_one_package_at_the_same_time(make_env_runtime, tmp_path, executor):
    runtime = make_env_runtime(executor, slots=4)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # sleep: the two bundles' tasks overlap on this one worker
        futures = {name: [pool.submit(run_task, runtime, name, {"sleep": 0.3}, seed) for seed in range(2)]
                   for name in ("probe-one", "probe-two")}
        results = {name: [f.result(timeout=120) for f in fs] for name, fs in futures.items()}
    envs_dir = tmp_path / "cache" / "environments"
    for name, version in (("probe-one", "1.0"), ("probe-two", "2.0")):
        for result in results[name]:
            assert result.ok, result.error
            assert result.outputs["version"] == version
            assert Path(result.outputs["prefix"]).parent == envs_dir  # the environment's interpreter
            assert Path(result.outputs["file"]).is_relative_to(Path(result.outputs["prefix"]))
            assert result.provenance.environment["lock_digest"].startswith("sha256:")
    prefixes = {name: {r.outputs["prefix"] for r in rs} for name, rs in results.items()}
    assert len(prefixes["probe-one"]) == 1 and prefixes["probe-one"] != prefixes["probe-two"]
    # each environment was built once, by exactly one of its bundle's tasks, which says so
    for name in ("probe-one", "probe-two"):
        built = [r.provenance.environment["built"] for r in results[name]]
        assert sorted(built) == [False, True]
        assert all(r.provenance.environment["build_seconds"] > 0 for r in results[name])
        assert all(r.provenance.environment["installed_from"] == "wheels" for r in results[name])
    assert runtime.environments.builds == 2


def test_bundles_with_the_same_lock_share_one_environment(make_env_runtime):
    runtime = make_env_runtime("cold-fork")
    first = run_task(runtime, "probe-one")
    again = run_task(runtime, "probe-one-again")
    assert first.ok and again.ok, (first.error, again.error)
    assert first.outputs["prefix"] == again.outputs["prefix"]
    assert first.provenance.environment["built"] and not again.provenance.environment["built"]
    assert runtime.environments.builds == 1


def test_concurrent_first_tasks_of_a_new_lock_wait_for_one_build(make_env_runtime):
    runtime = make_env_runtime("isolated_warm", slots=4)
    barrier = threading.Barrier(4)

    def go(seed):
        barrier.wait()
        return run_task(runtime, "probe-two", seed=seed)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(go, range(4)))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.provenance.environment["built"] for r in results].count(True) == 1
    assert runtime.environments.builds == 1


def test_a_second_worker_process_reuses_the_built_environment(make_env_runtime):
    """Another runtime on the same cache (another worker process of the pod, or a restarted worker)."""
    first = run_task(make_env_runtime("cold-spawn"), "probe-one")
    second_runtime = make_env_runtime("cold-spawn")
    second = run_task(second_runtime, "probe-one")
    assert first.ok and second.ok
    assert not second.provenance.environment["built"]
    assert second.provenance.environment["build_seconds"] == first.provenance.environment["build_seconds"]
    assert second_runtime.environments.builds == 0


def test_the_lock_wins_over_the_worker_image_package(make_env_runtime, env_root):
    """A bundle pinning a package the worker has (tqdm) sees its own version, not the worker's."""
    import tqdm

    fake = "99.0.0"
    assert tqdm.__version__ != fake
    bundle = env_root / "own-tqdm"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"name": "own-tqdm", "version": "1", "entrypoint": "m:simulate"}))
    (bundle / "m.py").write_text("import tqdm\n\ndef simulate(params, seed):\n    return {'version': tqdm.VERSION}\n")
    (bundle / "requirements.txt").write_text(f"tqdm=={fake}\n")
    make_wheel(bundle / "wheels", "tqdm", fake, {"tqdm/__init__.py": f"VERSION = {fake!r}\n"})
    result = run_task(make_env_runtime("cold-fork"), "own-tqdm")
    assert result.ok, result.error
    assert result.outputs["version"] == fake


def test_direct_refuses_a_bundle_with_its_own_environment(make_env_runtime):
    result = run_task(make_env_runtime("direct"), "probe-one")
    assert not result.ok
    assert result.error.retryable is False
    assert "requirements.txt" in result.error.message and "MODELOPS_EXECUTOR=direct" in result.error.message
    assert "isolated_warm or cold" in result.error.message


def test_a_missing_wheel_fails_the_task_naming_the_package_and_builds_nothing(make_env_runtime, env_root, tmp_path):
    bundle = make_env_bundle(env_root, "no-wheel", "modelops-probe-pkg", "3.0", wheels=False)
    (bundle / "wheels").mkdir()  # wheels/ present, so offline, but without the pinned one
    result = run_task(make_env_runtime("cold-fork"), "no-wheel")
    assert not result.ok
    assert result.error.type == "BundleEnvironmentError"
    assert "modelops-probe-pkg" in result.error.message and "'no-wheel'" in result.error.message
    assert result.error.retryable is False  # offline from the bundle's own wheels: a retry cannot help
    assert not [p for p in (tmp_path / "cache" / "environments").iterdir() if p.name != "locks"]


def test_an_interrupted_build_is_rebuilt(make_env_runtime, tmp_path):
    runtime = make_env_runtime("cold-spawn")
    first = run_task(runtime, "probe-one")
    env_dir = Path(first.outputs["prefix"])
    (env_dir / "environment.json").unlink()  # as a build killed before its last step leaves it
    fresh = make_env_runtime("cold-spawn")
    again = run_task(fresh, "probe-one")
    assert again.ok and again.provenance.environment["built"]
    assert again.outputs["version"] == "1.0"


@pytest.mark.parametrize("line, why", [
    ("requests", "'requests'"),
    ("requests>=2", "'requests>=2'"),
    ("-e ./local", "'-e ./local'"),
    ("--index-url https://example.invalid/simple", "--index-url"),
    ("https://example.invalid/pkg.whl", "example.invalid"),
])
def test_a_lock_holds_pins_only(line, why):
    with pytest.raises(BundleError) as err:
        parse_lock(f"six==1.17.0\n{line}\n", "bundle 'x' requirements.txt")
    assert "line 2" in str(err.value) and why in str(err.value) and "name==version" in str(err.value)


HEX = "0123456789abcdef" * 4  # 64 hex digits


def test_a_lock_with_hashes_markers_and_continuations_parses():
    pins = parse_lock(
        f"# a comment\nsix==1.17.0 \\\n    --hash=sha256:{HEX} \\\n    --hash=sha256:{HEX[::-1]}\n"
        f"Typing_Extensions==4.12.2 ; python_version >= '3.8' --hash=sha256:{HEX}  # via x\n",
        "x",
    )
    assert [(p.name, p.version, p.line) for p in pins] == [("six", "1.17.0", 2), ("typing-extensions", "4.12.2", 5)]
    assert pins[0].hashes == (HEX, HEX[::-1])
    assert pins[1].marker == 'python_version >= "3.8"'


@pytest.mark.parametrize("lock, why", [
    # whatever follows a hash is more requirements to uv: a URL, an editable, an index
    (f"six==1.16.0 --hash=sha256:{HEX} https://evil.example/x.whl", "'https://evil.example/x.whl'"),
    (f"six==1.16.0 --hash=sha256:{HEX} -e ./evil", "'-e'"),
    (f"six==1.16.0 --hash=sha256:{HEX} --index-url https://evil.example/simple", "'--index-url'"),
    (f"six==1.16.0 --hash=sha256:{HEX} --extra-index-url=https://evil.example/simple", "--extra-index-url"),
    (f"six==1.16.0 \\\n  --hash=sha256:{HEX} \\\n  https://evil.example/x.whl", "'https://evil.example/x.whl'"),
    ("six==1.16.0 \\\n  https://evil.example/x.whl", "'https://evil.example/x.whl'"),
    # hashes: sha256 only, 64 hex digits
    (f"six==1.16.0 --hash=md5:{HEX[:32]}", "sha256"),
    (f"six==1.16.0 --hash=sha512:{HEX}{HEX}", "sha256"),
    ("six==1.16.0 --hash=sha256:abc", "64 hex"),
    (f"six==1.16.0 --hash=sha256:{HEX[:-1]}g", "64 hex"),
    (f"six==1.16.0 --hash sha256:{HEX}", "--hash=sha256:"),
    # a direct reference, with or without a pin before it
    ("six @ https://evil.example/six-1.16.0-py3-none-any.whl", "'six @ https://evil.example"),
    ("six==1.16.0@https://evil.example/x.whl", "@https://evil.example"),
    # markers: a real marker expression, nothing after it but hashes
    ("six==1.16.0 ; python_version >= '3.8' https://evil.example/x.whl", "marker"),
    ("six==1.16.0 ; https://evil.example/x.whl", "marker"),
    ("six==1.16.0 ; python_version >= '3.8' ; https://evil.example/x.whl", "marker"),
    # not a pin of one version
    ("six==1.*", "'1.*'"),
    ("six==1.16.0,<2", "',<2'"),
    ("six==1.16.0\x0bhttps://evil.example/x.whl", "control character"),
])
def test_a_lock_line_that_names_anything_but_pins_is_refused_naming_the_line(lock, why):
    """A lock line is tokenised whole: after `name==version` and an optional marker, only
    `--hash=sha256:<64 hex>` options; anything else is refused naming the file, the line and the token."""
    text = f"# header\ntyping-extensions==4.12.2\n{lock}\n"
    with pytest.raises(BundleError) as err:
        parse_lock(text, "bundle 'x' requirements.txt")
    message = str(err.value)
    assert "bundle 'x' requirements.txt line 3" in message and why in message, message
    assert "--hash=sha256:<64 hex>" in message


def test_a_lock_hashes_every_pin_or_none():
    with pytest.raises(BundleError, match=r"line 2: .*no --hash.* hash every pin or none"):
        parse_lock(f"six==1.16.0 --hash=sha256:{HEX}\ntqdm==4.66.0\n", "x")


def test_uv_is_handed_the_pins_as_parsed_not_the_bundles_file():
    """What uv installs is rebuilt from the parsed pins: even a line the parser misread could not add a URL."""
    from modelops.bundles.environments import canonical_lock

    pins = parse_lock(f"Six==1.16.0 ; python_version>='3' \\\n --hash=sha256:{HEX}  # c\n", "x")
    assert canonical_lock(pins) == f'six==1.16.0 ; python_version >= "3" --hash=sha256:{HEX}\n'


def test_least_recently_used_environments_past_the_bound_are_evicted_unless_in_use(env_root, tmp_path):
    """A bound of 1 byte: each build evicts every other environment that no worker process holds."""
    from modelops.bundles.environments import BundleEnvironments

    make_env_bundle(env_root, "probe-three", "modelops-probe-pkg", "3.0")
    cache = tmp_path / "cache"
    first = BundleEnvironments(cache, max_bytes=1)  # one worker process
    one = first.prepare("probe-one", env_root / "probe-one")
    second = BundleEnvironments(cache, max_bytes=1)  # another, while the first still uses its environment
    two = second.prepare("probe-two", env_root / "probe-two")
    assert second.evictions == 0 and Path(one.python).exists()  # held by the first: kept
    first.close()  # the first worker process is gone: its environment may go
    three = second.prepare("probe-three", env_root / "probe-three")
    assert not Path(one.python).exists() and second.evictions == 1
    assert Path(two.python).exists() and Path(three.python).exists()  # both used by the live process
    assert set(second.entries()) == {two.key, three.key}
    again = BundleEnvironments(cache, max_bytes=1)
    rebuilt = again.prepare("probe-one", env_root / "probe-one")  # evicted: built again, on use
    assert rebuilt.built and Path(rebuilt.python).exists()
    second.close()
    again.close()


def test_the_workers_bound_is_MODELOPS_BUNDLE_ENV_MAX_MB(make_env_runtime):
    assert make_env_runtime("cold-fork", MODELOPS_BUNDLE_ENV_MAX_MB="3").environments.max_bytes == 3 * 1024 * 1024


def test_a_bundle_without_wheels_installs_from_MODELOPS_PACKAGE_INDEX_URL(env_root, make_env_runtime, tmp_path):
    """A real package index (PEP 503 pages served by `python -m http.server` on loopback, stopped by its
    PID): the worker installs the lock from it. Were the setting ignored, uv would look elsewhere and
    find no `modelops-probe-pkg`."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.helpers import wait_until

    make_env_bundle(env_root, "from-index", "modelops-probe-pkg", "5.0", wheels=False)
    index = tmp_path / "index"
    wheel = make_wheel(index / "files", "modelops-probe-pkg", "5.0", {"modelops_probe_pkg/__init__.py": "VERSION = '5.0'\n"})
    (index / "simple" / "modelops-probe-pkg").mkdir(parents=True)
    (index / "simple" / "modelops-probe-pkg" / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}">{wheel.name}</a></body></html>\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(index)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/simple"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/modelops-probe-pkg/", timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
                return False

        wait_until(answers, timeout=30, what="the index server")
        result = run_task(make_env_runtime("cold-fork", MODELOPS_PACKAGE_INDEX_URL=url), "from-index")
    finally:
        server.kill()
        server.wait()
    assert result.ok, result.error
    assert result.outputs["version"] == "5.0"
    assert result.provenance.environment["installed_from"] == "index"


def test_a_url_after_a_hash_is_never_fetched(env_root, make_env_runtime, tmp_path):
    """The attack itself: a pin whose hash is followed by a URL. The task fails naming the line, and the
    attacker's server never sees a request for its wheel (uv read the URL as one more requirement)."""
    import hashlib

    from tests.helpers import LoopbackServer

    probe = make_wheel(tmp_path / "index", "modelops-probe-pkg", "6.0", {"modelops_probe_pkg/__init__.py": "VERSION = '6.0'\n"})
    evil = make_wheel(tmp_path / "evil", "evil", "1.0", {"evil.py": "PWNED = True\n"})
    bundle = make_env_bundle(env_root, "url-after-hash", "modelops-probe-pkg", "6.0", wheels=False)
    with LoopbackServer() as server:
        index = server.serve_index([probe, evil])
        sha = hashlib.sha256(probe.read_bytes()).hexdigest()
        (bundle / "requirements.txt").write_text(
            f"modelops-probe-pkg==6.0 --hash=sha256:{sha} {server.url}/files/{evil.name}\n")
        result = run_task(make_env_runtime("cold-fork", MODELOPS_PACKAGE_INDEX_URL=index), "url-after-hash")
        fetched = [path for _, path in server.requests]
    assert f"/files/{evil.name}" not in fetched, fetched
    assert not result.ok and "requirements.txt line 1" in result.error.message, result
    assert not result.error.retryable


def test_the_environment_key_changes_with_a_wheels_bytes(make_env_runtime, env_root):
    """Two bundles with the same unhashed lock and different wheels: the second must not run in the
    first one's environment (it would import the other bundle's package, reported as its own lock)."""
    bundle = make_env_bundle(env_root, "other-wheel", "modelops-probe-pkg", "1.0", wheels=False)
    make_wheel(bundle / "wheels", "modelops-probe-pkg", "1.0", {"modelops_probe_pkg/__init__.py": "VERSION = 'other'\n"})
    assert (bundle / "requirements.txt").read_bytes() == (env_root / "probe-one" / "requirements.txt").read_bytes()
    runtime = make_env_runtime("cold-fork")
    first, second = run_task(runtime, "probe-one"), run_task(runtime, "other-wheel")
    assert first.ok and second.ok, (first.error, second.error)
    assert (first.outputs["version"], second.outputs["version"]) == ("1.0", "other")
    assert first.provenance.environment["key"] != second.provenance.environment["key"]
    assert second.provenance.environment["built"]


def test_the_environment_key_changes_with_the_install_mode(make_env_runtime, env_root, tmp_path):
    """The same lock from the bundle's wheels and from a package index are two environments."""
    from tests.helpers import LoopbackServer

    make_env_bundle(env_root, "same-lock-index", "modelops-probe-pkg", "1.0", wheels=False)
    wheel = make_wheel(tmp_path / "index", "modelops-probe-pkg", "1.0", {"modelops_probe_pkg/__init__.py": "VERSION = 'index'\n"})
    with LoopbackServer() as server:
        runtime = make_env_runtime("cold-fork", MODELOPS_PACKAGE_INDEX_URL=server.serve_index([wheel]))
        offline, online = run_task(runtime, "probe-one"), run_task(runtime, "same-lock-index")
    assert offline.ok and online.ok, (offline.error, online.error)
    assert online.provenance.environment["installed_from"] == "index" and online.outputs["version"] == "index"
    assert offline.provenance.environment["key"] != online.provenance.environment["key"]


def make_sdist(dest: Path, name: str, version: str, marker: Path) -> Path:
    """An sdist whose in-tree build backend (no build requirements: it builds offline) writes MARKER when
    imported: what a build backend run by the installer would do with the worker's rights."""
    import io
    import tarfile

    root = f"{name}-{version}"
    files = {
        f"{root}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{root}/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        f"{root}/backend.py": f"open({str(marker)!r}, 'w').write('the build backend ran')\n",
    }
    dest.mkdir(parents=True, exist_ok=True)
    sdist = dest / f"{root}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for path, text in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return sdist


def test_an_sdist_in_wheels_never_runs_its_build_backend(make_env_runtime, env_root, tmp_path):
    marker = tmp_path / "pwned"
    bundle = env_root / "with-sdist"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"name": "with-sdist", "version": "1", "entrypoint": "m:simulate"}))
    (bundle / "m.py").write_text("def simulate(params, seed):\n    return {}\n")
    (bundle / "requirements.txt").write_text("evil==1.0\n")
    make_sdist(bundle / "wheels", "evil", "1.0", marker)
    result = run_task(make_env_runtime("cold-fork"), "with-sdist")
    assert not marker.exists(), marker.read_text()
    assert not result.ok and "wheels/evil-1.0.tar.gz" in result.error.message, result.error
    assert not result.error.retryable


def test_only_the_locks_pins_are_installed_and_a_missing_dependency_is_named(make_env_runtime, env_root):
    """A pinned wheel that requires a package the lock does not pin: uv must not resolve it (it would
    install whatever version it finds, unhashed); the lock is incomplete, and the error says what is missing."""
    bundle = make_env_bundle(env_root, "incomplete", "modelops-probe-pkg", "1.0", wheels=False)
    make_wheel(bundle / "wheels", "modelops-probe-pkg", "1.0", {"modelops_probe_pkg/__init__.py": "VERSION = '1.0'\n"},
               requires=("sneaky>=1",))
    make_wheel(bundle / "wheels", "sneaky", "1.0", {"sneaky.py": "X = 1\n"})
    result = run_task(make_env_runtime("cold-fork"), "incomplete")
    assert not result.ok, result.outputs
    message = result.error.message
    assert "modelops-probe-pkg" in message and "sneaky>=1" in message and "not in the lock" in message, message


def test_push_refuses_files_in_wheels_that_are_not_wheels(tmp_path):
    from click.testing import CliRunner

    from modelops.cli.bundle_cmd import bundle as bundle_cli

    bundle = make_env_bundle(tmp_path, "sdist-push", "modelops-probe-pkg", "1.0")
    make_sdist(bundle / "wheels", "evil", "1.0", tmp_path / "never")
    (bundle / "wheels" / "notes.txt").write_text("x")
    result = CliRunner().invoke(bundle_cli, ["push", str(bundle), "127.0.0.1:9/never/contacted:1"])
    assert result.exit_code == 2
    assert "wheels/evil-1.0.tar.gz" in result.output and "wheels/notes.txt" in result.output, result.output
    assert ".whl" in result.output and "unreachable" not in result.output


def test_a_hashed_lock_installs_only_wheels_with_those_hashes(make_env_runtime, env_root):
    import hashlib

    good = make_env_bundle(env_root, "hashed", "modelops-probe-pkg", "1.0")
    wheel = next((good / "wheels").glob("*.whl"))
    (good / "requirements.txt").write_text(
        f"modelops-probe-pkg==1.0 --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    bad = make_env_bundle(env_root, "hashed-other", "modelops-probe-pkg", "1.0")
    (bad / "requirements.txt").write_text(f"modelops-probe-pkg==1.0 --hash=sha256:{'0' * 64}\n")
    runtime = make_env_runtime("cold-fork")
    ok, refused = run_task(runtime, "hashed"), run_task(runtime, "hashed-other")
    assert ok.ok and ok.outputs["version"] == "1.0", ok.error
    assert not refused.ok and "hash" in refused.error.message.lower(), refused.error


def test_a_disk_error_building_an_environment_fails_the_task_and_is_not_retried(make_env_runtime, tmp_path):
    """The environments directory cannot be made (a file is in its way): a bundle error, not retryable,
    instead of an exception escaping the task (which comes back retryable, so `--resume` reruns it forever)."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "environments").write_text("in the way")
    result = run_task(make_env_runtime("cold-fork"), "probe-one")
    assert not result.ok and result.error.type == "BundleEnvironmentError", result.error
    assert not result.error.retryable and "environments" in result.error.message, result.error.message
