"""`mops bundle push DIR REF` and `mops bundle inspect REF`: bundles as artifacts in an OCI registry.

Push builds the reproducible artifact of DIR (bundles/artifact.py: the same files give the same
digest on every machine) and uploads it with the ORAS SDK (bundles/oci.py); it prints the manifest
digest, which is what a study should pin. Credentials come from the docker config file
($DOCKER_CONFIG/config.json or ~/.docker/config.json, as `docker login` writes it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from modelops.bundles.bundle import BundleError

PLAIN_HTTP_HELP = ("Talk HTTP, not HTTPS, to the registry. Default: HTTP for loopback registries "
                   "(localhost, 127.0.0.1, [::1]), HTTPS for every other host.")


def _fail(message: str) -> None:
    click.echo(f"mops bundle: error: {message}", err=True)
    sys.exit(2)


def _client(plain_http: bool | None):
    from modelops.bundles.oci import RegistryClient

    return RegistryClient(plain_http=plain_http)


@click.group("bundle")
def bundle() -> None:
    """Publish bundles to an OCI registry and inspect them there."""


@bundle.command("push")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("ref")
@click.option("--plain-http/--https", "plain_http", default=None, help=PLAIN_HTTP_HELP)
@click.option("--with-wheels", is_flag=True,
              help="Store the wheels of the bundle's requirements.txt in the artifact (wheels/), downloaded "
                   "with this machine's pip configuration, so workers build its environment offline.")
@click.option("--wheels-python", default=None, metavar="X.Y",
              help="--with-wheels: the workers' Python (default: the worker image's, 3.11).")
@click.option("--wheels-platform", default="x86_64", show_default=True,
              type=click.Choice(["x86_64", "aarch64"]), help="--with-wheels: the workers' CPU architecture.")
def push(directory: Path, ref: str, plain_http: bool | None, with_wheels: bool, wheels_python: str | None,
         wheels_platform: str) -> None:
    """Push the bundle in DIRECTORY to REF (HOST[:PORT]/REPO:TAG); print the manifest digest."""
    from contextlib import nullcontext

    from modelops.bundles import artifact, wheelhouse
    from modelops.bundles.oci import RegistryError, parse_reference

    if wheels_python is not None and not with_wheels:
        _fail("--wheels-python is only used with --with-wheels")
    try:
        reference = parse_reference(ref)
        if Path(directory).is_dir():
            artifact.check_tree(Path(directory))  # before --with-wheels copies it (a copy follows links)
        staged = (wheelhouse.with_wheels(directory, wheels_python or wheelhouse.IMAGE_PYTHON, wheels_platform)
                  if with_wheels else nullcontext(directory))
        with staged as source:
            built = artifact.build(source)
        digest = _client(plain_http).push(built, reference)
    except (RegistryError, BundleError) as exc:
        _fail(str(exc))
    click.echo(f"pushed {built.config['name']} {built.config['version']} to {reference}", err=True)
    click.echo(f"{reference.host}/{reference.repository}@{digest}", err=True)
    click.echo(digest)


@bundle.command("inspect")
@click.argument("ref")
@click.option("--plain-http/--https", "plain_http", default=None, help=PLAIN_HTTP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inspect(ref: str, plain_http: bool | None, as_json: bool) -> None:
    """Show a pushed bundle's name, version, entrypoint, environment and digest."""
    from modelops.bundles.oci import RegistryError, parse_reference

    try:
        info = _client(plain_http).inspect(parse_reference(ref))
    except RegistryError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
        return
    env = info["environment"]
    if env.get("kind") == "lock":
        wheels = f", {len(env['wheels'])} wheels inside" if env.get("wheels") else ", no wheels: workers need an index"
        environment = f"own lock {env['lock']} ({len(env['packages'])} packages{wheels}, {env['lock_digest']})"
    else:
        environment = "the worker image's Python packages (no requirements.txt)"
    rows = [("reference", info["reference"]), ("digest", info["digest"]), ("pinned", info["pinned"]),
            ("name", info["name"]), ("version", info["version"]), ("entrypoint", info["entrypoint"]),
            ("environment", environment), ("content", info["content_digest"]),
            ("layer", f"{info['layer_digest']} ({info['layer_size']} bytes)")]
    for key, value in rows:
        click.echo(f"{key + ':':<13}{value}")


if __name__ == "__main__":  # `python -m modelops.cli.bundle_cmd ...` (the same commands as `mops bundle`)
    bundle(prog_name="mops bundle")
