"""The executors `mops bench` measures, by the names it reports, and the workers' environment of each
(the variables from the settings registry, the values from its enums)."""

from __future__ import annotations

from modelops.settings import COLD_START_VARIABLE, EXECUTOR_TYPE_VARIABLE, ColdStart, ExecutorType

EXECUTOR_ENVS: dict[str, dict[str, str]] = {
    "direct": {EXECUTOR_TYPE_VARIABLE: ExecutorType.DIRECT.value},
    "isolated_warm": {EXECUTOR_TYPE_VARIABLE: ExecutorType.ISOLATED_WARM.value},
    "cold-spawn": {EXECUTOR_TYPE_VARIABLE: ExecutorType.COLD.value, COLD_START_VARIABLE: ColdStart.SPAWN.value},
    "cold-fork": {EXECUTOR_TYPE_VARIABLE: ExecutorType.COLD.value, COLD_START_VARIABLE: ColdStart.FORK.value},
}
