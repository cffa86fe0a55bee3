"""`mops drain`: let this container's Dask workers finish their running tasks before they stop.

Run by the worker pod's preStop hook (the chart sets it), before the kubelet sends SIGTERM; see
`modelops.worker.drain` for what each worker does. Exit 0 when every worker drained in time, 1 when
one could not be reached or still had running tasks at the deadline (those are restarted elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from modelops.worker.drain import drain_addresses, local_addresses


@click.command("drain")
@click.option("--timeout", type=click.FloatRange(min=0), required=True,
              help="Seconds the running tasks may take to finish (the pod's grace period less a margin).")
@click.option("--worker", "workers", multiple=True,
              help="Worker address to drain (repeatable) [default: every worker process of this container].")
def drain(timeout: float, workers: tuple[str, ...]) -> None:
    """Stop taking tasks, hand back the ones not started, wait for the running ones to finish."""
    addresses = list(workers) or [address for _, address in local_addresses()]
    if not addresses:
        click.echo("mops drain: no worker process found in this container (nothing to drain)", err=True)
        sys.exit(0)
    outcomes = asyncio.run(drain_addresses(addresses, timeout))
    for outcome in outcomes:
        click.echo(json.dumps(outcome, sort_keys=True))
    sys.exit(1 if any("error" in o or o.get("unfinished") for o in outcomes) else 0)
