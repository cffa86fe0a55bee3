"""The bench's text report: one table per concurrency, warm-up effect, targets met or not."""

from __future__ import annotations

COLUMNS = (
    ("executor", "{:<20}", None),
    ("tasks", "{:>6}", "tasks"),
    ("first ms", "{:>10.1f}", "first_task_ms"),
    ("p50 ms", "{:>9.2f}", "p50_ms"),
    ("p95 ms", "{:>9.2f}", "p95_ms"),
    ("CPU ms/task", "{:>12.2f}", "cpu_ms_per_task"),
    ("tasks/s", "{:>9.1f}", "tasks_per_s"),
    ("p50 vs warm", "{:>12}", "overhead_vs_warm_p50_ms"),
    ("x warm", "{:>8}", "p50_vs_warm_x"),
)


def format_table(result: dict) -> str:
    if result["mode"] == "bundle":
        lines = [
            f"mops bench: bundle {result['bundle_name']!r} ({result['bundle']}) entrypoint={result['entrypoint']} "
            f"study={result['study'] or '(none: empty params)'} ({result['study_tasks']} tasks, cycled)",
            f"  tasks={result['tasks']} (cold-spawn {result['spawn_tasks']}) rounds={result['rounds']} "
            f"gap={result['gap_ms']:g} ms cpus={result['machine']['cpus']} load={result['machine']['load_avg_1m']}",
            f"  declared warm-up: {result['warmup']}",
            *(f"  {label}: {what}" for label, what in result["warmup_columns"].items()),
            "  first ms = the first task of each column (pool or zygote start, imports, warm-up)",
        ]
    else:
        lines = [
            f"mops bench: mode={result['mode']} heavy modules={','.join(result['heavy_modules']) or '(none)'} "
            f"tasks={result['tasks']} (cold-spawn {result['spawn_tasks']}) rounds={result['rounds']} "
            f"gap={result['gap_ms']:g} ms "
            f"cpus={result['machine']['cpus']} load={result['machine']['load_avg_1m']}",
        ]
    header = "".join(
        fmt.replace(".1f", "").replace(".2f", "").format(title) for title, fmt, _ in COLUMNS
    )
    for concurrency, row in result["by_concurrency"].items():
        lines += ["", f"concurrency {concurrency}", header]
        for name, stats in row.items():
            cells = []
            for title, fmt, key in COLUMNS:
                if key is None:
                    cells.append(fmt.format(name))
                elif key == "overhead_vs_warm_p50_ms":
                    value = stats.get(key)
                    cells.append(fmt.format("-" if value is None else f"{value:+.2f} ms"))
                elif key == "p50_vs_warm_x":
                    value = stats.get(key)
                    cells.append(fmt.format("-" if value is None else f"{value:.2f}x"))
                else:
                    cells.append(fmt.format(stats[key]))
            lines.append("".join(cells))
        effect = result.get("warmup_effect", {}).get(concurrency)
        if effect:
            lines.append(
                f"  warm-up: cold-fork p50 {effect['p50_with_ms']:.2f} ms with it, {effect['p50_without_ms']:.2f} ms "
                f"without: it saves {effect['saves_ms_per_task']:+.2f} ms per task"
            )
        spare = row.get("cold-fork-nospare")
        if spare and "cold-fork" in row:
            with_s, without = row["cold-fork"], spare
            lines.append(
                f"  spares repeating the warm-up: cold-fork p50 {with_s['p50_ms']:.2f} ms ({with_s.get('p50_vs_warm_x', 0):.2f}x warm)"
                f" with it, {without['p50_ms']:.2f} ms ({without.get('p50_vs_warm_x', 0):.2f}x) without"
            )
        env = result.get("environment_effect", {}).get(concurrency)
        if env:
            lines.append(
                f"  bundle environment: cold fork costs {env['fork_overhead_env_ms']:+.2f} ms over warm (p50) inside "
                f"it, {env['fork_overhead_ms']:+.2f} ms in the worker's own environment "
                f"({'-' if env['difference_pct'] is None else format(env['difference_pct'], '+.1f')} %; target "
                f"within 10 %); " + (f"built by this concurrency's first +env column in {env['build_ms']:.0f} ms"
                                     if env["build_ms"] else "environment built at an earlier concurrency, reused")
            )
        for check in result["targets"].get(concurrency, []):
            unit = check["unit"]
            lines.append(
                f"  {'MET    ' if check['met'] else 'NOT MET'} {check['target']}: "
                f"{check['value']:.2f}{unit if unit == 'x' else ' ' + unit} (limit {check['limit']:.2f})"
            )
    for where, errors in result["failures"].items():
        lines.append(f"FAILED tasks in {where}: {errors[0]}")
    return "\n".join(lines)
