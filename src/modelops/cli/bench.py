"""`mops bench`: the same task N times through each executor, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import click

from modelops.benchmark.bench_bundle import DEFAULT_HEAVY, MODES
from modelops.benchmark.report import format_table
from modelops.benchmark.runner import EXECUTORS, run_bench, run_bundle_bench
from modelops.benchmark.targets import target_options
from modelops.bundles.bundle import BundleError
from modelops.study import StudyError


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
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Benchmark this bundle directory (with bundle.json) instead of the built-in model; "
                   "cold fork runs both with and without its warm-up.")
@click.option("--study", "study_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="With --bundle: the study whose tasks (params x replicate seeds) are cycled "
                   "[default: DIR/study.json if present, else empty params].")
@click.option("--throughput", "throughput_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Study throughput instead: this study's tasks as plain Dask client.map against mops run, "
                   "per executor on real local clusters (--tasks default 1000, --rounds default 3).")
@click.option("--transports", default="tcp", show_default=True,
              help="With --throughput: comma list of tcp, tls. 'tcp,tls' runs each executor's rounds on a plain-TCP "
                   "and a mutual-TLS local cluster side by side (throwaway CA, openssl CLI) and reports what TLS "
                   "costs per task.")
@click.option("--warmup-compare/--no-warmup-compare", default=True, show_default=True,
              help="With --bundle: add a cold-fork column without the declared warm-up (or, when none "
                   "is declared, with a candidate warm-up running the study's first task).")
@click.option("--environment-compare", is_flag=True,
              help="Built-in model: also run each child executor with the bench bundle in a bundle environment "
                   "(a requirements.txt, empty: the worker's packages), columns +env, and compare cold fork's "
                   "cost over warm there with the same in the worker's own environment.")
@target_options
@click.pass_context
def bench(ctx, mode, n_tasks, spawn_tasks, concurrency, heavy_modules, executor_names, gap_ms, rounds, json_path,
          bundle_dir, study_path, warmup_compare, targets, throughput_path, environment_compare, transports) -> None:
    """Benchmark executors side by side: p50/p95 wall, CPU per task, tasks/s, ratio to warm.

    Without --bundle: the built-in bench model (--mode). With --bundle DIR: your own bundle."""
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
    if throughput_path is not None:  # issue 15: the path around the executor, whole studies
        from modelops.benchmark.throughput import bench_study

        return bench_study(ctx, throughput_path, n_tasks, executors, rounds, json_path, _csv(transports), targets)
    if ctx.get_parameter_source("transports") is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter("applies to --throughput only", param_hint="--transports")
    if bundle_dir is None:
        if study_path is not None:
            raise click.BadParameter("--study needs --bundle", param_hint="--study")
    else:
        for option in ("mode", "heavy_modules", "environment_compare"):
            if ctx.get_parameter_source(option) is not click.core.ParameterSource.DEFAULT:
                raise click.BadParameter(
                    "applies to the built-in bench model only, not with --bundle",
                    param_hint=f"--{option.replace('_', '-')}",
                )
        try:
            result = run_bundle_bench(
                bundle_dir, study_path, n_tasks=n_tasks, spawn_tasks=spawn_tasks, concurrencies=concurrencies,
                executors=executors, gap_ms=gap_ms, rounds=rounds, compare_warmup=warmup_compare,
                progress=lambda message: click.echo(f"... {message}", err=True), targets=targets,
            )
        except (BundleError, StudyError) as exc:
            raise click.ClickException(str(exc)) from None
        _report(result, json_path)
        return
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
        targets=targets,
        compare_environment=environment_compare,
    )
    _report(result, json_path)


def _report(result: dict, json_path: Path | None) -> None:
    click.echo(format_table(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)
    if result["failures"]:
        raise click.ClickException("some benchmark tasks failed (see above)")
