"""The release's worker groups (MODELOPS_WORKER_GROUPS, read by the scheduler) and which groups a
requirement or a pending task belongs to."""

from __future__ import annotations

import json

import pytest

from modelops.routing import NoGroupForRequirement, Requirement, serving_groups
from modelops.scheduler.demand import counts_for, desired_replicas
from modelops.settings import WORKER_GROUPS_VARIABLE, ConfigError, GroupSpec, ExecutorType, setting

COLD = {"name": "cold", "executor": "cold", "nworkers": 2, "nthreads": 4, "min": 0, "max": 40}


def read(groups) -> tuple[GroupSpec, ...]:
    return setting(WORKER_GROUPS_VARIABLE).read({WORKER_GROUPS_VARIABLE: json.dumps(groups)})


def test_groups_are_read_with_their_slots_per_pod():
    (cold,) = read([COLD])
    assert (cold.name, cold.executor, cold.slots, cold.min, cold.max) == ("cold", ExecutorType.COLD, 8, 0, 40)
    assert setting(WORKER_GROUPS_VARIABLE).read({}) == ()


@pytest.mark.parametrize("groups, detail", [
    ([{**COLD, "min": 5, "max": 4}], "group 'cold'"),
    ([{**COLD, "max": 0, "min": 1}], "group 'cold'"),
    ([{**COLD, "executor": "warm"}], "executor 'warm' is unknown"),
    ([COLD, COLD], "listed twice"),
    ([{**COLD, "replicas": 3}], "not the keys"),
    ([{**COLD, "nthreads": "4"}], "not all integers"),
    ({"cold": COLD}, "not a list"),
])
def test_invalid_groups_name_the_variable_the_value_and_what_is_allowed(groups, detail):
    with pytest.raises(ConfigError) as err:
        read(groups)
    message = str(err.value)
    assert message.startswith(f"{WORKER_GROUPS_VARIABLE}=") and "0 <= min <= max" in message
    assert detail in message


def test_desired_replicas_are_ceil_tasks_over_slots_within_min_and_max():
    (cold,) = read([COLD])
    assert [desired_replicas(n, cold) for n in (0, 1, 8, 9, 10_000)] == [0, 1, 1, 2, 40]
    (warm,) = read([{**COLD, "name": "default", "executor": "isolated_warm", "min": 2}])
    assert desired_replicas(0, warm) == 2
    (fixed,) = read([{**COLD, "min": 0, "max": 0}])
    assert not fixed.autoscaled and desired_replicas(100, fixed) == 0


def test_which_pending_tasks_count_for_a_group():
    cold, default = read([COLD, {**COLD, "name": "default", "executor": "isolated_warm"}])
    assert counts_for(cold, None, "cold") and counts_for(cold, "cold", "cold") and counts_for(cold, "cold", None)
    assert not counts_for(cold, "isolated_warm", "cold") and not counts_for(cold, None, "other")
    assert not counts_for(cold, None, None) and counts_for(default, None, None)  # no requirement: the main group


def test_serving_groups_or_an_error_naming_the_release_groups():
    release = {"default": "isolated_warm", "cold": "cold", "cold-big": "cold"}
    assert serving_groups(Requirement(executor="cold"), release) == ["cold", "cold-big"]
    assert serving_groups(Requirement(), release) == list(release)
    with pytest.raises(NoGroupForRequirement, match=r"group 'gpu'.*cold \(cold\), cold-big \(cold\), default"):
        serving_groups(Requirement(group="gpu"), release)
    with pytest.raises(NoGroupForRequirement):
        serving_groups(Requirement(executor="direct"), release)

