"""Session fixtures: a real Ray Serve with the embedserve application, started once."""

from __future__ import annotations

import pytest

from tests.support.cluster import cluster_app, ray_cluster  # noqa: F401 (session fixtures: the multi-node cluster)
from tests.support.service import RayServe, deploy

SERVED_MODELS = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]


@pytest.fixture(scope="session")
def ray_serve():
    rs = RayServe.start()
    yield rs
    rs.stop()


@pytest.fixture(scope="session")
def service(ray_serve):
    """The application as `make serve` runs it (both models, in-process cache), at /."""
    return deploy(ray_serve, "embedserve", "/", models=SERVED_MODELS, encoder_num_cpus=1)

