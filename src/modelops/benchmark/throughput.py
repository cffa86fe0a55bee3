"""Study throughput: `mops run` against plain Dask `client.map` of the same entrypoint.

For short tasks the path around the executor (submission, validation, results file, progress)
sets the pace, so this times whole studies, not single executor calls. Per executor it starts one
real local cluster (the executor comes from the workers' environment, as in a pod) and, in the same
rounds on that cluster, runs the study's tasks (a) as plain `client.map` of the bundle's entrypoint
and (b) through `mops run`'s own code path (`StudyRun`, results file included). Ratios are taken
within a round, so load drifting on the machine hits both alike; the medians over rounds are kept.

With `transports` ("tcp,tls") it does the same on two clusters per executor, alive side by side:
plain TCP and mutual TLS as a release has it (a throwaway CA; the pods' certificate and a client
certificate it signed). Each path runs on one and then at once on the other (which goes first
alternates by round), and it reports what TLS costs: the TLS/TCP ratio of tasks/s and the wall
time and client CPU it adds per task, medians of per-round values.

It also reports client CPU per task, client and scheduler peak RSS (VmHWM, reset before each run
through /proc/PID/clear_refs), and one extra profiled `mops run` pass: cProfile in the client's main
thread and in its event-loop thread (where distributed (de)serialises and talks to the scheduler).
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from modelops.benchmark.executors import EXECUTOR_ENVS as ALL_EXECUTOR_ENVS
from modelops.benchmark.targets import Targets, check_throughput_targets
from modelops.bundles.bundle import read_manifest
from modelops.routing import Requirement
from modelops.settings import BUNDLES_DIR_VARIABLE
from modelops.study import Study, StudyError

# the executors a throughput run may compare (cold spawn is measured by `mops bench` alone)
EXECUTOR_ENVS = {name: env for name, env in ALL_EXECUTOR_ENVS.items() if name != "cold-spawn"}
DEFAULT_TASKS = 1000
DEFAULT_ROUNDS = 3
PROFILE_TOP = 15
# Blocking waits, not work: left out of the profile's top list (their time is idle time).
WAITS = ("<method 'acquire' of '_thread.lock' objects>", "<method 'poll' of 'select.epoll' objects>",
         "<built-in method time.sleep>", "<method 'wait' of")
DEFAULT_THREADS = 2  # per worker: the measurements are 2 workers x 2 threads
# ~200 ms tasks (the `sleep` example bundle beside the study's): does batching cost load balance? This many
# tasks per cluster thread, on the direct cluster.
LONG_TASK_S = 0.2
LONG_TASKS_PER_THREAD = 10
LONG_BUNDLE = "sleep"
# What a cluster's connections use; the first one given is the baseline the other is compared with.
TRANSPORTS = ("tcp", "tls")


class ThroughputError(ValueError):
    """A throughput benchmark that cannot run as asked; names the option and the value."""


# -- what plain Dask runs on a worker -------------------------------------------------------
_entrypoints: dict[tuple[str, str], Callable] = {}


def call_entrypoint(params: dict, seed: int, bundle_dir: str, entrypoint: str):
    """Plain Dask's task: the bundle's `simulate(params, seed)` in the worker process, imported once."""
    fn = _entrypoints.get((bundle_dir, entrypoint))
    if fn is None:
        module, _, name = entrypoint.partition(":")
        if bundle_dir not in sys.path:
            sys.path.insert(0, bundle_dir)
        fn = _entrypoints[(bundle_dir, entrypoint)] = getattr(importlib.import_module(module), name)
    return fn(params, seed)


def check_transports(transports: Sequence[str]) -> tuple[str, ...]:
    """The transports to measure, tcp first (the baseline), each once."""
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown or not transports or len(set(transports)) < len(transports):
        repeated = sorted({t for t in transports if transports.count(t) > 1})
        problem = f"unknown {unknown}" if unknown else f"repeated {repeated}" if repeated else "none given"
        raise ThroughputError(f"transports {','.join(transports)!r}: {problem}; allowed: a comma list of "
                              f"{', '.join(TRANSPORTS)}, each at most once")
    return tuple(t for t in TRANSPORTS if t in transports)


# -- process memory -------------------------------------------------------------------------
def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"VmHWM not found for PID {pid}")


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: '5' to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# -- the two paths --------------------------------------------------------------------------
def expand(study: Study, n_tasks: int | None) -> Study:
    """The study with enough replicates for at least n_tasks tasks, restrictions dropped (the
    bench cluster has one executor and no groups)."""
    update: dict = {"requires": Requirement()}
    if n_tasks:
        update["replicates"] = math.ceil(n_tasks / len(study.parameters))
    return study.model_copy(update=update)


def run_plain(client, study: Study, bundle_dir: str, entrypoint: str) -> int:
    params = [p for p in study.parameters for _ in range(study.replicates)]
    seeds = [study.replicate_seed(r) for _ in study.parameters for r in range(study.replicates)]
    futures = client.map(call_entrypoint, params, seeds, bundle_dir=bundle_dir, entrypoint=entrypoint, pure=False)
    results = client.gather(futures)
    del futures
    return len(results)


def run_mops(client, study: Study, output: Path, chunk_size: int | None = None) -> int:
    from modelops.services.study_run import StudyRun

    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        summary = StudyRun(client, study, output=str(output), progress=True, chunk_size=chunk_size,
                           say=lambda text: None, warn=lambda text: None).run().summary
    if summary.failed:
        raise RuntimeError(f"{summary.failed} task(s) of the throughput study failed: {summary.failures[:3]}")
    with output.open("rb") as fh:
        return sum(1 for _ in fh)


def measure(run: Callable[[], int], scheduler_pid: int) -> dict:
    me = os.getpid()
    reset_peak_rss(me)
    reset_peak_rss(scheduler_pid)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "tasks": done,
        "wall_s": wall,
        "tasks_per_s": done / wall,
        "client_cpu_ms_per_task": 1000 * cpu / done,
        "client_peak_rss_mib": peak_rss_mib(me),
        "scheduler_peak_rss_mib": peak_rss_mib(scheduler_pid),
    }


def profile(client, run: Callable[[], int], top: int = PROFILE_TOP) -> dict:
    """cProfile of the client's main thread and its event-loop thread during one run (CPU time)."""
    from distributed.utils import sync

    # thread CPU time, not wall time: on a loaded machine wall time counts waiting for a core
    main, loop = cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)

    async def enable():
        loop.enable()

    async def disable():
        loop.disable()

    sync(client.loop, enable)
    main_cpu0, cpu0 = time.thread_time(), time.process_time()
    main.enable()
    try:
        done = run()
    finally:
        main.disable()
        sync(client.loop, disable)
    main_cpu, cpu = time.thread_time() - main_cpu0, time.process_time() - cpu0
    stats = pstats.Stats(main)
    stats.add(loop)
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
        if any(name.startswith(w) for w in WAITS):
            continue
        rows.append({
            "function": f"{_short(filename)}:{line}({name})",
            "calls": calls,
            "tottime_us_per_task": 1e6 * tottime / done,
            "cumtime_us_per_task": 1e6 * cumtime / done,
        })
    rows.sort(key=lambda r: r["tottime_us_per_task"], reverse=True)
    return {
        "tasks": done,
        "main_thread_cpu_ms_per_task": 1000 * main_cpu / done,
        "other_threads_cpu_ms_per_task": 1000 * (cpu - main_cpu) / done,
        "top_tottime": rows[:top],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- the benchmark --------------------------------------------------------------------------
def run_throughput(
    study_path: Path,
    n_tasks: int | None = DEFAULT_TASKS,
    executors: tuple[str, ...] = tuple(EXECUTOR_ENVS),
    rounds: int = DEFAULT_ROUNDS,
    workers: int = 2,
    threads: int = DEFAULT_THREADS,
    bundles_dir: Path | None = None,
    with_profile: bool = True,
    progress: Callable[[str], None] = lambda message: None,
    transports: Sequence[str] = ("tcp",),
    targets: Targets = Targets(),
    long_tasks: bool = True,
) -> dict:
    from modelops.services.dask_simulation import DaskSimulationService
    from modelops.tls import make_throwaway_tls

    unknown = [e for e in executors if e not in EXECUTOR_ENVS]
    if unknown or not executors:
        raise ThroughputError(f"executors {list(executors)}: unknown {unknown}; allowed: {', '.join(EXECUTOR_ENVS)}")
    transports = check_transports(transports)
    study = expand(Study.load(study_path), n_tasks)
    bundles_dir = Path(bundles_dir or Path(study_path).resolve().parent.parent).resolve()
    bundle_dir = bundles_dir / study.bundle
    if not (bundle_dir / "bundle.json").is_file():
        raise ThroughputError(f"study bundle {study.bundle!r}: no {bundle_dir}/bundle.json (plain Dask imports the "
                              "bundle from its directory, so the throughput bench needs a file bundle)")
    out: dict = {
        "study": str(study_path), "tasks": len(study.parameters) * study.replicates, "workers": workers,
        "threads": threads, "rounds": rounds, "transports": list(transports), "executors": {},
    }
    base = transports[0]
    with tempfile.TemporaryDirectory(prefix="mops-throughput-") as tmp:
        tls = make_throwaway_tls(Path(tmp) / "tls") if "tls" in transports else None
        for name in executors:
            env = {**EXECUTOR_ENVS[name], BUNDLES_DIR_VARIABLE: str(bundles_dir)}
            with contextlib.ExitStack() as stack:
                sides = {}
                for transport in transports:
                    progress(f"{name}: starting a local {transport} cluster ({workers} worker(s) x {threads} "
                             "thread(s))")
                    sides[transport] = _Side.start(stack, transport, env, workers, threads,
                                                   Path(tmp) / f"{name}-{transport}", tls)
                first = sides[base].client
                entrypoint = study.entrypoint or DaskSimulationService(first).resolve_bundle(study.bundle)["entrypoint"]
                for side in sides.values():
                    side.warm_up(study, str(bundle_dir), entrypoint)
                runs = {t: {path: [] for path in PATH_LABELS} for t in transports}
                for r in range(rounds):
                    # each path on one transport, then at once on the other; who goes first alternates by round
                    order = list(sides.values())[::-1 if r % 2 else 1]
                    for path in PATH_LABELS:
                        for side in order:
                            runs[side.transport][path].append(measure(side.paths[path], side.cluster.scheduler.pid))
                    progress(f"{name} round {r + 1}/{rounds}: " + "; ".join(
                        f"{t} " + ", ".join(f"{path} {samples[-1]['tasks_per_s']:.0f}" for path, samples in by.items())
                        for t, by in runs.items()) + " tasks/s")
                row = {**_row(runs[base]), **sides[base].addresses()}
                for transport in transports[1:]:
                    row[transport] = {**_row(runs[transport]), **sides[transport].addresses()}
                    row[f"{transport}_vs_{base}"] = transport_cost(runs, base, transport)
                if name == "cold-fork":
                    row["floor"] = cold_floor(sides[base].output, workers * threads)
                if with_profile:
                    progress(f"{name}: one profiled mops run ({base})")
                    row["profile"] = profile(first, sides[base].paths["mops_run"])
                if name == "direct" and long_tasks and (bundles_dir / LONG_BUNDLE / "bundle.json").is_file():
                    out["long_tasks"] = _long_tasks(sides[base], bundles_dir, workers * threads, rounds, progress)
                out["executors"][name] = row
    out["targets"] = check_throughput_targets(out, targets)
    return out


def cold_floor(results: Path, slots: int, cores: int | None = None) -> dict:
    """What cold fork's own cost allows on these cores: every cluster thread busy for a task's measured
    duration (provenance `duration_s`, the fork, the run and the child's exit, as measured on the worker under
    this load) and nothing else, with no more tasks at once than there are cores to run them (a forked task
    is CPU work: 4 threads on 2 cores run 2 at a time); from the results of the last mops run."""
    import json

    with results.open() as fh:
        durations = [json.loads(line)["provenance"]["duration_s"] for line in fh]
    task_s = statistics.median(durations)
    cores = cores or len(os.sched_getaffinity(0))
    running = min(slots, cores)
    return {"slots": slots, "cores": cores, "task_s": task_s, "floor_tasks_per_s": running / task_s}


def _long_tasks(side: _Side, bundles_dir: Path, slots: int, rounds: int, progress: Callable[[str], None]) -> dict:
    """~LONG_TASK_S tasks on the same cluster: plain Dask against mops run (chunks sized from durations, which
    must then be one task per Dask task), ratios within a round."""
    study = Study(name="long", bundle=LONG_BUNDLE,
                  parameters=[{"seconds": LONG_TASK_S, "i": i} for i in range(LONG_TASKS_PER_THREAD * slots)])
    bundle_dir = str(bundles_dir / LONG_BUNDLE)
    entrypoint = read_manifest(bundles_dir / LONG_BUNDLE)["entrypoint"]
    paths = {"plain_dask": lambda: run_plain(side.client, study, bundle_dir, entrypoint),
             "mops_run": lambda: run_mops(side.client, study, side.output)}
    runs: dict[str, list[dict]] = {path: [] for path in paths}
    for r in range(rounds):
        for path, run in paths.items():
            runs[path].append(measure(run, side.cluster.scheduler.pid))
        progress(f"direct, {LONG_TASK_S * 1000:.0f} ms tasks, round {r + 1}/{rounds}: " + ", ".join(
            f"{path} {samples[-1]['tasks_per_s']:.1f}" for path, samples in runs.items()) + " tasks/s")
    row = _row(runs)
    return {"tasks": len(study.parameters), "task_s": LONG_TASK_S, **row}


class _Side:
    """One executor's local cluster on one transport, its client, and the three paths bound to them."""

    def __init__(self, transport: str, cluster, client, output: Path):
        self.transport, self.cluster, self.client, self.output = transport, cluster, client, output
        self.paths: dict[str, Callable[[], int]] = {}

    @classmethod
    def start(cls, stack: contextlib.ExitStack, transport: str, env: dict, workers: int, threads: int,
              directory: Path, tls) -> _Side:
        from distributed import Client

        from modelops.local_cluster import LocalProcessCluster

        options = {"n_workers": workers, "nthreads": threads, "env": env, "log_dir": directory / "logs"}
        cluster = LocalProcessCluster.over_tls(tls.pods_dir, tls.client, **options) if transport == "tls" \
            else LocalProcessCluster(**options)
        stack.enter_context(cluster)
        client = stack.enter_context(Client(cluster.address, security=cluster.client_security))
        return cls(transport, cluster, client, directory / "results.jsonl")

    def warm_up(self, study: Study, bundle_dir: str, entrypoint: str) -> None:
        """Bind the paths to the study, then run each once: imports, pools and zygotes started."""
        client, output = self.client, self.output
        self.paths = {
            "plain_dask": lambda: run_plain(client, study, bundle_dir, entrypoint),
            "mops_run": lambda: run_mops(client, study, output),
            "mops_run_chunk_1": lambda: run_mops(client, study, output, chunk_size=1),
        }
        warm = study.model_copy(update={"replicates": 1})
        run_plain(client, warm, bundle_dir, entrypoint)
        run_mops(client, warm, output)

    def addresses(self) -> dict:
        """Where the client and the workers really talk: a tls:// scheme here is TLS in use, not just asked for."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return {"transport": self.transport, "scheduler_address": self.client.scheduler.address,
                "worker_addresses": sorted(workers)}


def _row(runs: dict[str, list[dict]]) -> dict:
    """One transport's medians over rounds, each path's ratio to plain Dask taken within a round."""
    row: dict = {path: _median(samples) for path, samples in runs.items()}
    for path in runs:
        row[path]["ratio_vs_plain"] = statistics.median(
            m["tasks_per_s"] / p["tasks_per_s"] for p, m in zip(runs["plain_dask"], runs[path])
        )
    row["ratio_vs_plain"] = row["mops_run"]["ratio_vs_plain"]
    row["rounds"] = runs
    return row


def transport_cost(runs: dict[str, dict[str, list[dict]]], base: str, other: str) -> dict:
    """Per path, what `other` costs against `base`, from the pairs run in the same round: the ratio of tasks/s,
    the wall time it adds per task (1/tasks-per-s: the 2 workers' parallelism included) and the client CPU it
    adds per task; medians over rounds."""
    cost = {}
    for path in PATH_LABELS:
        pairs = list(zip(runs[base][path], runs[other][path]))
        per_round = {
            f"{base}_tasks_per_s": [b["tasks_per_s"] for b, _ in pairs],
            f"{other}_tasks_per_s": [o["tasks_per_s"] for _, o in pairs],
            "ratio": [o["tasks_per_s"] / b["tasks_per_s"] for b, o in pairs],
            "added_us_per_task": [1e6 * (1 / o["tasks_per_s"] - 1 / b["tasks_per_s"]) for b, o in pairs],
            "added_client_cpu_us_per_task": [1000 * (o["client_cpu_ms_per_task"] - b["client_cpu_ms_per_task"])
                                             for b, o in pairs],
        }
        cost[path] = {key: statistics.median(values) for key, values in per_round.items()}
    return cost


PATH_LABELS = {"plain_dask": "plain Dask client.map", "mops_run": "mops run",
               "mops_run_chunk_1": "mops run --chunk-size 1"}


def _median(samples: list[dict]) -> dict:
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def format_table(result: dict) -> str:
    lines = [
        f"Study throughput: {result['tasks']} tasks of {result['study']}, {result['workers']} worker(s) x "
        f"{result['threads']} thread(s), median of {result['rounds']} round(s)",
        "",
        f"{'executor':<18} {'path':<26} {'tasks/s':>8} {'vs plain':>9} {'client CPU ms/task':>19} "
        f"{'client peak MiB':>16} {'sched peak MiB':>15}",
    ]
    transports = result.get("transports", ["tcp"])
    for name, row in result["executors"].items():
        for transport in transports:
            stats_of = row if transport == transports[0] else row[transport]
            label = name if transports == ["tcp"] else f"{name} {transport}"
            for path, path_label in PATH_LABELS.items():
                stats = stats_of[path]
                lines.append(
                    f"{label:<18} {path_label:<26} {stats['tasks_per_s']:>8.0f} {stats['ratio_vs_plain']:>8.2f}x "
                    f"{stats['client_cpu_ms_per_task']:>19.3f} {stats['client_peak_rss_mib']:>16.1f} "
                    f"{stats['scheduler_peak_rss_mib']:>15.1f}"
                )
    base = transports[0]
    for other in transports[1:]:
        lines += ["", f"{other} against {base}: clusters side by side, each path on both in every round (who goes "
                      "first alternates); medians of per-round values; 'added' is per task of the study's wall time",
                  f"{'executor':<18} {'path':<26} {base + ' tasks/s':>11} {other + ' tasks/s':>11} "
                  f"{other + '/' + base:>8} {'added us/task':>14} {'added client CPU us/task':>25}"]
        for name, row in result["executors"].items():
            lines.append(f"{name:<18} {row['scheduler_address']} and {row[other]['scheduler_address']}")
            for path, path_label in PATH_LABELS.items():
                c = row[f"{other}_vs_{base}"][path]
                lines.append(f"{'':<18} {path_label:<26} {c[base + '_tasks_per_s']:>11.0f} "
                             f"{c[other + '_tasks_per_s']:>11.0f} {c['ratio']:>7.2f}x {c['added_us_per_task']:>14.0f} "
                             f"{c['added_client_cpu_us_per_task']:>25.0f}")
    for name, row in result["executors"].items():
        prof = row.get("profile")
        if not prof:
            continue
        lines += ["", f"{name}: where the client's time goes in one mops run (cProfile CPU time, main + event-loop thread; "
                      f"CPU ms/task main {prof['main_thread_cpu_ms_per_task']:.3f}, "
                      f"other threads {prof['other_threads_cpu_ms_per_task']:.3f})",
                  f"  {'tottime us/task':>15} {'cumtime us/task':>15} {'calls':>8}  function"]
        for r in prof["top_tottime"]:
            lines.append(f"  {r['tottime_us_per_task']:>15.1f} {r['cumtime_us_per_task']:>15.1f} {r['calls']:>8}  "
                         f"{r['function']}")
    long = result.get("long_tasks")
    if long:
        lines += ["", f"{long['tasks']} tasks of {1000 * long['task_s']:.0f} ms on the direct cluster (load balance):"]
        for path in ("plain_dask", "mops_run"):
            stats = long[path]
            lines.append(f"{'direct':<18} {PATH_LABELS[path]:<26} {stats['tasks_per_s']:>8.1f} "
                         f"{stats['ratio_vs_plain']:>8.2f}x")
    if result.get("targets"):
        lines.append("")
        for t in result["targets"]:
            lines.append(f"target {t['target']}: measured {t['value']}{t['unit']} -> {'PASS' if t['met'] else 'FAIL'}")
    return "\n".join(lines)


def bench_study(ctx, study_path: Path, n_tasks: int, executor_names: tuple[str, ...], rounds: int,
                json_path: Path | None, transports: tuple[str, ...] = ("tcp",), targets: Targets = Targets()) -> None:
    """`mops bench --throughput STUDY.json`: this benchmark, from `mops bench`'s options.
    --tasks and --rounds keep their meaning; their defaults here are DEFAULT_TASKS and DEFAULT_ROUNDS."""
    import json

    import click

    from modelops.tls import CertificateError

    given = lambda option: ctx.get_parameter_source(option) is not click.core.ParameterSource.DEFAULT  # noqa: E731
    for option in ("mode", "heavy_modules", "concurrency", "spawn_tasks", "gap_ms", "warmup_compare"):
        if given(option):
            raise click.BadParameter("does not apply to the study throughput benchmark (--study without --bundle)",
                                     param_hint=f"--{option.replace('_', '-')}")
    executors = executor_names if given("executor_names") else tuple(EXECUTOR_ENVS)
    try:
        transports = check_transports(transports)
    except ThroughputError as exc:
        raise click.BadParameter(str(exc), param_hint="--transports") from None
    try:
        result = run_throughput(
            study_path, n_tasks=n_tasks if given("n_tasks") else DEFAULT_TASKS, executors=executors,
            rounds=rounds if given("rounds") else DEFAULT_ROUNDS,
            progress=lambda message: click.echo(f"... {message}", err=True), transports=transports,
            targets=targets,
        )
    except (ThroughputError, StudyError, CertificateError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)
