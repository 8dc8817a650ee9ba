"""Concurrent requests are batched together; a lone request does not wait for company; a huge
request does not starve small ones."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration


async def post_many(url: str, bodies: list[dict], timeout: float = 300) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        return await asyncio.gather(*(client.post(url + "/v1/embeddings", json=b) for b in bodies))


def test_concurrent_single_text_requests_ride_in_shared_batches(service):
    bodies = [{"model": "all-MiniLM-L6-v2", "input": f"single request {i} about batching"} for i in range(32)]
    responses = asyncio.run(post_many(service.http_url, bodies))
    assert [r.status_code for r in responses] == [200] * 32
    sizes = [int(r.headers["x-batch-size"]) for r in responses]
    assert max(sizes) > 1, f"no request shared a batch: {sizes}"


def test_a_lone_request_on_an_idle_service_does_not_wait_for_company(ray_serve):
    """With a 2 s batch wait: one request at a time starts its round at once, while requests
    that arrive together still wait for each other and share one."""
    from tests.support.service import deploy, undeploy

    app = deploy(ray_serve, "patient", "/patient", models=["all-MiniLM-L6-v2"], cache="off",
                 batch_wait_timeout_ms=2000, encoder_num_cpus=0.5)
    try:
        for i in range(3):
            status, headers, _ = app.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": f"alone {i}"})
            assert status == 200
            assert float(headers["x-queue-time"]) < 1000, headers  # ms: not the 2 s wait
        bodies = [{"model": "all-MiniLM-L6-v2", "input": f"together {i}"} for i in range(8)]
        responses = asyncio.run(post_many(app.http_url, bodies))
        assert [r.status_code for r in responses] == [200] * 8
        sizes = [int(r.headers["x-batch-size"]) for r in responses]
        assert max(sizes) > 1, f"requests on their way were not waited for: {sizes}"
    finally:
        undeploy("patient")


def test_a_2000_text_request_and_many_small_ones_all_succeed(service):
    big = {"model": "all-MiniLM-L6-v2", "input": [f"bulk document {i}: " + "text " * (i % 40) for i in range(2000)]}
    small = [{"model": "all-MiniLM-L6-v2", "input": f"small request {i}"} for i in range(40)]
    responses = asyncio.run(post_many(service.http_url, [big, *small]))
    assert [r.status_code for r in responses] == [200] * 41
    assert len(responses[0].json()["data"]) == 2000
    assert [d["index"] for d in responses[0].json()["data"]] == list(range(2000))


def test_encoders_in_their_own_deployment_serve_the_same_vectors_and_batch_too(ray_serve, service):
    """encoder_placement=replica (the cluster layout): an encoder deployment beside the ingress,
    one Ray call per chunk; the default runs the encoder inside the ingress replica."""
    from ray import serve

    from tests.support.service import deploy, undeploy

    app = deploy(ray_serve, "separate", "/separate", models=["all-MiniLM-L6-v2"], cache="off",
                 encoder_placement="replica", encoder_num_cpus=1)
    try:
        assert set(serve.status().applications["separate"].deployments) == {"Ingress", "Encoder_all-minilm-l6-v2"}
        assert set(serve.status().applications["embedserve"].deployments) == {"Ingress"}
        texts = [f"placement request {i} about batching" for i in range(32)]
        bodies = [{"model": "all-MiniLM-L6-v2", "input": t} for t in texts]
        separate = asyncio.run(post_many(app.http_url, bodies))
        inline = asyncio.run(post_many(service.http_url, bodies))
        assert [r.status_code for r in inline + separate] == [200] * 64
        assert max(int(r.headers["x-batch-size"]) for r in separate) > 1
        for a, b in zip(inline, separate):
            va, vb = a.json()["data"][0]["embedding"], b.json()["data"][0]["embedding"]
            assert float(np.dot(va, vb)) > 0.99999
    finally:
        undeploy("separate")
