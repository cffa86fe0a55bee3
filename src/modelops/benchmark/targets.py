"""Acceptance targets a bench run is checked against: passed in, never written into the checks.

`Targets` holds every threshold with its default, defined once; `target_options` turns its fields
into `mops bench` options (`--target-...`) with those defaults, and `check_targets` reports each
target as met or not against one concurrency's numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import click


def _target(default: float, help: str) -> float:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Targets:
    # built-in model, --mode trivial (issue 3): what cold fork may add to a task that does nothing
    fork_p50_over_warm_ms: float = _target(10.0, "trivial: cold-fork p50 may exceed warm p50 by this (ms)")
    fork_p95_over_warm_ms: float = _target(25.0, "trivial: cold-fork p95 may exceed warm p95 by this (ms)")
    fork_cpu_ms_per_task: float = _target(20.0, "trivial: cold-fork CPU per task at most this (ms)")
    # built-in model, --mode realistic
    realistic_fork_vs_warm_x: float = _target(1.2, "realistic: cold-fork p50 at most this x warm p50")
    # a user's bundle, --bundle (issue 13)
    bundle_fork_vs_warm_x: float = _target(1.1, "--bundle: cold-fork p50 at most this x warm p50")
    bundle_spawn_overhead_vs_fork_x: float = _target(
        50.0, "--bundle: cold-spawn's p50 overhead over warm at least this x cold-fork's")
    # trivial and --bundle
    spawn_vs_fork_x: float = _target(50.0, "cold-fork at least this x faster than cold-spawn (p50)")
    # --throughput STUDY (issue 23): whole studies, `mops run` tasks/s against plain Dask `client.map` (one task
    # per future) on the same cluster, ratios taken within a round, medians over rounds
    throughput_direct_x: float = _target(3.0, "--throughput: direct mops run at least this x plain Dask tasks/s")
    throughput_warm_x: float = _target(2.0, "--throughput: isolated_warm mops run at least this x plain Dask tasks/s")
    throughput_cold_floor_x: float = _target(
        1.2, "--throughput: cold-fork mops run within this x of its floor (cluster threads / median task duration)")
    throughput_long_direct_x: float = _target(
        0.97, "--throughput: ~200 ms tasks, direct mops run at least this x plain Dask tasks/s (load balance kept)")

    @staticmethod
    def option_name(name: str) -> str:
        return "--target-" + name.replace("_", "-")


def target_options(command):
    """Add one `--target-NAME` option per Targets field (default from Targets) and hand the command
    a single `targets: Targets` argument instead."""
    fields = dataclasses.fields(Targets)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        values = {f.name: kwargs.pop(f"target_{f.name}") for f in fields}
        return command(*args, targets=Targets(**values), **kwargs)

    for f in reversed(fields):
        wrapper = click.option(
            Targets.option_name(f.name), f"target_{f.name}", type=click.FloatRange(min=0),
            default=f.default, show_default=True, help=f.metadata["help"],
        )(wrapper)
    return wrapper


def check_targets(row: dict[str, dict], mode: str, targets: Targets = Targets()) -> list[dict]:
    """The targets for cold-fork that apply to `mode`, checked against one concurrency's numbers."""
    t = targets
    fork, warm, spawn = row.get("cold-fork"), row.get("isolated_warm"), row.get("cold-spawn")
    checks = []

    def add(name: str, value: float, limit: float, ok: bool, unit: str = "ms") -> None:
        checks.append({"target": name, "value": round(value, 3), "limit": round(limit, 3), "unit": unit, "met": ok})

    def speedup() -> float:
        return spawn["p50_ms"] / fork["p50_ms"] if fork["p50_ms"] > 0 else math.inf

    if mode == "bundle":
        if fork and warm:
            limit = t.bundle_fork_vs_warm_x * warm["p50_ms"]
            add(f"cold-fork p50 <= {t.bundle_fork_vs_warm_x:g} x warm p50", fork["p50_ms"], limit,
                fork["p50_ms"] <= limit)
        if fork and spawn:
            add(f"cold-fork >= {t.spawn_vs_fork_x:g}x faster than cold-spawn (p50)", speedup(),
                t.spawn_vs_fork_x, speedup() >= t.spawn_vs_fork_x, unit="x")
            if warm:
                # a model's own run time bounds the p50 ratio (a 150 ms task: at most ~10x);
                # what an executor adds over warm is what the choice between them costs
                fork_over = fork["p50_ms"] - warm["p50_ms"]
                spawn_over = spawn["p50_ms"] - warm["p50_ms"]
                ratio = spawn_over / fork_over if fork_over > 0 else math.inf
                add(f"cold-spawn's p50 overhead over warm >= {t.bundle_spawn_overhead_vs_fork_x:g}x cold-fork's",
                    ratio, t.bundle_spawn_overhead_vs_fork_x, ratio >= t.bundle_spawn_overhead_vs_fork_x, unit="x")
        return checks
    if fork and warm:
        if mode == "trivial":
            p50_limit = warm["p50_ms"] + t.fork_p50_over_warm_ms
            p95_limit = warm["p95_ms"] + t.fork_p95_over_warm_ms
            add(f"cold-fork p50 <= warm p50 + {t.fork_p50_over_warm_ms:g} ms", fork["p50_ms"], p50_limit,
                fork["p50_ms"] <= p50_limit)
            add(f"cold-fork p95 <= warm p95 + {t.fork_p95_over_warm_ms:g} ms", fork["p95_ms"], p95_limit,
                fork["p95_ms"] <= p95_limit)
            add(f"cold-fork CPU <= {t.fork_cpu_ms_per_task:g} ms/task", fork["cpu_ms_per_task"],
                t.fork_cpu_ms_per_task, fork["cpu_ms_per_task"] <= t.fork_cpu_ms_per_task)
        else:
            limit = t.realistic_fork_vs_warm_x * warm["p50_ms"]
            add(f"cold-fork p50 <= {t.realistic_fork_vs_warm_x:g} x warm p50", fork["p50_ms"], limit,
                fork["p50_ms"] <= limit)
    if fork and spawn and mode == "trivial":
        add(f"cold-fork >= {t.spawn_vs_fork_x:g}x faster than cold-spawn (p50)", speedup(),
            t.spawn_vs_fork_x, speedup() >= t.spawn_vs_fork_x, unit="x")
    return checks


