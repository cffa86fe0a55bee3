"""Find bundles by name under the worker's configured source.

Source `file`: `$MODELOPS_BUNDLES_DIR/<name>/bundle.json`. Source `image`: the
name is an importable package/module already installed in the worker's image.
Names starting with `modelops:` are bundles shipped inside this package (the
`mops doctor` probe) and resolve the same way under either source.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

from modelops.bundles.bundle import Bundle, BundleError, read_manifest
from modelops.bundles.digest import content_digest, stat_signature

BUILTIN_PREFIX = "modelops:"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_bundles"


class BundleResolver:
    def __init__(self, source: str, bundles_dir: Path):
        self.source = source
        self.bundles_dir = Path(bundles_dir)
        self._cache: dict[str, tuple[tuple, Bundle]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str) -> Bundle:
        if name.startswith(BUILTIN_PREFIX):
            return self._from_directory(name, BUILTIN_DIR / name[len(BUILTIN_PREFIX) :], "builtin")
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


def _installed_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unversioned"
