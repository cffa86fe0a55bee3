"""Find bundles by name under the worker's configured source.

Source `file`: `$MODELOPS_BUNDLES_DIR/<name>/bundle.json`. Source `image`: the
name is an importable package/module already installed in the worker's image.
Source `oci`: the name is a digest-pinned OCI reference (`HOST[:PORT]/REPO@sha256:...`,
told apart from a plain name by its `/`), pulled once into the worker's verified
cache (`bundles/oci_source.py`); the client pins tags at submit time, so a tag
reaching a worker is refused. Names starting with `modelops:` are bundles shipped
inside this package (the `mops doctor` probe) and resolve the same way under any source.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from modelops.bundles.bundle import Bundle, BundleError, read_manifest
from modelops.bundles.digest import content_digest, stat_signature

if TYPE_CHECKING:
    from modelops.bundles.oci_source import OciBundleCache

BUILTIN_PREFIX = "modelops:"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_bundles"


OCI_SOURCE = "oci"
MB = 1024 * 1024


def is_oci_reference(name: str) -> bool:
    """A study's `bundle` names an OCI artifact when it has a `/` (plain names and modules never do)."""
    return "/" in name


# One OCI bundle cache per worker process (and cache directory): every runtime the plugin builds
# in this process shares its pull locks and counters instead of opening its own.
_oci_caches: dict[tuple, OciBundleCache] = {}
_oci_caches_lock = threading.Lock()


def shared_oci_cache(cache_dir: Path, max_bytes: int, plain_http: bool | None) -> OciBundleCache:
    from modelops.bundles.oci import RegistryClient
    from modelops.bundles.oci_source import OciBundleCache

    key = (str(Path(cache_dir).resolve()), max_bytes, plain_http)
    with _oci_caches_lock:
        if key not in _oci_caches:
            _oci_caches[key] = OciBundleCache(Path(cache_dir), max_bytes, RegistryClient(plain_http=plain_http))
        return _oci_caches[key]


def close_shared_oci_caches() -> None:
    """Release what this process's OCI caches hold (bundles in use), as the process's exit would."""
    with _oci_caches_lock:
        caches = list(_oci_caches.values())
        _oci_caches.clear()
    for cache in caches:
        cache.release()


class BundleResolver:
    def __init__(self, source: str, bundles_dir: Path, oci_cache: OciBundleCache | None = None):
        if source == OCI_SOURCE and oci_cache is None:
            raise ValueError("BundleResolver(source='oci') needs an oci_cache (BundleResolver.for_config)")
        self.source = source
        self.bundles_dir = Path(bundles_dir)
        self.oci_cache = oci_cache
        self._cache: dict[str, tuple[tuple, Bundle]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config) -> BundleResolver:
        """The resolver a worker's RuntimeConfig asks for (with the process's shared OCI cache)."""
        source = config.bundle_source.value
        cache = None
        if source == OCI_SOURCE:
            cache = shared_oci_cache(config.bundle_cache_dir, config.bundle_cache_max_mb * MB,
                                     config.registry_plain_http.as_option())
        return cls(source, config.bundles_dir, cache)

    def resolve(self, name: str) -> Bundle:
        if name.startswith(BUILTIN_PREFIX):
            return self._from_directory(name, BUILTIN_DIR / name[len(BUILTIN_PREFIX) :], "builtin")
        if self.source == OCI_SOURCE:
            return self._from_oci(name)
        if is_oci_reference(name) and _parses_as_reference(name):
            raise BundleError(
                f"bundle {name!r} is an OCI reference, but this worker's MODELOPS_BUNDLE_SOURCE="
                f"{self.source}: OCI bundles need workers with MODELOPS_BUNDLE_SOURCE=oci"
            )
        if self.source == "file":
            if not name or "/" in name or name.startswith("."):
                raise BundleError(f"bundle name {name!r} is not a plain directory name")
            return self._from_directory(name, self.bundles_dir / name, "file")
        return self._from_image(name)

    def _cached(self, key: str, root: Path, build) -> Bundle:
        signature = stat_signature(root)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] == signature:
                return hit[1]
        bundle = build(content_digest(root))
        with self._lock:
            self._cache[key] = (signature, bundle)
        return bundle

    def _from_directory(self, name: str, directory: Path, source: str) -> Bundle:
        if not directory.is_dir():
            raise BundleError(
                f"bundle {name!r} not found: no directory {directory} "
                f"(MODELOPS_BUNDLE_SOURCE={self.source}, MODELOPS_BUNDLES_DIR={self.bundles_dir})"
            )
        manifest = read_manifest(directory)

        def build(digest: str) -> Bundle:
            return Bundle(
                name=name,
                version=manifest["version"],
                entrypoint=manifest["entrypoint"],
                source=source,
                digest=digest,
                import_path=str(directory),
                warmup=manifest["warmup"],
            )

        return self._cached(f"dir:{directory}", directory, build)

    def _from_oci(self, name: str) -> Bundle:
        from modelops.bundles.oci import REFERENCE_FORM, RegistryError, parse_reference
        from modelops.bundles.oci_source import OciBundleError

        if not is_oci_reference(name):
            raise BundleError(
                f"bundle {name!r} is a plain name, but this worker's MODELOPS_BUNDLE_SOURCE=oci runs "
                f"OCI artifacts only: name the bundle as {REFERENCE_FORM} (pushed with `mops bundle push`)"
            )
        try:
            reference = parse_reference(name)
        except RegistryError as exc:
            raise OciBundleError(str(exc)) from None
        if not reference.digest:
            raise OciBundleError(
                f"bundle {name!r}: a tag reached this worker, which runs digest-pinned references only "
                f"(HOST[:PORT]/REPO@sha256:DIGEST); submit the study with `mops run` or pin it with "
                f"modelops.services.bundle_pinning.pin_study, which resolve the tag once at submit time"
            )
        return self.oci_cache.get(reference).bundle

    def _from_image(self, name: str) -> Bundle:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise BundleError(f"bundle {name!r} is not importable in this image: {exc}") from None
        if spec is None or spec.origin is None:
            raise BundleError(
                f"bundle {name!r} not found: no module {name!r} installed in this image "
                f"(MODELOPS_BUNDLE_SOURCE=image)"
            )
        origin = Path(spec.origin)
        root = origin.parent if spec.submodule_search_locations else origin
        version = _installed_version(name)

        def build(digest: str) -> Bundle:
            return Bundle(
                name=name,
                version=version,
                entrypoint=f"{name}:simulate",
                source="image",
                digest=digest,
                import_path=None,
            )

        return self._cached(f"image:{name}", root, build)


def _parses_as_reference(name: str) -> bool:
    from modelops.bundles.oci import RegistryError, parse_reference

    try:
        parse_reference(name)
    except RegistryError:
        return False
    return True


def _installed_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unversioned"