def check_throughput_targets(result: dict, targets: Targets = Targets()) -> list[dict]:
    """`mops bench --throughput`'s targets, for the executors measured: each as {target, value, limit, unit, met}."""
    t, rows = targets, result["executors"]
    checks = []

    def add(name: str, value: float, limit: float, ok: bool, unit: str = "x") -> None:
        checks.append({"target": name, "value": round(value, 3), "limit": round(limit, 3), "unit": unit, "met": ok})

    for name, minimum in (("direct", t.throughput_direct_x), ("isolated_warm", t.throughput_warm_x)):
        if name in rows:
            got = rows[name]["ratio_vs_plain"]
            add(f"{name}: mops run >= {minimum:g}x plain Dask tasks/s", got, minimum, got >= minimum)
    if "cold-fork" in rows and rows["cold-fork"].get("floor"):
        floor = rows["cold-fork"]["floor"]
        ratio = floor["floor_tasks_per_s"] / rows["cold-fork"]["mops_run"]["tasks_per_s"]
        add(f"cold-fork: mops run within {t.throughput_cold_floor_x:g}x of its floor "
            f"({floor['floor_tasks_per_s']:.0f} tasks/s: min({floor['slots']} threads, "
            f"{floor.get('cores', floor['slots'])} cores) / "
            f"{1000 * floor['task_s']:.2f} ms median task)", ratio, t.throughput_cold_floor_x,
            ratio <= t.throughput_cold_floor_x)
    long = result.get("long_tasks")
    if long:
        got = long["ratio_vs_plain"]
        add(f"direct, {1000 * long['task_s']:.0f} ms tasks: mops run >= {t.throughput_long_direct_x:g}x plain Dask "
            "tasks/s", got, t.throughput_long_direct_x, got >= t.throughput_long_direct_x)
    return checks
