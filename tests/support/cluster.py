"""The multi-node Ray cluster of the cluster tests (serving/cluster.py): a head with no CPUs and
two worker nodes of one CPU each, token-authenticated, plus the Redis every ingress replica
shares; started once per test session (the `ray_cluster` fixture, registered in conftest.py)
and stopped at its end. The test process itself is connected to another Ray (`ray_serve`), so
everything on this cluster is driven from subprocesses and over HTTP."""

from __future__ import annotations

import pytest

from serving.cluster import LocalCluster
from tests.support.service import artifact_dir

WORKERS = 2
CPUS_PER_WORKER = 1


@pytest.fixture(scope="session")
def ray_cluster():
    cluster = LocalCluster.start(
        workers=WORKERS,
        cpus_per_worker=CPUS_PER_WORKER,
        redis=True,
        # What the chart's pods get from their image and env: where the models are.
        node_env={"EMBEDSERVE_ARTIFACT_DIR": str(artifact_dir())},
    )
    yield cluster
    cluster.stop()
