"""Pin a study's OCI bundle to one manifest digest, once, when it is submitted.

A study may name its bundle by tag (`HOST[:PORT]/REPO:TAG`). Tags move: a team re-pushes `:latest`
or `:1.0` while a study runs. Workers therefore only accept digest-pinned references, and the client
resolves the tag here, before the first task is made: every task carries `HOST/REPO@sha256:...`,
so all of them run the same bytes and their provenance names the manifest digest.
"""

from __future__ import annotations

import os

from modelops.bundles.bundle import BundleError
from modelops.bundles.oci import RegistryClient, RegistryError, parse_reference
from modelops.bundles.resolver import is_oci_reference
from modelops.settings import REGISTRY_PLAIN_HTTP_VARIABLE, setting


def client_plain_http() -> bool | None:
    """MODELOPS_REGISTRY_PLAIN_HTTP as this client's environment sets it (same rules as the workers)."""
    return setting(REGISTRY_PLAIN_HTTP_VARIABLE).read(os.environ).as_option()


def pin_reference(bundle: str, client: RegistryClient | None = None) -> str:
    """`bundle` unchanged when it is a plain name; an OCI reference as `HOST/REPO@sha256:...`, its
    tag resolved by asking the registry once. Errors are BundleErrors naming the reference."""
    if not is_oci_reference(bundle):
        return bundle
    try:
        reference = parse_reference(bundle)
        if reference.digest:
            return str(reference.pinned(reference.digest))
        return str((client or RegistryClient(plain_http=client_plain_http())).resolve(reference))
    except RegistryError as exc:
        error = BundleError(f"cannot pin bundle {bundle!r} to a digest at submit time: {exc}")
        error.retryable = exc.retryable
        raise error from None


def pin_study(study, client: RegistryClient | None = None):
    """The study with its bundle pinned (the same study when the bundle is a plain name)."""
    pinned = pin_reference(study.bundle, client)
    return study if pinned == study.bundle else study.model_copy(update={"bundle": pinned})
