"""The image's entrypoint: ``modelops-entrypoint ROLE [ARGS...]``.

Roles:

``worker [SCHEDULER_ADDRESS] [extra dask worker args]``
    Validates the worker's environment first (the same check as ``mops config check``) and exits 2
    with the error, which names the variable, before Dask starts. Then execs
    ``dask worker SCHEDULER_ADDRESS --preload modelops.worker.preload [extra args]``: the preload is
    always added here, never left to users' args.
``scheduler [extra dask scheduler args]``
    Validates the scheduler's environment (``MODELOPS_WORKER_GROUPS``, the release's worker groups) and
    exits 2 with the error before Dask starts; then execs
    ``dask scheduler --preload modelops.scheduler.preload ...`` (each group's demand, for autoscalers).
``deletion-cost [--scheduler-url URL]``
    The scheduler pod's sidecar (chart: scheduler.podDeletionCost): execs
    ``python -m modelops.sidecar.deletion_cost``, which keeps the worker pods' pod-deletion-cost at their
    running tasks, read from the scheduler over the pod's loopback. Only this container holds a token.
anything else
    Exec'd as is (for example ``mops doctor ...`` in the ``helm test`` pod).

Every role ends in ``exec`` with no shell in between, so a pod's SIGTERM reaches Dask, which retires
the worker gracefully. When the entrypoint is PID 1 (a container without an init) it execs the
command under ``tini`` if the image has it: tini reaps orphaned grandchildren (children of killed
task processes re-parent to PID 1, and neither Dask nor Python's ``multiprocessing`` reaps processes
it did not start) and forwards signals to Dask.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from modelops.scheduler import PRELOAD as SCHEDULER_PRELOAD
from modelops.settings import ENTRYPOINT_NO_INIT_VARIABLE as NO_INIT_VAR

PRELOAD = "modelops.worker.preload"
DELETION_COST_SIDECAR = "modelops.sidecar.deletion_cost"
TINI_PATHS = ("/usr/bin/tini", "/sbin/tini", "/usr/local/bin/tini", "/usr/bin/tini-static")

USAGE = """\
usage: modelops-entrypoint worker [SCHEDULER_ADDRESS] [DASK_WORKER_ARGS...]
       modelops-entrypoint scheduler [DASK_SCHEDULER_ARGS...]
       modelops-entrypoint deletion-cost [--scheduler-url URL]
       modelops-entrypoint COMMAND [ARGS...]     (exec'd as is, e.g. mops doctor ...)
"""


class UsageError(Exception):
    pass


def _has_preload(args: Sequence[str], preload: str = PRELOAD) -> bool:
    for i, arg in enumerate(args):
        if arg == "--preload" and i + 1 < len(args) and args[i + 1] == preload:
            return True
        if arg == f"--preload={preload}":
            return True
    return False


def worker_command(args: Sequence[str]) -> list[str]:
    """``dask worker`` with the modelops preload right after the scheduler address."""
    args = list(args)
    preload = [] if _has_preload(args) else ["--preload", PRELOAD]
    if args and not args[0].startswith("-"):
        return ["dask", "worker", args[0], *preload, *args[1:]]
    # No positional address: dask reads it from --scheduler-file or DASK_SCHEDULER_ADDRESS.
    return ["dask", "worker", *preload, *args]


def build_command(argv: Sequence[str]) -> list[str]:
    """The command a role execs (argv excludes the program name)."""
    if not argv:
        raise UsageError("no role given")
    role, rest = argv[0], list(argv[1:])
    if role == "worker":
        return worker_command(rest)
    if role == "scheduler":
        preload = [] if _has_preload(rest, SCHEDULER_PRELOAD) else ["--preload", SCHEDULER_PRELOAD]
        return ["dask", "scheduler", *preload, *rest]
    if role == "deletion-cost":
        return [sys.executable, "-m", DELETION_COST_SIDECAR, *rest]
    return [role, *rest]


def check_worker_environment(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """Validate the worker's env as ``mops config check`` does; raise ConfigError when invalid."""
    from modelops.worker.config import RuntimeConfig

    return RuntimeConfig.from_env(env).summary()


def check_scheduler_environment(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The release's worker groups as the scheduler's preload will read them; ConfigError when invalid."""
    from modelops.settings import WORKER_GROUPS_VARIABLE, setting

    groups = setting(WORKER_GROUPS_VARIABLE).read(os.environ if env is None else env)
    return {"worker_groups": [g.name for g in groups]}


def find_init(env: Mapping[str, str]) -> str | None:
    """tini's path when this process is PID 1 and should not stay PID 1 under Dask; else None.
    ConfigError when MODELOPS_ENTRYPOINT_NO_INIT is not a boolean."""
    from modelops.settings import setting

    no_init = setting(NO_INIT_VAR).read(env)
    if os.getpid() != 1 or no_init:
        return None
    return next((p for p in TINI_PATHS if os.access(p, os.X_OK)), None)


def resolve_program(name: str) -> str:
    """``dask`` from this interpreter's environment (the one just validated), else from PATH."""
    if name == "dask":
        beside = os.path.join(os.path.dirname(sys.executable), "dask")
        if os.access(beside, os.X_OK):
            return beside
    return shutil.which(name) or name


def _exec(command: list[str], init: str | None) -> int:
    program = resolve_program(command[0])
    argv = [init, "--", program, *command[1:]] if init else [program, *command[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except FileNotFoundError:
        print(f"modelops-entrypoint: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError as exc:
        print(f"modelops-entrypoint: cannot execute {command[0]}: {exc}", file=sys.stderr)
        return 126
    return 0  # not reached: execv does not return


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(USAGE, end="")
        return 0
    try:
        command = build_command(argv)
    except UsageError as exc:
        print(f"modelops-entrypoint: {exc}\n{USAGE}", file=sys.stderr, end="")
        return 2
    from modelops.settings import ConfigError

    try:
        init = find_init(os.environ)
    except ConfigError as exc:
        print(f"modelops-entrypoint: {exc}", file=sys.stderr)
        return 2
    checks = {"worker": check_worker_environment, "scheduler": check_scheduler_environment}
    if argv[0] in checks:
        try:
            summary = checks[argv[0]]()
        except ConfigError as exc:
            print(
                f"modelops-entrypoint: invalid {argv[0]} configuration, not starting Dask: {exc}",
                file=sys.stderr,
            )
            return 2
        print(
            f"modelops-entrypoint: {argv[0]} configuration: " + json.dumps(summary, sort_keys=True),
            file=sys.stderr,
        )
    return _exec(command, init)


if __name__ == "__main__":
    sys.exit(main())
