"""One line about the versions a client and a cluster run, instead of distributed's table.

distributed warns on every connection with a table of every package that differs anywhere (a
laptop's Python 3.11.7 against the image's 3.11.2, pandas absent in the image, ...), most of which
cannot affect a study: the client sends plain task dicts to `modelops.worker.task_bodies.run_task` and
gets JSON-mode results back. What can matter is the Dask protocol (dask, distributed, msgpack,
cloudpickle, tornado, toolz), the Python minor version (pickles), and modelops itself (the task and
result models). `describe` says once what differs and whether it matters; nothing when nothing differs.
"""

from __future__ import annotations

import contextlib
import warnings

MATTERS = ("dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz")
CHECKED = ("python", "modelops", *MATTERS, "numpy", "pandas", "lz4")


def _minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def describe(client: dict, cluster: dict[str, dict]) -> str | None:
    """`client`: package -> version here; `cluster`: each scheduler/worker address -> its packages
    (a package absent there is missing or None). A line naming what differs, or None."""
    harmful, harmless = [], []
    for package in CHECKED:
        mine = client.get(package)
        theirs = sorted({str(v.get(package) or "absent") for v in cluster.values()})
        if theirs == [mine or "absent"] or not theirs:
            continue
        text = f"{package} {mine or 'absent'} here, {' / '.join(theirs)} in the cluster"
        if package in MATTERS or package == "modelops" or (package == "python" and any(
                _minor(v) != _minor(mine) for v in theirs if v != "absent")):
            harmful.append(text)
        else:
            harmless.append(text)
    if not harmful and not harmless:
        return None
    if harmful:
        line = ("Versions differ and it matters: " + "; ".join(harmful)
                + ": install the cluster's versions here (or upgrade the image)")
        if harmless:
            line += f" (harmless: {'; '.join(harmless)})"
        return line
    return ("Versions differ, harmlessly (the client sends plain task dicts and reads JSON results): "
            + "; ".join(harmless))


def cluster_versions(client) -> tuple[dict, dict[str, dict]]:
    """(this client's packages, {address: packages} of the scheduler and every worker)."""
    import modelops

    versions = client.get_versions(check=False, packages=["modelops-dask"])
    mine = dict(versions["client"]["packages"])
    mine["modelops"] = modelops.__version__
    cluster = {"scheduler": dict(versions["scheduler"]["packages"])}
    for address, info in (versions.get("workers") or {}).items():
        cluster[address] = dict(info["packages"]) if isinstance(info, dict) else {}
    for packages in cluster.values():
        packages["modelops"] = packages.pop("modelops-dask", None)
    return mine, cluster


@contextlib.contextmanager
def quiet_version_table():
    """Connect without distributed's version table (the caller says it in one line instead)."""
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)
        yield
