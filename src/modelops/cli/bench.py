"""`mops bench` (placeholder until the benchmark lands)."""

import click


@click.command()
def bench() -> None:
    """Benchmark executors side by side."""
    raise click.ClickException("mops bench is not implemented yet")
