"""Real local clusters: `dask scheduler` + `dask worker --preload modelops.worker.preload` processes."""

from __future__ import annotations

import pytest

from modelops.local_cluster import LocalProcessCluster


@pytest.fixture
def cluster_factory(bundles_dir, tmp_path):
    clusters: list[LocalProcessCluster] = []

    def start(
        n_workers: int = 2, nthreads: int = 1, worker_args: tuple[str, ...] = (), **env: str
    ) -> LocalProcessCluster:
        cluster = LocalProcessCluster(
            n_workers=n_workers,
            env={"MODELOPS_BUNDLES_DIR": str(bundles_dir), **env},
            nthreads=nthreads,
            log_dir=tmp_path / f"cluster{len(clusters)}",
            worker_args=worker_args,
        )
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in clusters:
        cluster.close()
