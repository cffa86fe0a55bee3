"""Worker runtime configuration, read only from the worker's own environment.

The executor a worker runs must come from the worker's environment (its pod
spec), never from a client. Every rule here fails loudly: an unknown value is
an error naming the variable, the value and what is allowed; nothing falls back.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger("modelops.config")

PREFIX = "MODELOPS_"


class ExecutorType(str, Enum):
    DIRECT = "direct"
    ISOLATED_WARM = "isolated_warm"
    COLD = "cold"


class ColdStart(str, Enum):
    FORK = "fork"
    SPAWN = "spawn"


class BundleSource(str, Enum):
    FILE = "file"
    IMAGE = "image"


class ImportRng(str, Enum):
    """What cold fork does with a bundle that creates random generators at import."""

    REFUSE = "refuse"  # its tasks fail, naming the generators and the fix
    SPAWN = "spawn"  # its tasks run under cold spawn (a new interpreter per task)


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class ConfigError(ValueError):
    """An invalid worker environment. The message names variable, value and allowed values."""

    def __init__(self, variable: str, value: str, allowed: str, detail: str = ""):
        self.variable = variable
        self.value = value
        self.allowed = allowed
        msg = f"{variable}={value!r} is invalid: allowed {allowed}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


# The variables this worker reads; anything else with the prefix is a typo candidate.
EXECUTOR_VARS = ("MODELOPS_EXECUTOR_TYPE", "MODELOPS_EXECUTOR")
KNOWN_VARS = (
    *EXECUTOR_VARS,
    "MODELOPS_COLD_START",
    "MODELOPS_TASK_TIMEOUT_SECONDS",
    "MODELOPS_WARM_MAX_TASKS_PER_PROCESS",
    "MODELOPS_BUNDLE_SOURCE",
    "MODELOPS_BUNDLES_DIR",
    "MODELOPS_LOG_LEVEL",
    "MODELOPS_WORKER_GROUP",
    "MODELOPS_COLD_PRELOAD_MODULES",
    "MODELOPS_TASK_MEMORY_LIMIT_MB",
    "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS",
    "MODELOPS_COLD_IMPORT_RNG",
)

DEFAULT_BUNDLE_IMPORT_TIMEOUT_S = 300.0

def _parse_enum(variable: str, raw: str, enum: type[Enum], upper: bool = False) -> Enum:
    value = raw.strip().upper() if upper else raw.strip().lower()
    for member in enum:
        if member.value == value:
            return member
    allowed = ", ".join(m.value for m in enum)
    raise ConfigError(variable, raw, f"one of {allowed}")


def _parse_number(variable: str, raw: str, *, integer: bool, positive: bool = False) -> float | int:
    text = raw.strip()
    if positive:
        kind = "an integer > 0" if integer else "a number > 0"
    else:
        kind = "an integer >= 0" if integer else "a number >= 0 (0 = no limit)"
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise ConfigError(variable, raw, kind) from None
    if (not integer and not math.isfinite(value)) or value < 0 or (positive and value == 0):
        raise ConfigError(variable, raw, kind)
    return value


class RuntimeConfig(BaseModel):
    """The effective configuration of one worker, as the worker sees it."""

    model_config = ConfigDict(frozen=True)

    executor: ExecutorType = ExecutorType.ISOLATED_WARM
    cold_start: ColdStart = ColdStart.FORK
    task_timeout_seconds: float = 0.0
    warm_max_tasks_per_process: int = 0
    bundle_source: BundleSource = BundleSource.FILE
    bundles_dir: Path = Path("/opt/modelops/bundles")
    log_level: LogLevel = LogLevel.INFO
    worker_group: str = "default"
    cold_preload_modules: tuple[str, ...] = ()
    task_memory_limit_mb: int = 0
    bundle_import_timeout_seconds: float = DEFAULT_BUNDLE_IMPORT_TIMEOUT_S
    cold_import_rng: ImportRng = ImportRng.REFUSE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeConfig:
        """Build the config from ``env`` (default ``os.environ``); raise ConfigError on bad input."""
        env = os.environ if env is None else env
        warn_unknown_variables(env)
        fields: dict[str, object] = {}

        executor = _executor_from_env(env)
        if executor is not None:
            fields["executor"] = executor
        if (raw := env.get("MODELOPS_COLD_START")) is not None:
            fields["cold_start"] = _parse_enum("MODELOPS_COLD_START", raw, ColdStart)
        if (raw := env.get("MODELOPS_TASK_TIMEOUT_SECONDS")) is not None:
            fields["task_timeout_seconds"] = _parse_number(
                "MODELOPS_TASK_TIMEOUT_SECONDS", raw, integer=False
            )
        if (raw := env.get("MODELOPS_WARM_MAX_TASKS_PER_PROCESS")) is not None:
            fields["warm_max_tasks_per_process"] = _parse_number(
                "MODELOPS_WARM_MAX_TASKS_PER_PROCESS", raw, integer=True
            )
        if (raw := env.get("MODELOPS_BUNDLE_SOURCE")) is not None:
            fields["bundle_source"] = _parse_enum("MODELOPS_BUNDLE_SOURCE", raw, BundleSource)
        if (raw := env.get("MODELOPS_BUNDLES_DIR")) is not None:
            if not raw.strip():
                raise ConfigError("MODELOPS_BUNDLES_DIR", raw, "a directory path")
            fields["bundles_dir"] = Path(raw.strip())
        if (raw := env.get("MODELOPS_LOG_LEVEL")) is not None:
            fields["log_level"] = _parse_enum("MODELOPS_LOG_LEVEL", raw, LogLevel, upper=True)
        if (raw := env.get("MODELOPS_WORKER_GROUP")) is not None:
            group = raw.strip()
            if not group or any(c.isspace() for c in group):
                raise ConfigError("MODELOPS_WORKER_GROUP", raw, "a non-empty name without spaces")
            fields["worker_group"] = group
        if (raw := env.get("MODELOPS_COLD_PRELOAD_MODULES")) is not None:
            fields["cold_preload_modules"] = _parse_module_list(raw)
        if (raw := env.get("MODELOPS_TASK_MEMORY_LIMIT_MB")) is not None:
            fields["task_memory_limit_mb"] = _parse_number(
                "MODELOPS_TASK_MEMORY_LIMIT_MB", raw, integer=True
            )

        if (raw := env.get("MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS")) is not None:
            fields["bundle_import_timeout_seconds"] = _parse_number(
                "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS", raw, integer=False, positive=True
            )
        if (raw := env.get("MODELOPS_COLD_IMPORT_RNG")) is not None:
            fields["cold_import_rng"] = _parse_enum("MODELOPS_COLD_IMPORT_RNG", raw, ImportRng)

        config = cls(**fields)
        config.check_bundles_dir()
        config.check_preload_modules()
        return config

    def check_preload_modules(self) -> None:
        """A preload module that is not installed would kill the worker after Dask started
        (with a long nanny traceback): fail here, before Dask, naming the module."""
        for name in self.cold_preload_modules:
            problem = module_problem(name)
            if problem:
                raise ConfigError(
                    "MODELOPS_COLD_PRELOAD_MODULES",
                    ",".join(self.cold_preload_modules),
                    "modules installed in the worker's environment",
                    f"{name!r}: {problem}",
                )

    def check_bundles_dir(self) -> None:
        """A file-bundle worker without its bundles directory could run nothing: fail at start."""
        if self.bundle_source is BundleSource.FILE and not self.bundles_dir.is_dir():
            raise ConfigError(
                "MODELOPS_BUNDLES_DIR",
                str(self.bundles_dir),
                "an existing directory when MODELOPS_BUNDLE_SOURCE=file",
                "directory not found",
            )

    def as_env(self) -> dict[str, str]:
        """The env that reproduces this config (used to start local workers exactly as a pod)."""
        return {
            "MODELOPS_EXECUTOR_TYPE": self.executor.value,
            "MODELOPS_COLD_START": self.cold_start.value,
            "MODELOPS_TASK_TIMEOUT_SECONDS": repr(self.task_timeout_seconds),
            "MODELOPS_WARM_MAX_TASKS_PER_PROCESS": str(self.warm_max_tasks_per_process),
            "MODELOPS_BUNDLE_SOURCE": self.bundle_source.value,
            "MODELOPS_BUNDLES_DIR": str(self.bundles_dir),
            "MODELOPS_LOG_LEVEL": self.log_level.value,
            "MODELOPS_WORKER_GROUP": self.worker_group,
            "MODELOPS_COLD_PRELOAD_MODULES": ",".join(self.cold_preload_modules),
            "MODELOPS_TASK_MEMORY_LIMIT_MB": str(self.task_memory_limit_mb),
            "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS": repr(self.bundle_import_timeout_seconds),
            "MODELOPS_COLD_IMPORT_RNG": self.cold_import_rng.value,
        }

    def summary(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def _executor_from_env(env: Mapping[str, str]) -> ExecutorType | None:
    parsed = {
        var: _parse_enum(var, env[var], ExecutorType) for var in EXECUTOR_VARS if var in env
    }
    if len(set(parsed.values())) > 1:
        a, b = EXECUTOR_VARS
        allowed = ", ".join(m.value for m in ExecutorType)
        raise ConfigError(
            f"{a}/{b}",
            f"{env[a]}/{env[b]}",
            f"one of {allowed}, the same in both",
            "the two variables disagree; set only MODELOPS_EXECUTOR_TYPE",
        )
    return next(iter(parsed.values()), None)


def _parse_module_list(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                "MODELOPS_COLD_PRELOAD_MODULES", raw, "a comma-separated list of module names"
            )
    return names


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
