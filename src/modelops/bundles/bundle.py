"""A resolved bundle and how to load its entrypoint."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelops.bundles.warmup import FIELD as WARMUP_FIELD
from modelops.bundles.warmup import WarmupError, parse_warmup
from modelops.json_files import read_json

MANIFEST = "bundle.json"


class BundleError(Exception):
    """A bundle that cannot be found, read or loaded; the message says which and why."""


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    entrypoint: str
    source: str
    digest: str
    import_path: str | None  # directory to put on sys.path, None for code already importable
    # bundle.json "warmup" (bundles/warmup.py), run once by each cold-fork zygote; the
    # digest covers bundle.json, so equality by the other fields is enough
    warmup: dict | None = field(default=None, compare=False)
    # the interpreter this bundle's children exec: its own environment's (bundles/environments.py,
    # set by the worker for a bundle with a requirements.txt), None for the worker's own
    python: str | None = field(default=None, compare=False)

    @property
    def child_python(self) -> str:
        return self.python or sys.executable

    def load_entrypoint(self, entrypoint: str | None = None) -> Callable:
        """Import `module:function` (adding the bundle's directory to sys.path first)."""
        spec = entrypoint or self.entrypoint
        module_name, function_name = split_entrypoint(spec, where=f"bundle {self.name!r}")
        if self.import_path:
            # no bytecode next to a bundle's files: the digest does not cover it (see child_env)
            sys.dont_write_bytecode = True
            if self.import_path not in sys.path:
                sys.path.insert(0, self.import_path)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise BundleError(
                f"bundle {self.name!r}: entrypoint {spec!r}: cannot import module "
                f"{module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        function = getattr(module, function_name, None)
        if not callable(function):
            raise BundleError(
                f"bundle {self.name!r}: entrypoint {spec!r}: module {module_name!r} has no "
                f"callable {function_name!r}"
            )
        return function


def split_entrypoint(spec: str, where: str) -> tuple[str, str]:
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise BundleError(f"{where}: entrypoint {spec!r} is not of the form 'module:function'")
    return module_name, function_name


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    data = read_json(path, "bundle manifest", BundleError)
    if not isinstance(data, dict):
        raise BundleError(f"bundle manifest {path}: expected an object with name, version, entrypoint")
    for field in ("name", "version", "entrypoint"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            raise BundleError(
                f"bundle manifest {path}: field {field!r} is missing or not a non-empty string"
            )
    split_entrypoint(data["entrypoint"], where=f"bundle manifest {path}")
    try:
        data[WARMUP_FIELD] = parse_warmup(data.get(WARMUP_FIELD), where=f"bundle manifest {path}")
    except WarmupError as exc:
        raise BundleError(str(exc)) from None
    return data
