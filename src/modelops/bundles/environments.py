"""Per-bundle Python environments: a bundle's own pinned packages, built once per lock. Runs in the worker.

A bundle may carry `requirements.txt` beside `bundle.json`: pinned versions (`name==version`, hashes
where given) of the packages it needs that differ from the worker image's. The worker builds one
environment per distinct lock and interpreter (the key), with uv, under
`$MODELOPS_BUNDLE_CACHE_DIR/environments/<key>/`, and every bundle with the same lock reuses it:

    worker process (Dask thread, first task of a new lock)
      flock environments/locks/<key>.lock        one build per key across threads and pod processes
      uv venv --python <worker's interpreter>   same CPython, so the worker's compiled packages load
      uv pip install -r modelops-lock.txt      the lock's pins as parsed (parse_lock: pins, markers,
                                                sha256 hashes; nothing else), never the bundle's file;
                                                --no-build (wheels only: no build backend runs),
                                                --no-deps (the lock must be complete: checked after),
                                                --require-hashes when the lock carries hashes;
                                                offline from the bundle's wheels/ when it has them
                                                (`mops bundle push --with-wheels`), else from
                                                MODELOPS_PACKAGE_INDEX_URL or uv's own configuration
      site-packages/_modelops_worker.pth       the worker's site directories, *after* the bundle's:
                                                modelops (the child runtime) imports, the lock's
                                                versions win over the image's
      check: the interpreter imports the child runtime and sees every pinned version
      environment.json                         written last: an entry without it is rebuilt

Warm children, cold-fork zygotes and cold-spawn children of that bundle then exec the environment's
interpreter (`Bundle.python`) instead of the worker's, so a forked child costs what it costs today.

Size bound (MODELOPS_BUNDLE_ENV_MAX_MB): after a build, the least recently used environments are
removed until the rest fit, except those in use. A worker process holds a shared flock on
`locks/<key>.use` of every environment it has used until its runtime closes (its zygotes and warm
children may still import from it); eviction takes that lock exclusively without waiting, so it
removes only environments no live worker process uses. One environment larger than the bound is
kept while it is the one just built.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelops.bundles.bundle import BundleError
from modelops.bundles.cache_entries import last_used as _last_used
from modelops.bundles.cache_entries import mark_used as _mark_used
from modelops.bundles.cache_entries import complete_entries
from modelops.bundles.digest import sha256_digest, sha256_file
from modelops.settings import mask_credentials, without_credentials

log = logging.getLogger("modelops.bundles.environments")

LOCK_FILE = "requirements.txt"
WHEELS_DIR = "wheels"
ENVIRONMENTS_DIR = "environments"
MARKER = "environment.json"
WORKER_PTH = "_modelops_worker.pth"
INSTALLED_LOCK = "modelops-lock.txt"  # in the environment: what uv was asked to install
INSTALL_TIMEOUT_S = 900.0
MARK_INTERVAL_S = 60.0
KEY_VERSION = "2"  # what an environment's key covers changed: lock, install source, wheels' bytes

# A lock line, once its continuations are joined and its comment removed:
#   name[extras]==version [; marker] [--hash=sha256:<64 hex> ...]
_PIN = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[(?P<extras>[A-Za-z0-9._,\s-]*)\])?"
                  r"\s*(?P<op>===?)\s*(?P<version>[A-Za-z0-9._+!*-]+)")
_HASH = re.compile(r"--hash=sha256:(?P<hex>[0-9a-f]{64})")
_COMMENT = re.compile(r"(^|\s)#.*$")  # pip's rule: `#` at the start or after white space
# tabs are white space; \n, \r\n and \r end a line; any other control or line-breaking character is refused
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")
LOCK_FORM = ("a bundle's lock holds pinned requirements only: 'name==version', an optional '; marker', then "
             "only '--hash=sha256:<64 hex>' options; indexes come from the worker (MODELOPS_PACKAGE_INDEX_URL) "
             "or the bundle's wheels/")


class BundleEnvironmentError(BundleError):
    """A bundle environment that cannot be built; `retryable` when a package index was involved."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    line: int
    extras: tuple[str, ...] = ()
    marker: str | None = None  # normalised by packaging (what uv is handed)
    hashes: tuple[str, ...] = ()  # sha256 hex digests

    @property
    def requirement(self) -> str:
        """The line uv is handed for this pin (see canonical_lock)."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        marker = f" ; {self.marker}" if self.marker else ""
        return f"{self.name}{extras}=={self.version}{marker}" + "".join(f" --hash=sha256:{h}" for h in self.hashes)


def _logical_lines(text: str, where: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: comments removed, `\\` continuations joined."""
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(re.split(r"\r\n|\n|\r", text), 1):
        control = _CONTROL.search(raw)
        if control:
            raise BundleError(f"{where} line {number}: {raw!r} holds a control character "
                              f"({control.group()!r}); {LOCK_FORM}")
        line = _COMMENT.sub("", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(part.strip() for part in pending).strip()
        pending = []
        if joined:
            logical.append((start, joined))
    joined = " ".join(part.strip() for part in pending).strip()
    if joined:
        logical.append((start, joined))
    return logical


def _parse_pin(number: int, line: str, where: str) -> Pin:
    """One logical line as a Pin, or a BundleError naming the line and what in it is not allowed."""
    from packaging.markers import InvalidMarker, Marker  # packaging: a dependency of dask
    from packaging.version import InvalidVersion, Version

    def refuse(why: str) -> BundleError:
        return BundleError(f"{where} line {number}: {line!r} is not allowed: {why}; {LOCK_FORM}")

    match = _PIN.match(line)
    if not match:
        raise refuse("it does not start with a pin 'name==version'")
    version = match["version"]
    if match["op"] == "==":
        try:
            Version(version)
        except InvalidVersion:
            raise refuse(f"{version!r} is not one version") from None
    rest = line[match.end():]
    marker = None
    tokens = rest.split()
    if rest[:1] not in ("", " ", "\t", ";"):
        raise refuse(f"{tokens[0]!r} follows the pin")
    if tokens and tokens[0].startswith(";"):
        marker_tokens = []
        tokens[0] = tokens[0][1:]
        while tokens and not tokens[0].startswith("-"):
            marker_tokens.append(tokens.pop(0))
        text = " ".join(t for t in marker_tokens if t)
        try:
            marker = str(Marker(text))
        except InvalidMarker:
            raise refuse(f"{text!r} is not an environment marker") from None
    hashes = []
    for token in tokens:
        found = _HASH.fullmatch(token)
        if found:
            hashes.append(found["hex"])
        elif token.startswith("--hash=") and not token.startswith("--hash=sha256:"):
            raise refuse(f"{token!r}: hashes are sha256 only")
        elif token.startswith("--hash=sha256:"):
            raise refuse(f"{token!r}: a sha256 hash is 64 hex digits (lowercase)")
        else:
            raise refuse(f"{token!r} is neither a marker nor '--hash=sha256:<64 hex>'")
    extras = tuple(sorted(_normalise(e) for e in (match["extras"] or "").replace(" ", "").split(",") if e))
    return Pin(_normalise(match["name"]), version, number, extras, marker, tuple(hashes))


def parse_lock(text: str, where: str) -> list[Pin]:
    """The pins of a requirements.txt; anything but pins (markers and sha256 hashes allowed) is refused.

    Each logical line is tokenised whole: a URL, an option or a second requirement anywhere on it,
    even after a hash or a marker, is an error naming WHERE and the line. Every pin carries hashes, or
    none does. uv is never handed the bundle's file, only these pins rebuilt (canonical_lock)."""
    pins = [_parse_pin(number, line, where) for number, line in _logical_lines(text, where)]
    seen: dict[str, Pin] = {}
    for pin in pins:
        if pin.name in seen and seen[pin.name].version != pin.version:
            raise BundleError(f"{where} line {pin.line}: {pin.name} pinned twice "
                              f"({seen[pin.name].version} on line {seen[pin.name].line}, {pin.version})")
        seen[pin.name] = pin
    hashed = [pin for pin in pins if pin.hashes]
    if hashed:
        for pin in pins:
            if not pin.hashes:
                raise BundleError(f"{where} line {pin.line}: {pin.name}=={pin.version} has no --hash, while "
                                  f"line {hashed[0].line} has: hash every pin or none (--require-hashes)")
    return pins


def canonical_lock(pins: list[Pin]) -> str:
    """The requirements file uv installs: the parsed pins, one per line, nothing else."""
    return "".join(pin.requirement + "\n" for pin in pins)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PreparedEnvironment:
    key: str
    python: str  # the interpreter a bundle's children exec
    lock_digest: str
    built: bool  # True: this call built it (the task paid for it)
    build_seconds: float  # what the build took, whoever paid it
    installed_from: str  # "wheels" (offline, from the bundle) or "index"
    wheels_digest: str | None = None  # sha256 over the bundle's wheels/ (names and bytes); None: from an index

    def provenance(self) -> dict:
        return {"lock_digest": self.lock_digest, "wheels_digest": self.wheels_digest, "key": self.key,
                "built": self.built, "build_seconds": round(self.build_seconds, 3),
                "installed_from": self.installed_from}


class BundleEnvironments:
    """The worker's environments, one per (lock, interpreter); thread- and process-safe."""

    def __init__(self, cache_dir: Path, index_url: str = "", max_bytes: int = 1024 * 1024 * 1024,
                 base_python: str | None = None):
        if max_bytes <= 0:
            raise ValueError(f"bundle environments max_bytes={max_bytes!r} is invalid: allowed a positive number")
        self.root = Path(cache_dir) / ENVIRONMENTS_DIR
        self.index_url = index_url
        self.max_bytes = max_bytes
        self.base_python = base_python or sys.executable
        self._ready: dict[str, PreparedEnvironment] = {}
        self._in_use: dict[str, int] = {}  # key -> fd holding LOCK_SH on locks/<key>.use
        self._lock = threading.Lock()
        self._closed = False
        self._marked: dict[str, float] = {}  # key -> when this process last recorded a use (monotonic)
        # (lock bytes, install source, stat signature of wheels/) -> (key, wheels digest): wheels are
        # hashed again only when a file in wheels/ changed
        self._keys: dict[tuple, tuple[str, str | None]] = {}
        self.evictions = 0
        self.build_seconds: list[float] = []  # what each build of this instance took (bench, tests)

    def prepare(self, bundle_name: str, directory: Path) -> PreparedEnvironment | None:
        """The environment of the bundle in DIRECTORY (built on first use); None when it has no lock.
        A disk error (reading the bundle, writing the environments) is a BundleEnvironmentError that is
        not retryable: a rerun meets the same disk (uv's own failures say whether an index was involved)."""
        try:
            return self._prepare(bundle_name, Path(directory))
        except OSError as exc:
            raise BundleEnvironmentError(f"bundle {bundle_name!r}: cannot build its Python environment under "
                                         f"{self.root}: {type(exc).__name__}: {exc}") from None

    def _prepare(self, bundle_name: str, directory: Path) -> PreparedEnvironment | None:
        try:
            lock_bytes = (directory / LOCK_FILE).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        key, wheels_digest = self._key(lock_bytes, directory)
        with self._lock:
            ready = self._ready.get(key)
        if ready is not None and os.path.exists(ready.python):
            self._touch(key)
            return _reused(ready)
        where = f"bundle {bundle_name!r} {LOCK_FILE}"
        pins = parse_lock(lock_bytes.decode(errors="replace"), where)
        lock_sha = sha256_digest(lock_bytes)
        self._hold(key)  # from here on no other process evicts it
        with _flocked(self.root / "locks" / f"{key}.lock"):
            env_dir = self.root / key
            prepared = self._existing(env_dir, key)
            if prepared is None:
                prepared = self._build(bundle_name, directory, env_dir, key, lock_sha, wheels_digest, pins)
                self.build_seconds.append(prepared.build_seconds)
        with self._lock:
            self._ready[key] = prepared
            self._marked.pop(key, None)
        self._touch(key)
        if prepared.built:
            self._evict(keep=key)
        return prepared

    @property
    def builds(self) -> int:
        """Environments this instance built."""
        return len(self.build_seconds)

    def entries(self) -> dict[str, int]:
        """Built environments (key) and their sizes in bytes."""
        return complete_entries(self.root, MARKER)

    def close(self) -> None:
        """Release the environments this worker process used (they may be evicted once no one holds them)."""
        with self._lock:
            self._closed = True
            fds = list(self._in_use.values())
            self._in_use.clear()
            self._ready.clear()
        for fd in fds:
            os.close(fd)

    # -- internals -------------------------------------------------------------------------------------
    def _hold(self, key: str) -> None:
        """A shared lock on locks/<key>.use for as long as this worker process may use the environment."""
        with self._lock:
            if key in self._in_use:
                return
            if self._closed:
                raise BundleError("the worker's runtime is closing: no new bundle environments")
            path = self.root / "locks" / f"{key}.use"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while an evictor removes it: then it is rebuilt
            self._in_use[key] = fd

    def _touch(self, key: str) -> None:
        """Record a use for LRU eviction, at most every MARK_INTERVAL_S per environment and process."""
        now = time.monotonic()
        with self._lock:
            if now - self._marked.get(key, -MARK_INTERVAL_S) < MARK_INTERVAL_S:
                return
            self._marked[key] = now
        _mark_used(self.root / key)

    def _evict(self, keep: str) -> None:
        with _flocked(self.root / "locks" / "evict.lock"):
            sizes = self.entries()
            total = sum(sizes.values())
            for key in sorted((k for k in sizes if k != keep), key=lambda k: _last_used(self.root / k)):
                if total <= self.max_bytes:
                    break
                fd = os.open(self.root / "locks" / f"{key}.use", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live worker process uses it
                    (self.root / key / MARKER).unlink(missing_ok=True)  # first: a half-removed entry is rebuilt
                    shutil.rmtree(self.root / key, ignore_errors=True)
                finally:
                    os.close(fd)
                total -= sizes[key]
                self.evictions += 1
                log.info("Evicted bundle environment %s (%d bytes; environments now %d of %d bytes)",
                         key, sizes[key], total, self.max_bytes)

    def _key(self, lock_bytes: bytes, directory: Path) -> tuple[str, str | None]:
        """The environment's name, and the digest of the bundle's wheels. The name covers everything
        that decides what gets installed: the lock, the install source (the bundle's wheels and their
        bytes, or the package index), and the interpreter. With the lock alone, two bundles with the
        same unhashed lock and different wheels shared one environment."""
        wheels = directory / WHEELS_DIR
        source = "wheels" if wheels.is_dir() else f"index {self.index_url}"
        signature = (lock_bytes, source, _stat_signature(wheels) if wheels.is_dir() else ())
        with self._lock:
            known = self._keys.get(signature)
        if known is not None:
            return known
        wheels_digest = _wheels_digest(wheels) if wheels.is_dir() else None
        interpreter = f"{platform.python_implementation()}-{sys.version}-{platform.machine()}-" \
                      f"{os.path.realpath(self.base_python)}-{'|'.join(worker_site_dirs())}"
        parts = [KEY_VERSION, lock_bytes.hex(), source, wheels_digest or "", interpreter]
        key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
        with self._lock:
            self._keys[signature] = (key, wheels_digest)
        return key, wheels_digest

    def _source_shown(self, offline: bool) -> str:
        if offline:
            return "the bundle's wheels"
        return f"index {mask_credentials(self.index_url)}" if self.index_url else "uv's configured index"

    def _existing(self, env_dir: Path, key: str) -> PreparedEnvironment | None:
        marker = env_dir / MARKER
        python = env_dir / "bin" / "python"
        if not marker.is_file() or not python.exists():
            return None
        try:
            info = json.loads(marker.read_text())
            return PreparedEnvironment(key, str(python), info["lock_digest"], False,
                                       float(info["build_seconds"]), info["installed_from"],
                                       info.get("wheels_digest"))
        except (ValueError, KeyError, TypeError):
            return None  # a damaged marker: rebuilt

    def _build(self, bundle_name: str, directory: Path, env_dir: Path, key: str, lock_sha: str,
               wheels_digest: str | None, pins: list[Pin]) -> PreparedEnvironment:
        started = time.monotonic()
        shutil.rmtree(env_dir, ignore_errors=True)  # a half-built entry from a crash
        wheels = directory / WHEELS_DIR
        offline = wheels.is_dir()
        uv = _uv_binary(bundle_name)
        where = f"bundle {bundle_name!r}: building its Python environment ({LOCK_FILE} {lock_sha[:19]})"
        if offline:
            try:
                check_wheels_dir(wheels, f"bundle {bundle_name!r}")
            except BundleError as exc:
                raise BundleEnvironmentError(str(exc)) from None
        env = dict(os.environ, UV_NO_PROGRESS="1", UV_PYTHON_DOWNLOADS="never")
        _run([uv, "venv", "--quiet", "--python", self.base_python, str(env_dir)], env, where, False)
        python = env_dir / "bin" / "python"
        lock = env_dir / INSTALLED_LOCK  # the parsed pins, never the bundle's own file
        lock.write_text(canonical_lock(pins))
        # binary only (an sdist's build backend would run arbitrary code in the worker), the lock's pins
        # and nothing else (no resolution of dependencies: the lock must be complete, checked below),
        # every hash checked when the lock carries them
        install = [uv, "pip", "install", "--quiet", "--python", str(python), "--no-cache",
                   "--link-mode", "copy", "--no-build", "--no-deps", "-r", str(lock)]
        if pins and all(pin.hashes for pin in pins):
            install.append("--require-hashes")
        if offline:
            install += ["--offline", "--no-index", "--find-links", str(wheels)]
        elif self.index_url:
            # in uv's environment, not its command line, which every process of the pod can read
            env = _with_index(env, self.index_url)
        try:
            _run(install, env, where, retryable=not offline)
            # the environment's interpreter runs the installed wheels' .pth files: bundle code, which
            # gets no credentials (the children's rule, executors/base.py child_env)
            bundle_env = without_credentials(env)
            site_packages = _site_packages(python, bundle_env, where)
            (Path(site_packages) / WORKER_PTH).write_text(
                "".join(f"import site; site.addsitedir({d!r})\n" for d in worker_site_dirs())
            )
            _check(python, pins, bundle_env, where)
        except BaseException:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        source = "wheels" if offline else "index"
        info = {"lock_digest": lock_sha, "wheels_digest": wheels_digest, "build_seconds": seconds,
                "installed_from": source,
                "packages": [f"{p.name}=={p.version}" for p in pins], "base_python": self.base_python}
        tmp = env_dir / f".{MARKER}.tmp"
        tmp.write_text(json.dumps(info, sort_keys=True))
        os.replace(tmp, env_dir / MARKER)
        log.info("Bundle environment built for %s: %s (%d packages from %s) in %.2f s",
                 bundle_name, key, len(pins), self._source_shown(offline), seconds)
        return PreparedEnvironment(key, str(python), lock_sha, True, seconds, source, wheels_digest)


def _stat_signature(directory: Path) -> tuple:
    """What changes when any file in DIRECTORY is replaced or rewritten (ctime: even with its mtime reset)."""
    entries = []
    for path in sorted(directory.iterdir()):
        st = path.stat()
        entries.append((path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(entries)


def _wheels_digest(directory: Path) -> str:
    """sha256 over the names and bytes of the files in DIRECTORY (read in chunks)."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + b"\0")
        if path.is_file():
            digest.update(sha256_file(path).encode() + b"\0")
    return "sha256:" + digest.hexdigest()


def worker_site_dirs() -> list[str]:
    """The worker's site directories, which a bundle environment appends after its own."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


def _reused(prepared: PreparedEnvironment) -> PreparedEnvironment:
    if not prepared.built:
        return prepared
    return dataclasses.replace(prepared, built=False)


def _uv_binary(bundle_name: str) -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        raise BundleEnvironmentError(
            f"bundle {bundle_name!r} carries {LOCK_FILE} (its own Python environment), which needs the uv "
            f"installer in the worker: install modelops-dask[worker]"
        ) from None
    return find_uv_bin()


def _run(cmd: list[str], env: dict, where: str, retryable: bool) -> str:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BundleEnvironmentError(f"{where}: {cmd[1]} {cmd[2]} took over {INSTALL_TIMEOUT_S:.0f} s",
                                retryable) from None
    if done.returncode != 0:
        output = mask_credentials((done.stderr or done.stdout).strip()[-2000:])
        raise BundleEnvironmentError(f"{where}: `uv {' '.join(cmd[1:3])}` failed (exit {done.returncode}): {output}",
                                retryable)
    return done.stdout


def _with_index(env: dict, index_url: str) -> dict:
    """ENV with INDEX_URL as uv's index (MODELOPS_PACKAGE_INDEX_URL wins over uv's own variables)."""
    env = {k: v for k, v in env.items() if k not in ("UV_DEFAULT_INDEX", "UV_INDEX")}
    env["UV_INDEX_URL"] = index_url
    return env


def _site_packages(python: Path, env: dict, where: str) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return _run([str(python), "-I", "-c", code], env, where, False).strip()


_CHECK = """
import json, sys
from importlib.metadata import version, requires, PackageNotFoundError
from packaging.requirements import Requirement
import modelops.executors.child.runner
wrong, missing = {}, []
pins = json.loads(sys.argv[1])
for name, pinned in pins.items():
    try:
        found = version(name)
    except PackageNotFoundError:
        found = None
    if found != pinned:
        wrong[name] = found
        continue
    for text in requires(name) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            missing.append([name, text, have])
print(json.dumps({"wrong": wrong, "missing": missing}))
"""


def _check(python: Path, pins: list[Pin], env: dict, where: str) -> None:
    """The environment imports the child runtime, every pinned version is the one it sees, and every
    dependency of a pinned package is satisfied by the lock or the worker's image (uv installs with
    --no-deps: a dependency the lock forgot is an error, never a silent unpinned install)."""
    out = _run([str(python), "-c", _CHECK, json.dumps({p.name: p.version for p in pins})], env, where, False)
    report = json.loads(out.strip().splitlines()[-1])
    if report["wrong"]:
        detail = ", ".join(f"{name}: pinned {dict((p.name, p.version) for p in pins)[name]}, found {found}"
                           for name, found in sorted(report["wrong"].items()))
        raise BundleEnvironmentError(f"{where}: the built environment does not hold the lock's versions ({detail})")
    if report["missing"]:
        detail = "; ".join(f"{name} requires {req}, found {have or 'nothing'}" for name, req, have in report["missing"])
        raise BundleEnvironmentError(f"{where}: the lock is incomplete: {detail}, which is not in the lock nor in "
                                     f"the worker's image; pin every dependency (e.g. `uv pip compile "
                                     f"--generate-hashes`)")


def check_wheels_dir(wheels: Path, where: str) -> list[Path]:
    """The wheels in a bundle's wheels/; anything else there (an sdist, whose build backend an installer
    would run, a directory, a link) is an error naming each file. Used by push and by workers."""
    found, refused = [], []
    for path in sorted(wheels.iterdir()):
        if path.name.endswith(".whl") and path.is_file() and not path.is_symlink():
            found.append(path)
        else:
            refused.append(f"{WHEELS_DIR}/{path.name}")
    if refused:
        raise BundleError(f"{where}: {', '.join(refused)} in {WHEELS_DIR}/ {'is' if len(refused) == 1 else 'are'} "
                          f"not allowed: {WHEELS_DIR}/ holds built wheels (*.whl) only, installed without building "
                          f"anything")
    return found


@contextmanager
def _flocked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
