"""`mops results`: read a job's or a study's results back from a results store, or serve a store.

A store is reached directly (`--store URL`: a directory, or s3:// with AWS_* credentials in the
environment), or through a release of the chart (`--release NAME -n NS`): its results server, by
the Kubernetes API server's service proxy, with the user's own kubeconfig and RBAC. With
`--release`, a release whose store is s3:// is read directly when this machine has AWS credentials
(`--via auto`, the default), else through the cluster; `--via` forces one way, and the way taken is
always printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelops.results.report import FORMATS


def store_options(command):
    for option in reversed([
        click.option("--store", "store_url", metavar="URL", help="The store itself: file:///path or s3://bucket/prefix."),
        click.option("--release", help="A release of the chart (jobs.enabled): read its store through the cluster."),
        click.option("-n", "--namespace", help="The release's namespace [default: the kubeconfig context's]."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False), help="[default: $KUBECONFIG or ~/.kube/config]"),
        click.option("--context", help="kubeconfig context [default: the current one]."),
        click.option("--via", type=click.Choice(["auto", "direct", "cluster"]), default="auto", show_default=True,
                     help="With --release: read an s3:// store directly or through the cluster."),
    ]):
        command = option(command)
    return command


@click.group()
def results() -> None:
    """Read results back from a results store (show, download), or serve one (serve)."""


def open_for_reading(store_url, release, namespace, kubeconfig, context, via):
    """The store to read, and a line saying how it is reached."""
    from modelops.results.blobs import Retry
    from modelops.results.store import ResultsStore
    from modelops.results.url import StoreError

    if bool(store_url) == bool(release):
        raise click.UsageError("give exactly one of --store URL or --release NAME")
    try:
        if store_url:
            store = ResultsStore.open(store_url, Retry(deadline=20.0))
            return store, f"reading {store.description} directly"
        from modelops.jobs.kube import JobsError, Kube
        from modelops.jobs.release import ReleaseJobs

        try:
            kube = Kube.connect(kubeconfig, context, namespace)
            return ReleaseJobs.find(kube, release).results_store(kube, via)
        except JobsError as exc:
            raise click.ClickException(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@results.command()
@click.argument("target", metavar="JOB|STUDY")
@store_options
def show(target, store_url, release, namespace, kubeconfig, context, via):
    """Summary of a job's or a study's results: tasks, failures by kind, executor per worker, distinct
    (worker, PID) pairs, wall time."""
    from modelops.results import report
    from modelops.results.url import StoreError

    store, how = open_for_reading(store_url, release, namespace, kubeconfig, context, via)
    click.echo(how, err=True)
    try:
        for line in report.show(store, report.find(store, target)):
            click.echo(line)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@results.command()
@click.argument("target", metavar="JOB|STUDY")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="[default: TARGET.FORMAT; - for stdout]")
@store_options
def download(target, fmt, output, store_url, release, namespace, kubeconfig, context, via):
    """A job's or a study's results, one row per task (the latest), provenance as columns."""
    from modelops.results import report
    from modelops.results.url import StoreError

    store, how = open_for_reading(store_url, release, namespace, kubeconfig, context, via)
    click.echo(how, err=True)
    try:
        found = report.find(store, target)
        table = report.latest(store, found)
        data = report.export(table, fmt)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    output = output or f"{target}.{fmt}"
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(output).write_bytes(data)
        click.echo(f"{found.describe()}: {table.num_rows} result(s) written to {output} ({fmt})", err=True)


@results.command()
@click.option("--store", "store_url", metavar="URL", required=True, help="The store to serve (read-only).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def serve(store_url, host, port):
    """Serve a store's objects over HTTP, read-only (the chart's results server)."""
    import logging

    from modelops.results.blobs import Retry, open_blobs
    from modelops.results.server import ResultsServer
    from modelops.results.url import StoreUrlError, parse_store_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    try:
        url = parse_store_url(store_url)
    except StoreUrlError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None
    server = ResultsServer(open_blobs(url, Retry(deadline=10.0)), str(url), host, port)
    status = server.store_status()
    click.echo(f"Serving results store {url.describe()} read-only on http://{host}:{server.server_address[1]} "
               f"(store {'reachable' if status['ok'] else 'NOT reachable: ' + status['error']})", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
