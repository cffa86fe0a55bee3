"""values/production.yaml's warm and cold pools on the real cluster (one release for the module):
routing (`mops run --group cold` runs every task on the cold pool; a group that does not exist fails
at once naming the groups that do) and memory (each worker process reports its share of its pod's
limit)."""

from __future__ import annotations

import json

import pytest

STUDY = "/opt/modelops/bundles/sir/study.json"  # the image's copy of examples/sir/study.json


@pytest.fixture(scope="module")
def release(releases):
    rel = releases.new("helm4")
    # 2 threads per default-group process: distributed's own "auto" (limit x nthreads / host cores)
    # would then give each of the pod's 2 processes the whole pod limit on a 2-core machine
    rel.install(["production.yaml", "local.yaml", "local-production.yaml"],
                sets=["worker.nthreads=2", "worker.groups.cold.nthreads=1"])
    yield rel
    rel.uninstall()


def test_a_study_routed_to_the_cold_group_runs_only_there(release):
    out = release.run_client_job(
        f"mops run {STUDY} --scheduler @SCHEDULER@ --group cold --require-executor cold --wait-workers 120"
    )
    assert "tasks per executor: {'cold': 12}" in out, out[-3000:]


def test_without_a_requirement_a_study_chooses_an_executor_or_allows_both_pools(release):
    """Both pools connected and no executor required: the study would mix executors, so it does not start
    (docs/studies.md, when the workers change under a study) unless --any-executor lets both pools run it."""
    refused = release.run_client_job(f"mops run {STUDY} --scheduler @SCHEDULER@ --wait-workers 120 2>&1; echo exit=$?")
    assert "exit=1" in refused, refused[-3000:]
    assert "workers of several executors could run it: cold (group cold), isolated_warm (group default)" in refused
    out = release.run_client_job(f"mops run {STUDY} --scheduler @SCHEDULER@ --any-executor --wait-workers 120")
    assert "tasks: 12  succeeded: 12" in out, out[-3000:]
    assert "executor: any (--any-executor" in out, out[-3000:]


def test_a_group_no_worker_provides_fails_at_once_naming_the_groups(release):
    out = release.run_client_job(
        f"mops run {STUDY} --scheduler @SCHEDULER@ --group gpu --wait-workers 120 2>&1; echo exit=$?"
    )
    assert "exit=1" in out, out[-3000:]
    assert "no connected worker provides group 'gpu'" in out, out[-3000:]
    assert "cold (cold)" in out and "default (isolated_warm)" in out, out[-3000:]


MEMORY_SCRIPT = """python -c '
import json
from distributed import Client
with Client("@SCHEDULER@", timeout=60) as c:
    c.wait_for_workers(4, timeout=120)
    out = {}
    for w in c.scheduler_info(n_workers=-1)["workers"].values():
        group = next(k[len("modelops-group-"):] for k in w["resources"] if k.startswith("modelops-group-"))
        out.setdefault(group, []).append(w["memory_limit"])
    print("LIMITS " + json.dumps(out, sort_keys=True))
'"""


def test_each_worker_process_reports_its_share_of_the_pod_memory_limit(release):
    """memoryLimit auto = the container's limit / nworkers: production's 2 processes per pod with
    local.yaml's 2Gi (default group) and local-production.yaml's 8Gi (cold group)."""
    out = release.run_client_job(MEMORY_SCRIPT)
    line = next(line for line in out.splitlines() if line.startswith("LIMITS "))
    assert json.loads(line[len("LIMITS "):]) == {"cold": [4 * 2**30] * 2, "default": [2**30] * 2}, out
