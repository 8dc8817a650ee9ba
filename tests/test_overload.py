"""Overload is refused early with 429 and Retry-After, never queued until it times out."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.service import deploy, undeploy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(ray_serve):
    """The service with room for 2 requests at a time and a cache that cannot help."""
    app = deploy(
        ray_serve, "tiny", "/tiny", models=["all-MiniLM-L6-v2"], cache="off",
        max_ongoing_requests=2, max_queued_requests=2, encoder_num_cpus=0.5,
    )
    yield app
    undeploy("tiny")


async def flood(url: str, n: int) -> list[httpx.Response]:
    body = {"model": "all-MiniLM-L6-v2", "input": ["overload " + "words " * 60] * 64}
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(client.post(url + "/v1/embeddings", json=body) for _ in range(n)))


def test_overload_yields_429_with_retry_after_and_no_errors(tiny):
    responses = asyncio.run(flood(tiny.http_url, 24))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) > 0 and codes.count(200) > 0
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    status, _, body = tiny.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "after the storm"})
    assert status == 200 and len(body["data"]) == 1
