"""The registry of modelops' environment settings: every `MODELOPS_*` variable, defined once.

Each `Setting` says its variable (and synonyms), type, default, allowed values, description and
parser. `modelops.worker.config.RuntimeConfig` is built from it; the README's settings table is
generated from it (`python -m modelops.settings --check README.md`); a test checks the chart's
reserved-variable list against it. It sits below both the worker and the executors, and imports
neither.

Every parser fails loudly: an unknown value is a ConfigError naming the variable, the value and
what is allowed. Values are normalised (case, surrounding space); nothing falls back.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

PREFIX = "MODELOPS_"
# The names other modules write: each defined here once and used by its Setting below
# (tests/unit/test_settings_registry.py fails on a setting's name written as a literal elsewhere).
EXECUTOR_TYPE_VARIABLE = "MODELOPS_EXECUTOR_TYPE"
COLD_START_VARIABLE = "MODELOPS_COLD_START"
BUNDLES_DIR_VARIABLE = "MODELOPS_BUNDLES_DIR"
BUNDLE_CACHE_DIR_VARIABLE = "MODELOPS_BUNDLE_CACHE_DIR"
COLD_PRELOAD_MODULES_VARIABLE = "MODELOPS_COLD_PRELOAD_MODULES"
REGISTRY_PLAIN_HTTP_VARIABLE = "MODELOPS_REGISTRY_PLAIN_HTTP"
ENTRYPOINT_NO_INIT_VARIABLE = "MODELOPS_ENTRYPOINT_NO_INIT"


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
    OCI = "oci"


class PlainHttp(str, Enum):
    """How the worker talks to an OCI registry: `auto` is plain HTTP for loopback hosts only."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"

    def as_option(self) -> bool | None:
        """RegistryClient's `plain_http`: None (auto), True or False."""
        return {PlainHttp.AUTO: None, PlainHttp.TRUE: True, PlainHttp.FALSE: False}[self]


class ImportRng(str, Enum):
    """What cold fork does with a bundle that creates random generators at import."""

    REFUSE = "refuse"  # its tasks fail, naming the generators and the fix
    SPAWN = "spawn"  # its tasks run under cold spawn (a new interpreter per task)


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


# scheme://userinfo@ : the userinfo runs to the last @ before the host (an unescaped @ in a password too)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def mask_credentials(text: str) -> str:
    """TEXT with the credentials of every URL in it masked: https://user:secret@host/... becomes
    https://user:***@host/..., and https://token@host/... becomes https://***@host/.... The one masking
    function: whatever may show a package index URL (logs, describe_worker, `mops config check`, errors)
    passes it through here."""

    def mask(match: re.Match) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"

    return _URL_CREDENTIALS.sub(mask, text)


# Variables that carry registry or package-index credentials, or say where they are: the worker needs
# them (pulls, uv), no process running a bundle's code does (executors/base.py child_env).
CREDENTIAL_VARIABLES = frozenset({
    "DOCKER_CONFIG", "DOCKER_AUTH_CONFIG", "REGISTRY_AUTH_FILE",  # docker, oras, podman/skopeo
    "MODELOPS_PACKAGE_INDEX_URL",
    "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_FIND_LINKS",
    "UV_PUBLISH_USERNAME", "UV_PUBLISH_PASSWORD", "UV_PUBLISH_TOKEN", "UV_KEYRING_PROVIDER",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_CLIENT_CERT",
})
_CREDENTIAL_PATTERN = re.compile(r"UV_INDEX_[A-Za-z0-9_]+_(USERNAME|PASSWORD)")


def without_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """ENV without the variables that carry registry or package-index credentials."""
    return {name: value for name, value in env.items()
            if name not in CREDENTIAL_VARIABLES and not _CREDENTIAL_PATTERN.fullmatch(name)}


class ConfigError(ValueError):
    """An invalid environment. The message names variable, value (credentials masked) and allowed values."""

    def __init__(self, variable: str, value: str, allowed: str, detail: str = ""):
        self.variable = variable
        value = mask_credentials(value)
        self.value = value
        self.allowed = allowed
        msg = f"{variable}={value!r} is invalid: allowed {allowed}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


