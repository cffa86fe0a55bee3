"""`mops bench`: the same task N times through each executor, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import click

from modelops.benchmark.runner import DEFAULT_HEAVY, EXECUTORS, MODES, format_table, run_bench


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@click.command()
@click.option("--mode", type=click.Choice(sorted(MODES)), default="trivial", show_default=True,
              help="trivial: a task that returns at once (pure overhead); "
                   "realistic: a ~100 ms stochastic SIR simulation.")
@click.option("--tasks", "n_tasks", type=click.IntRange(min=1), default=100, show_default=True,
              help="Measured tasks per executor and concurrency (warm-up excluded).")
@click.option("--spawn-tasks", type=click.IntRange(min=1), default=10, show_default=True,
              help="Cap on measured tasks for cold-spawn (each pays a whole interpreter start).")
@click.option("--concurrency", default="1,2", show_default=True,
              help="Comma list of thread counts (the worker's nthreads) to measure at.")
@click.option("--heavy-modules", default=",".join(DEFAULT_HEAVY), show_default=True,
              help="Comma list of modules the bench bundle imports at import time ('' for none).")
@click.option("--executors", "executor_names", default=",".join(EXECUTORS), show_default=True,
              help="Comma list of executors to measure.")
@click.option("--gap-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Pause after each task in each thread (tasks arriving with gaps).")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleave executors in this many rounds (fair under drifting machine load).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the numbers as JSON to this file.")
def bench(mode, n_tasks, spawn_tasks, concurrency, heavy_modules, executor_names, gap_ms, rounds, json_path) -> None:
    """Benchmark executors side by side: p50/p95 wall, CPU per task, tasks/s."""
    try:
        concurrencies = tuple(int(c) for c in _csv(concurrency))
    except ValueError:
        raise click.BadParameter(f"{concurrency!r} is not a comma list of integers", param_hint="--concurrency")
    if not concurrencies or min(concurrencies) < 1:
        raise click.BadParameter("give at least one concurrency >= 1", param_hint="--concurrency")
    executors = _csv(executor_names)
    unknown = [e for e in executors if e not in EXECUTORS]
    if unknown or not executors:
        raise click.BadParameter(
            f"unknown {unknown}; allowed: {', '.join(EXECUTORS)}", param_hint="--executors"
        )
    result = run_bench(
        mode=mode,
        n_tasks=n_tasks,
        spawn_tasks=spawn_tasks,
        concurrencies=concurrencies,
        heavy_modules=_csv(heavy_modules),
        executors=executors,
        gap_ms=gap_ms,
        rounds=rounds,
        progress=lambda message: click.echo(f"... {message}", err=True),
    )
    click.echo(format_table(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)
    if result["failures"]:
        raise click.ClickException("some benchmark tasks failed (see above)")
