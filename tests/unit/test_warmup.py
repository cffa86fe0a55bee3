"""A bundle's warm-up (bundle.json "warmup"): declared, validated, run once in the cold-fork
zygote before any fork. Real zygotes, real forked children, no mocks."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from modelops.bundles.bundle import BundleError, read_manifest
from tests.helpers import EXECUTOR_ENVS, add_bundle
from tests.helpers import run_task as run

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")

REPO = Path(__file__).resolve().parents[2]
CACHE_BUNDLE = REPO / "tests" / "bundles" / "warmup_cache"
SIR_BUNDLE = REPO / "examples" / "sir"
SIR_WARMUP = {"params": {"beta": 0.3, "gamma": 0.1}, "seed": 7}

@pytest.fixture(scope="module")
def bundles_dir(tmp_path_factory) -> Path:
    """This module's MODELOPS_BUNDLES_DIR (overrides the shared one that `make_runtime` uses)."""
    root = tmp_path_factory.mktemp("warmup_bundles")
    add_bundle(root, "cache_warm", CACHE_BUNDLE, {"function": "warmup_cache:warm"})
    add_bundle(root, "cache_warm_no_spares", CACHE_BUNDLE, {"function": "warmup_cache:warm", "spares": False})
    add_bundle(root, "cache_params_warm", CACHE_BUNDLE, {"params": {"n": 5}, "seed": 3})
    add_bundle(root, "cache_cold", CACHE_BUNDLE, None)
    add_bundle(root, "sir_warm", SIR_BUNDLE, SIR_WARMUP)
    add_bundle(root, "sir_cold", SIR_BUNDLE, None)
    add_bundle(root, "raises", CACHE_BUNDLE, {"function": "warmup_extra:boom"},
               "def boom():\n    raise ValueError('warm-up exploded on purpose')\n")
    add_bundle(root, "missing_function", CACHE_BUNDLE, {"function": "warmup_cache:no_such_function"})
    add_bundle(root, "raises_huge", CACHE_BUNDLE, {"function": "warmup_extra:boom"},
               "def boom():\n    raise RuntimeError('x' * 200000 + ' the end of a huge message')\n")
    add_bundle(root, "threads", CACHE_BUNDLE, {"function": "warmup_extra:start"},
               "import threading, time\n\ndef start():\n"
               "    threading.Thread(target=time.sleep, args=(600,), name='warmup-thread', daemon=True).start()\n")
    add_bundle(root, "rng_left", CACHE_BUNDLE, {"function": "warmup_extra:keep"},
               "import numpy as np\nimport warmup_cache\n\ndef keep():\n"
               "    warmup_cache.KEPT = np.random.default_rng(1)\n")
    return root


@pytest.fixture
def runtime_for(make_runtime):
    """A WorkerRuntime under one of EXECUTOR_ENVS over this module's bundles; closed after the test."""
    return lambda executor="cold-fork", slots=1: make_runtime(slots, **EXECUTOR_ENVS[executor])


# ---- the declaration ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        ("warmup_cache:warm", ["'warmup'", "'warmup_cache:warm'", "must be an object"]),
        ({"function": "no_colon"}, ["'warmup.function'", "'no_colon'", "'module:function'"]),
        ({"function": 3}, ["'warmup.function'", "3", "'module:function'"]),
        ({"function": "m:f", "seed": 1}, ["'warmup'", "not both"]),
        ({"params": {"n": 1}}, ["'warmup'", "'seed' is missing", "2**32"]),
        ({"seed": 1}, ["'warmup'", "'params' is missing"]),
        ({"params": [1], "seed": 1}, ["'warmup.params'", "[1]", "must be an object"]),
        ({"params": {}, "seed": -1}, ["'warmup.seed'", "-1", "[0, 2**32)"]),
        ({"params": {}, "seed": 2**32}, ["'warmup.seed'", str(2**32), "[0, 2**32)"]),
        ({"params": {}, "seed": True}, ["'warmup.seed'", "True", "integer"]),
        ({"params": {}, "seed": 1, "when": "always"}, ["'warmup'", "['when']", "allowed keys"]),
        ({"function": "m:f", "spares": "yes"}, ["'warmup.spares'", "'yes'", "true or false"]),
    ],
)
def test_a_bad_declaration_names_the_field_the_value_and_what_is_allowed(tmp_path, warmup, expected):
    (tmp_path / "bundle.json").write_text(json.dumps({"name": "b", "version": "1", "entrypoint": "m:f", "warmup": warmup}))
    with pytest.raises(BundleError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "bundle.json") in message
    for text in expected:
        assert text in message, (text, message)


def test_no_declaration_or_null_means_no_warmup(tmp_path):
    for extra in ({}, {"warmup": None}):
        (tmp_path / "bundle.json").write_text(json.dumps({"name": "b", "version": "1", "entrypoint": "m:f", **extra}))
        assert read_manifest(tmp_path)["warmup"] is None


# ---- run in the zygote, inherited by every child -----------------------------------------
@pytest.mark.parametrize("bundle", ["cache_warm", "cache_params_warm"])
def test_the_warmup_ran_once_in_the_zygote_and_every_child_inherits_it(runtime_for, bundle):
    runtime = runtime_for("cold-fork")
    probes = [run(runtime, bundle, {"probe": 1, "i": i}) for i in range(3)]
    assert all(r.ok for r in probes), [r.error for r in probes]
    (zygote,) = runtime.executor.zygote_pids()
    for probe in probes:
        out = probe.outputs
        assert out["ppid"] == zygote and out["pid"] != zygote
        # built before the task started, by the zygote: the child did not build it
        assert out["built_before_task"] == zygote == out["table_built_in"]
    assert len({p.outputs["pid"] for p in probes}) == 3


