"""`mops`: run studies (here or submitted to a cluster), read their results, check workers and clusters, benchmark."""

from __future__ import annotations

import click

from modelops import __version__


@click.group()
@click.version_option(__version__, prog_name="mops")
def cli() -> None:
    """Simulation studies on Dask with per-task process isolation."""


def _register() -> None:
    from modelops.cli.bench import bench
    from modelops.cli.bundle_cmd import bundle
    from modelops.cli.config_cmd import config
    from modelops.cli.demand_cmd import demand
    from modelops.cli.doctor import doctor
    from modelops.cli.drain_cmd import drain
    from modelops.cli.jobs_cmd import jobs
    from modelops.cli.results_cmd import results
    from modelops.cli.run import run

    for command in (run, jobs, results, config, doctor, demand, drain, bench, bundle):
        cli.add_command(command)


def main() -> None:
    _register()
    cli()


if __name__ == "__main__":
    main()
