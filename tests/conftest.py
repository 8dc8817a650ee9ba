"""Session fixtures: a real Ray Serve with the embedserve application, started once."""

from __future__ import annotations

import pytest

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


# Prompts the shipped models do not declare, set through the service setting (EMBEDSERVE_PROMPTS).
PROMPTS = {"search_query": "query: ", "search_document": "passage: "}
PROMPTED_MAX_WINDOWS = 4


@pytest.fixture(scope="session")
def prompted_service(ray_serve):
    """all-MiniLM-L6-v2 with prompts per input type and a small limit of windows per text, at /prompted."""
    return deploy(
        ray_serve, "prompted", "/prompted", models=["all-MiniLM-L6-v2"], prompts={"all-MiniLM-L6-v2": PROMPTS},
        max_windows_per_text=PROMPTED_MAX_WINDOWS, cache="memory", encoder_num_cpus=0.5,
    )