# ---- parsers: (variable, raw) -> value ------------------------------------------------------
Parser = Callable[[str, str], Any]


def enum_parser(enum: type[Enum], upper: bool = False) -> Parser:
    def parse(variable: str, raw: str) -> Enum:
        value = raw.strip().upper() if upper else raw.strip().lower()
        for member in enum:
            if member.value == value:
                return member
        raise ConfigError(variable, raw, f"one of {', '.join(m.value for m in enum)}")

    return parse


def number_parser(*, integer: bool, positive: bool = False) -> Parser:
    if positive:
        kind = "an integer > 0" if integer else "a number > 0"
    else:
        kind = "an integer >= 0" if integer else "a number >= 0 (0 = no limit)"

    def parse(variable: str, raw: str) -> float | int:
        text = raw.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise ConfigError(variable, raw, kind) from None
        if (not integer and not math.isfinite(value)) or value < 0 or (positive and value == 0):
            raise ConfigError(variable, raw, kind)
        return value

    return parse


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def parse_bool(variable: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(variable, raw, f"a boolean: one of {', '.join(TRUE_WORDS)} or {', '.join(w for w in FALSE_WORDS if w)}")


def parse_plain_http(variable: str, raw: str) -> PlainHttp:
    if raw.strip().lower() == PlainHttp.AUTO.value:
        return PlainHttp.AUTO
    try:
        return PlainHttp.TRUE if parse_bool(variable, raw) else PlainHttp.FALSE
    except ConfigError:
        raise ConfigError(variable, raw, f"`auto` or a boolean ({', '.join(TRUE_WORDS)}; "
                                         f"{', '.join(w for w in FALSE_WORDS if w)})") from None


def parse_path(variable: str, raw: str) -> Path:
    if not raw.strip():
        raise ConfigError(variable, raw, "a directory path")
    return Path(raw.strip())


def parse_url(variable: str, raw: str) -> str:
    url = raw.strip()
    if url and (not url.startswith(("http://", "https://", "file://")) or any(c.isspace() for c in url)):
        raise ConfigError(variable, raw, "an http://, https:// or file:// URL, or empty")
    return url


def parse_group(variable: str, raw: str) -> str:
    group = raw.strip()
    if not group or any(c.isspace() for c in group):
        raise ConfigError(variable, raw, "a non-empty name without spaces")
    return group


def parse_module_list(variable: str, raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(variable, raw, "a comma-separated list of module names")
    return names


@dataclass(frozen=True)
class GroupSpec:
    """An autoscaled worker group of the release, as the scheduler knows it (the chart writes them into
    MODELOPS_WORKER_GROUPS): the scheduler tells "no such group" from "a group at zero pods", and
    computes the pods each group needs (modelops.scheduler.demand)."""

    name: str
    executor: ExecutorType
    nworkers: int  # Dask worker processes per pod
    nthreads: int  # threads per worker process: one task each
    min: int  # replicas (pods) an autoscaler keeps at least
    max: int  # and at most; 0: a group no autoscaler scales (its replicas are fixed)

    @property
    def autoscaled(self) -> bool:
        return self.max > 0

    @property
    def slots(self) -> int:
        """Tasks one pod runs at once."""
        return self.nworkers * self.nthreads


WORKER_GROUPS_VARIABLE = "MODELOPS_WORKER_GROUPS"  # the scheduler's; other modules name it through this
GROUP_KEYS = ("name", "executor", "nworkers", "nthreads", "min", "max")
GROUPS_ALLOWED = ("a JSON list of objects {" + ", ".join(f'"{k}"' for k in GROUP_KEYS) + "}: a name without "
                  f"spaces, used once; an executor ({', '.join(m.value for m in ExecutorType)}); nworkers, "
                  "nthreads >= 1; 0 <= min <= max (max 0: a group no autoscaler scales)")


def parse_worker_groups(variable: str, raw: str) -> tuple[GroupSpec, ...]:
    def bad(detail: str) -> ConfigError:
        return ConfigError(variable, raw, GROUPS_ALLOWED, detail)

    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise bad(f"not JSON: {exc}") from None
    if not isinstance(items, list):
        raise bad("not a list")
    groups: list[GroupSpec] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != set(GROUP_KEYS):
            keys = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise bad(f"entry {i} has {keys}, not the keys {', '.join(GROUP_KEYS)}")
        name = item["name"]
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            raise bad(f"entry {i}: name {name!r} is not a name without spaces")
        if name in (g.name for g in groups):
            raise bad(f"group {name!r} is listed twice")
        if item["executor"] not in [m.value for m in ExecutorType]:
            raise bad(f"group {name!r}: executor {item['executor']!r} is unknown")
        numbers = {k: item[k] for k in ("nworkers", "nthreads", "min", "max")}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers.values()):
            raise bad(f"group {name!r}: {numbers} are not all integers >= 0")
        if numbers["nworkers"] < 1 or numbers["nthreads"] < 1 or numbers["min"] > numbers["max"]:
            raise bad(f"group {name!r}: {numbers}")
        groups.append(GroupSpec(name, ExecutorType(item["executor"]), **numbers))
    return tuple(groups)


# The scheduler pod's sidecar keeps controller.kubernetes.io/pod-deletion-cost current on the worker pods
# this label selector names (modelops.sidecar.deletion_cost); the chart sets it in that container only.
DELETION_COST_SELECTOR_VARIABLE = "MODELOPS_POD_DELETION_COST_SELECTOR"
_SELECTOR_TERM = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?(=|==|!=)([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$")


def parse_label_selector(variable: str, raw: str) -> str:
    """An equality-based label selector (`key=value,key2!=value2`), or empty."""
    selector = raw.strip()
    if selector and not all(_SELECTOR_TERM.match(term.strip()) for term in selector.split(",")):
        raise ConfigError(variable, raw, "empty, or a label selector of key=value terms joined by commas")
    return ",".join(term.strip() for term in selector.split(",")) if selector else ""


# ---- the registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    variable: str
    type: Any  # the Python type of the value
    default: Any
    allowed: str  # what a user may write, as the README shows it
    description: str
    parse: Parser
    field: str | None = None  # RuntimeConfig's field; None: read by `reader` only
    synonyms: tuple[str, ...] = ()  # must agree with `variable` when both are set
    reader: str = "worker"  # "worker": RuntimeConfig (the chart sets it); "entrypoint": the image's entrypoint;
    # "scheduler": the scheduler's preload (modelops.scheduler); "sidecar": the scheduler pod's deletion-cost
    # sidecar (modelops.sidecar)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.variable, *self.synonyms)

    def read(self, env: Mapping[str, str]) -> Any:
        """The value `env` gives (synonyms must agree), or the default when none is set."""
        parsed = {name: self.parse(name, env[name]) for name in self.names if name in env}
        if len(set(parsed.values())) > 1:
            allowed = self.allowed.replace("`", "")
            raise ConfigError(
                "/".join(self.names),
                "/".join(env[name] for name in self.names),
                f"{allowed}, the same in both",
                f"the variables disagree; set only {self.variable}",
            )
        return next(iter(parsed.values()), self.default)


def _choices(enum: type[Enum]) -> str:
    return ", ".join(f"`{m.value}`" for m in enum)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        EXECUTOR_TYPE_VARIABLE, ExecutorType, ExecutorType.ISOLATED_WARM, _choices(ExecutorType),
        "how a task is isolated: in the worker (`direct`), in reused children, or a fresh process per task",
        enum_parser(ExecutorType), field="executor", synonyms=("MODELOPS_EXECUTOR",),
    ),
    Setting(
        COLD_START_VARIABLE, ColdStart, ColdStart.FORK, _choices(ColdStart),
        "how `cold` starts each task's process: forked from a per-bundle zygote, or a new interpreter",
        enum_parser(ColdStart), field="cold_start",
    ),
    Setting(
        "MODELOPS_TASK_TIMEOUT_SECONDS", float, 0.0, "number >= 0 (0 = no limit)",
        "covers the whole task, waiting for a child/zygote included; the task's process group is killed "
        "past it (not enforceable under `direct`, which warns)",
        number_parser(integer=False), field="task_timeout_seconds",
    ),
    Setting(
        "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS", float, 300.0, "number > 0",
        "longest wait for a cold-fork zygote to import a bundle (and run its declared warm-up), and for a "
        "forked child to become ready; past it the zygote is killed and the task fails (`BundleImportTimeout`)",
        number_parser(integer=False, positive=True), field="bundle_import_timeout_seconds",
    ),
    Setting(
        "MODELOPS_COLD_IMPORT_RNG", ImportRng, ImportRng.REFUSE, _choices(ImportRng),
        "a bundle with random generators made at import: `refuse` fails every cold-fork task "
        "(`ForkUnsafeBundle`, naming them); `spawn` runs it under cold spawn",
        enum_parser(ImportRng), field="cold_import_rng",
    ),
    Setting(
        "MODELOPS_WARM_MAX_TASKS_PER_PROCESS", int, 0, "integer >= 0 (0 = never)",
        "recycle a warm child after N tasks",
        number_parser(integer=True), field="warm_max_tasks_per_process",
    ),
    Setting(
        "MODELOPS_TASK_MEMORY_LIMIT_MB", int, 0, "integer >= 0 (0 = no limit)",
        "address-space limit of each child; exceeding it fails the task as `oom`",
        number_parser(integer=True), field="task_memory_limit_mb",
    ),
    Setting(
        "MODELOPS_BUNDLE_SOURCE", BundleSource, BundleSource.FILE, _choices(BundleSource),
        "`file`: directories under `MODELOPS_BUNDLES_DIR`; `image`: modules installed in the image; "
        "`oci`: digest-pinned artifacts (`HOST[:PORT]/REPO@sha256:...`) pulled from an OCI registry",
        enum_parser(BundleSource), field="bundle_source",
    ),
    Setting(
        BUNDLE_CACHE_DIR_VARIABLE, Path, Path("/tmp/modelops/bundle-cache"), "a directory path",
        "source `oci`: where pulled bundles are kept, verified, shared by the worker processes of a pod; "
        "any source: `environments/` under it holds the Python environments of bundles that carry a "
        "`requirements.txt` (created if missing; must be writable)",
        parse_path, field="bundle_cache_dir",
    ),
    Setting(
        "MODELOPS_BUNDLE_CACHE_MAX_MB", int, 1024, "integer > 0",
        "source `oci`: size bound of the bundle cache; least recently used bundles are evicted past it",
        number_parser(integer=True, positive=True), field="bundle_cache_max_mb",
    ),
    Setting(
        "MODELOPS_BUNDLE_ENV_MAX_MB", int, 1024, "integer > 0",
        "size bound of the bundle environments under `MODELOPS_BUNDLE_CACHE_DIR/environments`; past it the least "
        "recently used ones that no worker process is using are removed",
        number_parser(integer=True, positive=True), field="bundle_env_max_mb",
    ),
    Setting(
        "MODELOPS_PACKAGE_INDEX_URL", str, "", "a URL (empty: the bundle's own wheels, else uv's configuration)",
        "where a worker installs the packages of a bundle's `requirements.txt` when the bundle carries no "
        "`wheels/` (`mops bundle push --with-wheels`); empty: uv's own configuration (`UV_INDEX_URL`, uv.toml)",
        parse_url, field="package_index_url",
    ),
    Setting(
        REGISTRY_PLAIN_HTTP_VARIABLE, PlainHttp, PlainHttp.AUTO,
        "`auto`, or a boolean (`1`/`true`/`yes`/`on`, `0`/`false`/`no`/`off`)",
        "source `oci`: plain HTTP to the registry; `auto` uses it for loopback hosts only, HTTPS elsewhere "
        "(also read by `mops run` when it resolves a study's tag)",
        parse_plain_http, field="registry_plain_http",
    ),
    Setting(
        BUNDLES_DIR_VARIABLE, Path, Path("/opt/modelops/bundles"), "a directory path",
        "directory with one sub-directory per bundle (must exist when the source is `file`)",
        parse_path, field="bundles_dir",
    ),
    Setting(
        COLD_PRELOAD_MODULES_VARIABLE, tuple[str, ...], (), "comma-separated module names",
        "modules the cold zygote imports besides the entrypoint; each must be installed (checked with "
        "import finders, nothing imported, by `mops config check`, the entrypoint and the preload, before Dask)",
        parse_module_list, field="cold_preload_modules",
    ),
    Setting(
        "MODELOPS_WORKER_GROUP", str, "default", "a name without spaces",
        "the chart's worker group this worker belongs to",
        parse_group, field="worker_group",
    ),
    Setting(
        "MODELOPS_LOG_LEVEL", LogLevel, LogLevel.INFO, _choices(LogLevel),
        "level of the worker's `modelops` loggers",
        enum_parser(LogLevel, upper=True), field="log_level",
    ),
    Setting(
        WORKER_GROUPS_VARIABLE, tuple[GroupSpec, ...], (), "a JSON list (the chart writes it)",
        "the release's autoscaled worker groups (name, executor, nworkers, nthreads, min and max replicas): "
        "the scheduler serves each one's desired replicas (`/modelops/demand`, `mops demand`), and a study "
        "requiring a listed group at zero pods waits for it instead of failing",
        parse_worker_groups, reader="scheduler",
    ),
    Setting(
        DELETION_COST_SELECTOR_VARIABLE, str, "", "empty, or a label selector (`key=value,...`; the chart writes it)",
        "worker pods whose `controller.kubernetes.io/pod-deletion-cost` the scheduler pod's sidecar keeps at their "
        "running tasks, so that a scale-down removes idle pods first (needs get, list and patch on pods; required)",
        parse_label_selector, reader="sidecar",
    ),
    Setting(
        ENTRYPOINT_NO_INIT_VARIABLE, bool, False, "boolean (`1`/`true`/`yes`/`on`, `0`/`false`/`no`/`off`)",
        "the image's entrypoint, when PID 1, does not exec Dask under `tini` (use with `docker run --init` "
        "or a shared process namespace)",
        parse_bool, reader="entrypoint",
    ),
)

BY_VARIABLE: dict[str, Setting] = {name: s for s in SETTINGS for name in s.names}
KNOWN_VARS: tuple[str, ...] = tuple(BY_VARIABLE)


def setting(variable: str) -> Setting:
    return BY_VARIABLE[variable]


# ---- the README's table ----------------------------------------------------------------------
TABLE_START = "<!-- settings-table: generated by `python -m modelops.settings --write README.md` -->"
TABLE_END = "<!-- settings-table: end -->"


def _shown(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value in ((), ""):
        return "empty"
    return f"`{value}`"


def markdown_table() -> str:
    rows = ["| variable | values | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        name = f"`{s.variable}`" + "".join(f" (synonym `{n}`)" for n in s.synonyms)
        if s.reader != "worker":
            name += f" ({s.reader})"
        rows.append(f"| {name} | {s.allowed} | {_shown(s.default)} | {s.description} |")
    return "\n".join(rows)


def render_into(text: str) -> str:
    pattern = re.compile(re.escape(TABLE_START) + r".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"no settings table markers ({TABLE_START!r} ... {TABLE_END!r}) found")
    return pattern.sub(lambda _m: f"{TABLE_START}\n{markdown_table()}\n{TABLE_END}", text)


def main(argv: list[str]) -> int:
    """`--check FILE`: exit 1 when FILE's settings table differs from the registry; `--write FILE`."""
    if len(argv) != 2 or argv[0] not in ("--check", "--write"):
        print("usage: python -m modelops.settings --check|--write README.md", file=sys.stderr)
        return 2
    mode, path = argv[0], Path(argv[1])
    text = path.read_text()
    wanted = render_into(text)
    if mode == "--write":
        path.write_text(wanted)
        return 0
    if wanted != text:
        print(f"{path}: the settings table is out of date; run python -m modelops.settings --write {path}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
