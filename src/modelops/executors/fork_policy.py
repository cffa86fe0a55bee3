"""Whether a bundle's tasks may run in children forked from its zygote: a pure decision.

Runs in the Dask worker (`cold_fork.ColdForkExecutor`), on the zygote's ready report alone, so every
rule is tested without a process. In order:
- a warm-up that raised in the zygote: refuse (fix the warm-up, or remove it);
- a zygote with more than one thread after its imports: fork could leave a lock held in every
  child, so serve the bundle by cold spawn (a new interpreter per task);
- random generators created at import: every forked child would draw the same numbers, so refuse,
  or serve by spawn where MODELOPS_COLD_IMPORT_RNG=spawn allows it;
- else fork.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelops.executors.protocol import ZygoteReady
from modelops.failures import Failure


@dataclass(frozen=True)
class Fork:
    """Fork one child per task from the zygote."""


@dataclass(frozen=True)
class Spawn:
    """Serve the bundle by cold spawn: `why` for the operator's log, `reason` for the metric label."""

    why: str
    reason: str


@dataclass(frozen=True)
class Refuse:
    """Fail the bundle's tasks without running them, with this failure."""

    failure: Failure


Decision = Fork | Spawn | Refuse


def decide(ready: ZygoteReady, bundle_name: str, warmup: str, import_rng: str) -> Decision:
    """`warmup`: how the bundle declares its warm-up (for the message); `import_rng`: the worker's
    MODELOPS_COLD_IMPORT_RNG (`refuse` or `spawn`)."""
    if ready.warmup_error:
        return Refuse(Failure(
            kind="runtime",
            type="WarmupFailed",
            message=(
                f"bundle {bundle_name!r} cannot run under cold fork: its warm-up (bundle.json \"warmup\": "
                f"{warmup}) raised in the zygote (PID {ready.pid}): {ready.warmup_error}\n"
                "Fix the warm-up or remove it from bundle.json"
            ),
        ))
    if ready.threads > 1:
        return Spawn(
            f"after importing its modules the zygote has {ready.threads} threads: "
            + ", ".join(ready.thread_names) + "; avoid starting threads at import",
            "threaded_import",
        )
    if ready.import_rngs:
        rngs = ", ".join(ready.import_rngs)
        if import_rng == "spawn":
            return Spawn(
                f"random generators created at import would be cloned into every forked child: {rngs}; "
                "MODELOPS_COLD_IMPORT_RNG=spawn",
                "import_rng",
            )
        return Refuse(Failure(
            kind="runtime",
            type="ForkUnsafeBundle",
            message=(
                f"bundle {bundle_name!r} cannot run under cold fork: random generator(s) created at "
                f"import, {rngs}, would be cloned into every forked child, so every task would draw "
                "the same numbers. Create generators inside simulate() from the task's seed (e.g. "
                "numpy.random.default_rng(seed), random.Random(seed)), or set "
                "MODELOPS_COLD_IMPORT_RNG=spawn to run this bundle under cold spawn (slower)"
            ),
        ))
    return Fork()
