"""Client/cluster versions: one line saying what differs and whether it matters, nothing when nothing does."""

from __future__ import annotations

from modelops.services.versions import describe

HERE = {"python": "3.11.7.final.0", "modelops": "0.1.0", "dask": "2026.8.0", "distributed": "2026.8.0",
        "msgpack": "1.1.0", "cloudpickle": "3.1.3", "tornado": "6.5", "toolz": "1.0", "numpy": "2.4.0",
        "pandas": "3.1.0", "lz4": None}


def cluster(**changes) -> dict[str, dict]:
    image = {**HERE, **changes}
    return {"scheduler": image, "tcp://10.88.1.5:40000": image}


def test_nothing_differs_nothing_said():
    assert describe(HERE, cluster()) is None


def test_the_laptop_against_the_image_is_one_harmless_line():
    """What every `mops run` through a port-forward met: a patch-level Python and pandas absent in the image."""
    line = describe(HERE, cluster(python="3.11.2.final.0", pandas=None))
    assert line.startswith("Versions differ, harmlessly")
    assert "python 3.11.7.final.0 here, 3.11.2.final.0 in the cluster" in line
    assert "pandas 3.1.0 here, absent in the cluster" in line
    assert "\n" not in line and "matters" not in line


def test_a_dask_protocol_or_modelops_difference_matters_and_says_what_to_do():
    line = describe(HERE, cluster(distributed="2026.9.1", modelops="0.2.0", pandas=None))
    assert line.startswith("Versions differ and it matters: ")
    assert "distributed 2026.8.0 here, 2026.9.1 in the cluster" in line
    assert "modelops 0.1.0 here, 0.2.0 in the cluster" in line
    assert "install the cluster's versions here" in line
    assert "(harmless: pandas 3.1.0 here, absent in the cluster)" in line


def test_another_python_minor_version_matters():
    assert describe(HERE, cluster(python="3.12.1.final.0")).startswith("Versions differ and it matters")


def test_workers_that_disagree_among_themselves_are_all_named():
    clusters = cluster()
    clusters["tcp://10.88.1.6:40000"] = {**HERE, "modelops": "0.0.9"}
    line = describe(HERE, clusters)
    assert "modelops 0.1.0 here, 0.0.9 / 0.1.0 in the cluster" in line
