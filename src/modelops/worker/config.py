"""Worker runtime configuration, read only from the worker's own environment.

The executor a worker runs must come from the worker's environment (its pod
spec), never from a client. Every rule here fails loudly: an unknown value is
an error naming the variable, the value and what is allowed; nothing falls back.
The variables, their types, defaults and parsers are defined once, in `modelops.settings`.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, create_model

from modelops.settings import (
    BUNDLE_CACHE_DIR_VARIABLE,
    BUNDLES_DIR_VARIABLE,
    COLD_PRELOAD_MODULES_VARIABLE,
    KNOWN_VARS,
    PREFIX,
    SETTINGS,
    BundleSource,
    ConfigError,
    mask_credentials,
)

logger = logging.getLogger("modelops.config")

# the settings RuntimeConfig holds (the entrypoint reads its own, e.g. MODELOPS_ENTRYPOINT_NO_INIT)
WORKER_SETTINGS = tuple(s for s in SETTINGS if s.reader == "worker")


class _RuntimeConfigBase(BaseModel):
    """The effective configuration of one worker, as the worker sees it. Its fields come from
    `modelops.settings.SETTINGS` (one per worker setting: name, type, default)."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeConfig:
        """Build the config from ``env`` (default ``os.environ``); raise ConfigError on bad input."""
        env = os.environ if env is None else env
        warn_unknown_variables(env)
        fields = {s.field: s.read(env) for s in WORKER_SETTINGS if any(n in env for n in s.names)}
        config = cls(**fields)
        config.check_bundles_dir()
        config.check_bundle_cache_dir()
        config.check_preload_modules()
        return config

    def check_preload_modules(self) -> None:
        """A preload module that is not installed would kill the worker after Dask started
        (with a long nanny traceback): fail here, before Dask, naming the module."""
        for name in self.cold_preload_modules:
            problem = module_problem(name)
            if problem:
                raise ConfigError(
                    COLD_PRELOAD_MODULES_VARIABLE,
                    ",".join(self.cold_preload_modules),
                    "modules installed in the worker's environment",
                    f"{name!r}: {problem}",
                )

    def check_bundles_dir(self) -> None:
        """A file-bundle worker without its bundles directory could run nothing: fail at start."""
        if self.bundle_source is BundleSource.FILE and not self.bundles_dir.is_dir():
            raise ConfigError(
                BUNDLES_DIR_VARIABLE,
                str(self.bundles_dir),
                "an existing directory when MODELOPS_BUNDLE_SOURCE=file",
                "directory not found",
            )

    def check_bundle_cache_dir(self) -> None:
        """An OCI-bundle worker must be able to write its cache (in a pod: under /tmp or a volume)."""
        if self.bundle_source is not BundleSource.OCI:
            return
        try:
            self.bundle_cache_dir.mkdir(parents=True, exist_ok=True)
            problem = None if os.access(self.bundle_cache_dir, os.W_OK | os.X_OK) else "not writable"
        except OSError as exc:
            problem = f"cannot create it: {exc.strerror or exc}"
        if problem:
            raise ConfigError(BUNDLE_CACHE_DIR_VARIABLE, str(self.bundle_cache_dir),
                              "a writable directory when MODELOPS_BUNDLE_SOURCE=oci", problem)

    def summary(self) -> dict[str, object]:
        """The config as JSON values, URL credentials masked (it reaches clients and terminals)."""
        return {key: mask_credentials(value) if isinstance(value, str) else value
                for key, value in self.model_dump(mode="json").items()}


RuntimeConfig = create_model(
    "RuntimeConfig",
    __base__=_RuntimeConfigBase,
    __module__=__name__,
    **{s.field: (s.type, s.default) for s in WORKER_SETTINGS},
)


def module_problem(name: str) -> str | None:
    """Why module `name` cannot be imported here, or None. Found with finders only: neither the
    module nor its parent packages are imported (no heavy code, no threads in the worker)."""
    import importlib.machinery
    import importlib.util

    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError) as exc:
        return f"cannot look it up: {exc}"
    for depth in range(1, len(parts)):
        if spec is None:
            break
        if spec.submodule_search_locations is None:
            return f"{'.'.join(parts[:depth])!r} is a module, not a package"
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), spec.submodule_search_locations)
    if spec is None:
        return "not installed (no such module)"
    return None


def warn_unknown_variables(env: Mapping[str, str]) -> list[str]:
    """Warn about MODELOPS_* names this worker does not read, naming the closest known one."""
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in KNOWN_VARS)
    for name in unknown:
        # compare without the shared prefix, which would make every name look close
        suffixes = {known[len(PREFIX) :]: known for known in KNOWN_VARS}
        close = difflib.get_close_matches(name[len(PREFIX) :], suffixes, n=1, cutoff=0.6)
        hint = f"; did you mean {suffixes[close[0]]}?" if close else ""
        logger.warning("Unknown variable %s is ignored%s", name, hint)
    return unknown
