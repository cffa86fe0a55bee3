"""Routing: a study can require an executor and/or a worker group, and then runs only there.

Each worker advertises what its own environment provides as Dask worker resources
(`modelops-executor-<type>`, `modelops-group-<name>`), set by the plugin from
`MODELOPS_EXECUTOR_TYPE` and `MODELOPS_WORKER_GROUP`; a task that requires them asks for one unit
of each. Dask then places it only on such workers, including workers that join later, and never
elsewhere. The capacity is a label, not a limit (nthreads bounds concurrency).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from modelops.settings import ExecutorType

EXECUTOR_PREFIX = "modelops-executor-"
GROUP_PREFIX = "modelops-group-"
CAPACITY = 1_000_000


class NoWorkerForRequirement(RuntimeError):
    """No connected worker provides what a study requires; names it and what the workers provide."""


class NoGroupForRequirement(NoWorkerForRequirement):
    """No worker group of the release (as the scheduler lists them) could ever provide it: waiting would not
    help. Names the requirement and the release's groups."""


class Requirement(BaseModel):
    """Where a study's tasks may run. Empty (the default): any worker, today's behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: ExecutorType | None = None
    group: str | None = None

    @field_validator("group")
    @classmethod
    def _group(cls, group: str | None) -> str | None:
        if group is not None and (not group.strip() or any(c.isspace() for c in group)):
            raise ValueError(f"group {group!r} must be a non-empty name without spaces")
        return group

    def __bool__(self) -> bool:
        return self.executor is not None or self.group is not None

    def describe(self) -> str:
        parts = ([f"executor {self.executor.value!r}"] if self.executor else []) + (
            [f"group {self.group!r}"] if self.group else [])
        return " in ".join(parts) or "nothing"

    def resources(self) -> dict[str, float] | None:
        """The Dask resources a task with this requirement asks for (None: no restriction)."""
        out = {}
        if self.executor is not None:
            out[EXECUTOR_PREFIX + self.executor.value] = 1
        if self.group is not None:
            out[GROUP_PREFIX + self.group] = 1
        return out or None


def worker_resources(executor: str, group: str) -> dict[str, float]:
    """What a worker advertises, from its own environment."""
    return {EXECUTOR_PREFIX + executor: CAPACITY, GROUP_PREFIX + group: CAPACITY}


def provided(resources: dict) -> tuple[str | None, str | None]:
    """(executor, group) a worker advertises in its Dask resources."""
    executor = next((k[len(EXECUTOR_PREFIX):] for k in resources if k.startswith(EXECUTOR_PREFIX)), None)
    group = next((k[len(GROUP_PREFIX):] for k in resources if k.startswith(GROUP_PREFIX)), None)
    return executor, group


def check_requirement(requirement: Requirement, workers: dict[str, dict]) -> list[str]:
    """Addresses of connected workers meeting `requirement` (from scheduler_info()["workers"]);
    raises NoWorkerForRequirement naming the requirement and the groups that exist."""
    wanted = requirement.resources() or {}
    matching = [a for a, w in workers.items() if all(k in (w.get("resources") or {}) for k in wanted)]
    if not matching:
        have = sorted({provided(w.get("resources") or {}) for w in workers.values()}, key=str)
        groups = ", ".join(f"{g} ({e})" for e, g in have) or "none"
        raise NoWorkerForRequirement(
            f"no connected worker provides {requirement.describe()}; "
            f"worker groups (executor) connected: {groups}"
        )
    return matching


def group_serves(group: str, group_executor: str, executor: str | None, name: str | None) -> bool:
    """Whether a worker of `group` (running `group_executor`) meets a requirement of (executor, group name);
    (None, None), no requirement: every group does."""
    if name is not None and name != group:
        return False
    return executor is None or executor == group_executor


def serving_groups(requirement: Requirement, release: dict[str, str]) -> list[str]:
    """The groups of the release ({name: executor}, from the scheduler) whose workers meet `requirement`;
    raises NoGroupForRequirement naming the release's groups when none does."""
    executor = requirement.executor.value if requirement.executor else None
    found = [g for g, e in release.items() if group_serves(g, e, executor, requirement.group)]
    if not found:
        groups = ", ".join(f"{g} ({e})" for g, e in sorted(release.items()))
        raise NoGroupForRequirement(f"no worker group of this release provides {requirement.describe()}; "
                                    f"the release's autoscaled worker groups (executor): {groups}")
    return found


class ExecutorNotChosen(RuntimeError):
    """A study without an executor requirement could run on workers of several executors: it would mix
    them (results of one study computed under different isolation), so the user must choose."""


def serving_executors(requirement: Requirement, workers: dict[str, dict]) -> dict[str, list[str]]:
    """{executor: its groups} of the connected workers (scheduler_info()["workers"]) meeting `requirement`;
    workers that advertise no executor (no modelops plugin) are left out."""
    wanted = requirement.resources() or {}
    found: dict[str, set[str]] = {}
    for w in workers.values():
        resources = w.get("resources") or {}
        executor, group = provided(resources)
        if executor is not None and all(k in resources for k in wanted):
            found.setdefault(executor, set()).add(group or "?")
    return {e: sorted(g) for e, g in sorted(found.items())}


def describe_executors(executors: dict[str, list[str]]) -> str:
    """`cold (group a), isolated_warm (groups b, c)`, or `none`."""
    return ", ".join(f"{e} (group{'s' if len(g) > 1 else ''} {', '.join(g)})" for e, g in executors.items()) or "none"


def pin_executor(requirement: Requirement, workers: dict[str, dict]) -> Requirement:
    """The requirement a study keeps to for its whole run: its own when it names an executor; otherwise the
    one executor the connected workers serving it run, added to it, so that no task of the study ever runs
    on workers of another executor (a `helm upgrade` that changes the workers' executor mid-study then
    makes the study wait, instead of mixing executors). Raises ExecutorNotChosen when several executors
    serve it, and NoWorkerForRequirement when no serving worker reports an executor."""
    if requirement.executor is not None:
        return requirement
    executors = serving_executors(requirement, workers)
    if not executors:
        raise NoWorkerForRequirement(
            "no connected worker" + (f" that provides {requirement.describe()}" if requirement else "")
            + " reports its executor (workers without modelops' preload?), so the study cannot keep to one "
            "executor; pass --any-executor to run anyway")
    return one_executor(requirement, executors)


def one_executor(requirement: Requirement, executors: dict[str, list[str]], flag: str = "--require-executor",
                 where: str = "workers") -> Requirement:
    """`requirement` with the one executor of `executors` ({executor: groups} that could serve it, at least
    one); ExecutorNotChosen naming them, `flag` (the option that chooses one) and --any-executor when there
    are several."""
    if len(executors) > 1:
        raise ExecutorNotChosen(
            f"{where} of several executors could run it: {describe_executors(executors)}; a study keeps to one "
            f"executor: choose it with {flag} {'|'.join(executors)} (requires.executor in the study file), or "
            "pass --any-executor to let its tasks run on all of them (its results then mix executors)")
    (executor,) = executors
    return requirement.model_copy(update={"executor": ExecutorType(executor)})
