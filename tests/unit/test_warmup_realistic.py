"""examples/realistic (numba kernels with cache=True + a lazily built contact network) under
cold fork with and without its declared warm-up, against spawn and warm. Real processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime
from tests.helpers import EXECUTOR_ENVS, add_bundle
from tests.helpers import run_task as run

pytest.importorskip("numba", reason="numba comes with the bench extra: pip install -e '.[bench]'")

REALISTIC = Path(__file__).resolve().parents[2] / "examples" / "realistic"
PARAMS = [{"beta": 0.05, "gamma": 0.1, "agents": 800, "days": 40}, {"beta": 0.1, "gamma": 0.2, "agents": 800, "days": 40}]


@pytest.fixture(scope="module")
def bundles_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realistic_bundles")
    declared = json.loads((REALISTIC / "bundle.json").read_text())["warmup"]
    assert declared == {"function": "abm_model:warm_up"}
    add_bundle(root, "realistic", REALISTIC, declared)
    add_bundle(root, "realistic_nowarmup", REALISTIC, None)
    return root


def test_realistic_results_are_the_same_with_and_without_warmup_and_under_spawn_and_warm(bundles_root, monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))  # children inherit it
    tasks = [(p, seed) for p in PARAMS for seed in (1, 99)]
    results = {}
    for executor in ("cold-fork", "cold-spawn", "isolated_warm"):
        env = {"MODELOPS_BUNDLES_DIR": str(bundles_root), **EXECUTOR_ENVS[executor]}
        runtime = WorkerRuntime(RuntimeConfig.from_env(env), "test", 1)
        try:
            for bundle in ("realistic", "realistic_nowarmup"):
                outcome = [run(runtime, bundle, p, seed) for p, seed in tasks]
                assert all(r.ok for r in outcome), [r.error for r in outcome]
                if executor == "cold-fork":
                    # the warm-up compiled kernels in the zygote without leaving a thread: still fork
                    assert {r.provenance.cold_start for r in outcome} == {"fork"}
                results[(executor, bundle)] = [r.outputs for r in outcome]
        finally:
            runtime.close()
    reference = results[("cold-fork", "realistic_nowarmup")]
    assert len({json.dumps(o, sort_keys=True) for o in reference}) == len(tasks)
    assert all(o["final_size"] > 0 for o in reference)
    for key, outputs in results.items():
        assert outputs == reference, key
    assert os.listdir(tmp_path / "numba-cache")  # cache=True wrote where NUMBA_CACHE_DIR said
