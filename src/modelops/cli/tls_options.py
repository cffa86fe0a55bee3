"""`--tls-ca-file/--tls-cert/--tls-key` of the commands that connect to a scheduler (`mops run`, `mops doctor`)."""

from __future__ import annotations

import click

from modelops.tls import TLSConfigError, client_security


def tls_options(command):
    """Adds the three options (each falls back to the Dask configuration, then to nothing)."""
    options = [
        click.option("--tls-key", metavar="PATH", help="With a tls:// scheduler: the client certificate's private "
                     "key (PEM) [default: distributed.comm.tls.client.key of the Dask configuration, or in "
                     "--tls-cert]."),
        click.option("--tls-cert", metavar="PATH", help="With a tls:// scheduler: this client's certificate (PEM), "
                     "signed by the cluster's CA [default: distributed.comm.tls.client.cert of the Dask "
                     "configuration]."),
        click.option("--tls-ca-file", metavar="PATH", help="With a tls:// scheduler: the CA certificate (PEM) that "
                     "signed the scheduler's and workers' certificates [default: distributed.comm.tls.ca-file of the "
                     "Dask configuration]."),
    ]
    for option in options:
        command = option(command)
    return command


def security_or_usage_error(scheduler: str, ca_file, cert, key):
    """The client's Security for `scheduler` (None for plain TCP); bad TLS input is a usage error (exit 2)
    naming the option and the path."""
    try:
        return client_security(scheduler, ca_file, cert, key)
    except TLSConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from None