def test_a_spare_repeats_a_short_warmup_while_it_waits_and_results_do_not_change(
        runtime_for, tmp_path, monkeypatch):
    monkeypatch.setenv("WARMUP_CACHE_MARKERS", str(tmp_path))  # warm() leaves a file named by its PID
    runtime = runtime_for("cold-fork")
    first = run(runtime, "cache_warm", {"probe": 1, "i": 0}).outputs
    (zygote,) = runtime.executor.zygote_pids()
    # the zygote ran it twice (the second run timed: is it short enough for spares?), before any fork
    assert first["warmup_pids"][:2] == [zygote, zygote]
    assert first["warmup_pids"][2:] in ([], [first["pid"]])  # the first spare may have got its task first
    deadline = time.monotonic() + 60
    while len({int(p.name) for p in tmp_path.iterdir()} - {zygote, first["pid"]}) < runtime.executor.spare_count:
        assert time.monotonic() < deadline, "the waiting spares never repeated the warm-up"
        time.sleep(0.05)
    second = run(runtime, "cache_warm", {"probe": 1, "i": 1}).outputs
    assert second["warmup_pids"] == [zygote, zygote, second["pid"]]  # its spare did, before the task came
    task = {"n": 50, "scale": 2.0}
    assert [run(runtime, "cache_warm", task, seed=s).outputs for s in (1, 2)] == [
        run(runtime_for("cold-spawn"), "cache_warm", task, seed=s).outputs for s in (1, 2)]


def test_spares_false_keeps_the_warmup_to_the_zygote(runtime_for):
    probe = run(runtime_for("cold-fork"), "cache_warm_no_spares", {"probe": 1}).outputs
    assert probe["warmup_pids"] == [probe["ppid"]]  # once, in the zygote: no timed second run, no spare's


def test_without_warmup_every_child_builds_the_table_itself(runtime_for):
    runtime = runtime_for("cold-fork")
    probes = [run(runtime, "cache_cold", {"probe": 1, "i": i}) for i in range(2)]
    assert all(r.ok for r in probes), [r.error for r in probes]
    for probe in probes:
        assert probe.outputs["built_before_task"] is None
        assert probe.outputs["table_built_in"] == probe.outputs["pid"]


@pytest.mark.parametrize(
    ("warm", "cold", "params"),
    [
        ("cache_warm", "cache_cold", [{"n": 50}, {"n": 200, "scale": 2.0}, {"n": 7}]),
        ("cache_params_warm", "cache_cold", [{"n": 50}, {"n": 5}]),
        ("sir_warm", "sir_cold", [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.5, "gamma": 0.1}, {"beta": 0.2, "gamma": 0.2}]),
    ],
)
def test_results_with_warmup_are_identical_to_without_and_to_spawn_and_warm(runtime_for, warm, cold, params):
    """Same params and seeds: cold fork with the warm-up, without it, spawn and warm agree exactly
    (the warm-up's own seed and draws leave no trace in a task)."""
    tasks = [(p, seed) for p in params for seed in (11, 2026)]
    results = {}
    for executor in ("cold-fork", "cold-spawn", "isolated_warm"):
        runtime = runtime_for(executor)
        for bundle in (warm, cold):
            outcome = [run(runtime, bundle, p, seed) for p, seed in tasks]
            assert all(r.ok for r in outcome), [r.error for r in outcome]
            results[(executor, bundle)] = [r.outputs for r in outcome]
    reference = results[("cold-fork", cold)]
    assert len({json.dumps(o, sort_keys=True) for o in reference}) == len(tasks)  # seeds matter
    for key, outputs in results.items():
        assert outputs == reference, key


# ---- a warm-up that cannot be used --------------------------------------------------------
@pytest.mark.parametrize(("bundle", "cause"), [
    ("raises", "ValueError: warm-up exploded on purpose"),
    ("missing_function", "no callable 'no_such_function'"),
    ("raises_huge", "x the end of a huge message"),  # cut to its end, never a broken report
])
def test_a_warmup_that_raises_refuses_the_bundle_clearly_without_fallback(runtime_for, bundle, cause, caplog):
    runtime = runtime_for("cold-fork")
    with caplog.at_level(logging.ERROR, logger="modelops.executor"):
        results = [run(runtime, bundle, {"n": 3, "i": i}) for i in range(2)]
    for result in results:
        assert not result.ok
        assert result.error.type == "WarmupFailed"
        assert f"bundle {bundle!r} cannot run under cold fork" in result.error.message
        assert "warm-up" in result.error.message and cause in result.error.message
    assert runtime.executor.zygote_pids() == []  # killed, not serving
    assert runtime.describe().get("spawn_fallbacks", {}) == {}  # and never served another way
    assert sum("WarmupFailed" in r.getMessage() or "warm-up" in r.getMessage() for r in caplog.records) == 1


def test_a_warmup_that_starts_a_thread_is_served_by_spawn_with_a_warning(runtime_for, caplog):
    runtime = runtime_for("cold-fork")
    with caplog.at_level(logging.WARNING, logger="modelops.executor"):
        result = run(runtime, "threads", {"n": 3})
    assert result.ok, result.error
    assert result.provenance.cold_start == "spawn"
    assert any("cannot be forked safely" in r.getMessage() and "warmup-thread" in r.getMessage()
               for r in caplog.records)
    (fallback,) = runtime.describe()["spawn_fallbacks"].values()
    assert fallback["tasks"] == 1


def test_a_generator_left_by_the_warmup_refuses_fork_like_one_made_at_import(runtime_for):
    runtime = runtime_for("cold-fork")
    result = run(runtime, "rng_left", {"n": 3})
    assert not result.ok and result.error.type == "ForkUnsafeBundle"
    assert "warmup_cache.KEPT" in result.error.message
