"""`mops demand --scheduler ADDR`: each worker group of the release as the scheduler sees it: pods ready,
the replicas it needs (what KEDA scales the group to), its min and max, and the tasks behind that
(modelops.scheduler.demand). Exit 4 when the scheduler cannot be reached."""

from __future__ import annotations

import json
import sys

import click

from modelops.cli.tls_options import security_or_usage_error, tls_options

COLUMNS = ("group", "executor", "ready", "desired", "min", "max", "tasks", "slots/pod")


@click.command("demand")
@click.option("--scheduler", required=True, help="Address of the Dask scheduler, e.g. tcp://host:8786 (tls:// "
              "with --tls-ca-file/--tls-cert/--tls-key).")
@click.option("--json", "as_json", is_flag=True, help="Print the scheduler's JSON (what /modelops/demand serves).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for the scheduler.")
@tls_options
def demand(scheduler, as_json, timeout, tls_ca_file, tls_cert, tls_key):
    """Per worker group: pods ready, desired replicas, min/max, pending tasks ("fixed": a group whose
    replicas no autoscaler sets)."""
    from distributed import Client

    from modelops.cli.run import EXIT_UNREACHABLE
    from modelops.services.dask_simulation import DaskSimulationService
    from modelops.services.versions import quiet_version_table

    security = security_or_usage_error(scheduler, tls_ca_file, tls_cert, tls_key)
    try:
        with quiet_version_table():
            client = Client(scheduler, timeout=timeout, security=security)
    except OSError as exc:
        click.echo(f"cannot reach scheduler {scheduler}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    with client:
        groups = DaskSimulationService(client).group_demand()
    if as_json:
        click.echo(json.dumps({"groups": groups}, indent=2, sort_keys=True))
        return
    if not groups:
        click.echo(f"scheduler {scheduler} lists no worker groups (MODELOPS_WORKER_GROUPS unset, or the scheduler "
                   "runs without the modelops preload)")
        return
    rows = [COLUMNS] + [(name, g["executor"], g["ready"], *((g["desired"], g["min"], g["max"]) if g["autoscaled"]
                                                           else ("fixed", "-", "-")), g["tasks"], g["slots"])
                        for name, g in sorted(groups.items())]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
