"""examples/mesa_epidemic: a model on a third-party agent-based framework (Mesa, from the bundle's own
requirements.txt, built into a bundle environment as a worker builds it) forks under cold fork (pandas >= 3
brings pyarrow's jemalloc, whose background thread made the zygote multi-threaded before), and gives the
same results with spares repeating its warm-up, without, under spawn and under warm. Real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime
from tests.helpers import EXECUTOR_ENVS, add_bundle
from tests.helpers import run_task as run

MESA = Path(__file__).resolve().parents[2] / "examples" / "mesa_epidemic"
PARAMS = [{"beta": 0.5, "gamma": 0.1, "n_agents": 120, "width": 12, "steps": 15},
          {"beta": 0.7, "gamma": 0.2, "n_agents": 120, "width": 12, "steps": 15}]


@pytest.fixture(scope="module")
def bundles_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mesa_bundles")
    declared = json.loads((MESA / "bundle.json").read_text())["warmup"]
    add_bundle(root, "mesa_epidemic", MESA, declared)
    add_bundle(root, "mesa_epidemic_nospare", MESA, {**declared, "spares": False})
    return root


def test_mesa_model_forks_and_its_results_are_the_same_everywhere(bundles_root, tmp_path):
    tasks = [(p, seed) for p in PARAMS for seed in (1, 99)]
    results = {}
    for executor in ("cold-fork", "cold-spawn", "isolated_warm"):
        env = {"MODELOPS_BUNDLES_DIR": str(bundles_root), "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "cache"),
               **EXECUTOR_ENVS[executor]}
        runtime = WorkerRuntime(RuntimeConfig.from_env(env), "test", 1)
        try:
            for bundle in ("mesa_epidemic", "mesa_epidemic_nospare"):
                outcome = [run(runtime, bundle, p, seed) for p, seed in tasks]
                assert all(r.ok for r in outcome), [r.error for r in outcome]
                assert all(r.provenance.environment is not None for r in outcome)  # Mesa from its own lock
                if executor == "cold-fork":
                    assert {r.provenance.cold_start for r in outcome} == {"fork"}
                    assert len({r.provenance.pid for r in outcome}) == len(tasks)
                results[(executor, bundle)] = [r.outputs for r in outcome]
        finally:
            runtime.close()
    reference = results[("cold-spawn", "mesa_epidemic")]
    assert len({json.dumps(o, sort_keys=True) for o in reference}) == len(tasks)
    assert {o["mesa_version"] for o in reference} == {"3.3.1"}
    for key, outputs in results.items():
        assert outputs == reference, key
