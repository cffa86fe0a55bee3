"""`mops config check`: validate this environment exactly as a worker would."""

from __future__ import annotations

import json
import sys

import click

from modelops.settings import ConfigError
from modelops.worker.config import RuntimeConfig
from modelops.worker.logs import configure_logging


@click.group()
def config() -> None:
    """Worker configuration."""


@config.command("check")
def check() -> None:
    """Validate the MODELOPS_* environment; print the effective config, or exit 2 with the error."""
    configure_logging("WARNING")
    try:
        effective = RuntimeConfig.from_env()
    except ConfigError as exc:
        click.echo(f"invalid worker environment: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(effective.summary(), indent=2, sort_keys=True))
