"""The fork policy decides from the zygote's ready report alone: tested without any process."""

from __future__ import annotations

import pytest

from modelops.executors.fork_policy import Fork, Refuse, Spawn, decide
from modelops.executors.protocol import ZygoteReady


def ready(**changes) -> ZygoteReady:
    fields = dict(pid=300, threads=1, thread_names=["MainThread"], import_errors=[], import_rngs=[], import_s=0.2)
    return ZygoteReady(**{**fields, **changes})


@pytest.mark.parametrize("import_rng", ["refuse", "spawn"])
def test_a_clean_single_threaded_zygote_forks(import_rng):
    assert decide(ready(import_errors=["scipy: ModuleNotFoundError"]), "sir", "none", import_rng) == Fork()


def test_a_failed_warm_up_refuses_the_bundle_naming_the_warm_up_and_the_zygote():
    decision = decide(ready(warmup_error="Traceback ...\nValueError: bad grid", threads=3,
                            thread_names=["MainThread", "a", "b"]), "sir", '{"function": "m:warm"}', "spawn")
    assert isinstance(decision, Refuse)
    failure = decision.failure
    assert failure.type == "WarmupFailed" and failure.kind == "runtime" and not failure.retryable
    assert "'sir'" in failure.message and '{"function": "m:warm"}' in failure.message
    assert "(PID 300)" in failure.message and "ValueError: bad grid" in failure.message


def test_threads_after_import_mean_spawn_naming_them():
    decision = decide(ready(threads=2, thread_names=["MainThread", "pool-1"], import_rngs=["model.RNG"]), "sir", "none",
                      "refuse")
    assert decision == Spawn("after importing its modules the zygote has 2 threads: MainThread, pool-1; "
                             "avoid starting threads at import", "threaded_import")


def test_generators_made_at_import_are_refused_unless_spawn_is_allowed():
    refused = decide(ready(import_rngs=["model.RNG", "model.gen"]), "sir", "none", "refuse")
    assert isinstance(refused, Refuse) and refused.failure.type == "ForkUnsafeBundle"
    assert "model.RNG, model.gen" in refused.failure.message and "MODELOPS_COLD_IMPORT_RNG=spawn" in refused.failure.message
    spawned = decide(ready(import_rngs=["model.RNG"]), "sir", "none", "spawn")
    assert isinstance(spawned, Spawn) and spawned.reason == "import_rng" and "model.RNG" in spawned.why
