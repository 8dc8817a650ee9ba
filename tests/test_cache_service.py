"""The embedding cache inside the running service: repeated texts never reach the model,
one entry serves every `dimensions` and format, and Redis failing never fails a request."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from models.postprocess import pack_ubinary, quantize_int8
from tests.support.redis_server import redis_server  # noqa: F401 (fixture)
from tests.support.service import deploy, undeploy

pytestmark = pytest.mark.integration
M = "all-MiniLM-L6-v2"


def unique_texts(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"cache test {tag} text number {i}" for i in range(n)]


def embed(app, texts, **extra):
    status, headers, body = app.post("/v1/embeddings", {"model": extra.pop("model", M), "input": texts, **extra})
    assert status == 200, body
    return np.array([d["embedding"] for d in body["data"]]), {k.lower(): v for k, v in headers.items()}


def encoded(app) -> int:
    return app.get("/stats")[2]["encoded_texts"]


def test_a_repeated_request_never_reaches_the_encoders(service):
    texts = unique_texts(5)
    first, h1 = embed(service, texts)
    before = encoded(service)
    second, h2 = embed(service, texts)
    assert encoded(service) == before, "the second request reached the encoders"
    assert (h1["x-cache-hits"], h2["x-cache-hits"]) == ("0", "5")
    np.testing.assert_array_equal(first, second)


def test_duplicates_inside_one_request_are_embedded_once(service):
    texts = unique_texts(3)
    before = encoded(service)
    vectors, _ = embed(service, texts + texts + texts[:1])
    assert encoded(service) - before == 3
    np.testing.assert_array_equal(vectors[:3], vectors[3:6])


def test_one_cached_entry_serves_every_dimensions_and_format(service, ):
    texts = unique_texts(4)
    full, _ = embed(service, texts)
    scales = {s["dimensions"]: s["scale"] for s in service.get("/v1/models")[2]["data"][0]["int8_scales"]}
    before = encoded(service)
    cut, _ = embed(service, texts, dimensions=128)
    int8, _ = embed(service, texts, dimensions=128, encoding_format="int8")
    bits, _ = embed(service, texts, encoding_format="ubinary")
    assert encoded(service) == before
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-6)
    np.testing.assert_array_equal(int8, quantize_int8(cut.astype(np.float32), scales[128]))
    np.testing.assert_array_equal(bits, pack_ubinary(full))


def test_different_models_never_share_entries(service):
    texts = unique_texts(2)
    embed(service, texts)
    before = encoded(service)
    mpnet, headers = embed(service, texts, model="all-mpnet-base-v2")
    assert headers["x-cache-hits"] == "0" and encoded(service) - before == 2
    assert mpnet.shape == (2, 768)


@pytest.fixture(scope="module")
def small_memory_cache(ray_serve):
    app = deploy(ray_serve, "smallcache", "/smallcache", models=[M], cache="memory",
                 cache_max_bytes=64 * 384 * 4, encoder_num_cpus=0.5)
    yield app
    undeploy("smallcache")


def test_the_in_process_cache_stays_within_its_bound(small_memory_cache):
    for chunk in range(4):
        embed(small_memory_cache, unique_texts(50))
    cache = small_memory_cache.get("/stats")[2]["cache"]
    assert cache["backend"] == "memory"
    assert 0 < cache["bytes"] <= 64 * 384 * 4 and cache["entries"] <= 64


@pytest.fixture(scope="module")
def redis_app(ray_serve, redis_server):  # noqa: F811
    app = deploy(ray_serve, "rediscache", "/rediscache", models=[M], cache="redis",
                 redis_url=redis_server.url, cache_timeout_ms=200, encoder_num_cpus=0.5)
    yield app, redis_server
    undeploy("rediscache")


def test_redis_serves_repeats_and_stores_full_vectors(redis_app):
    app, redis = redis_app
    texts = unique_texts(3)
    first, _ = embed(app, texts)
    time.sleep(0.3)  # writes happen after the response
    second, headers = embed(app, texts)
    assert headers["x-cache-hits"] == "3"
    np.testing.assert_array_equal(first, second)
    keys = redis.client().keys("embedserve:*")
    # The full vector, then the input's token and window counts (a hit is not tokenized again).
    entries = [np.frombuffer(redis.client().get(k), dtype="<f4") for k in keys]
    assert entries and all(e.shape == (384 + 2,) for e in entries)
    status, _, body = app.post("/tokenize", {"model": M, "input": texts})
    assert status == 200
    assert sorted(int(e[384]) for e in entries) == sorted(body["counts"]) and all(e[385] == 1 for e in entries)


def test_a_cache_hit_reports_the_same_usage_as_the_miss(redis_app):
    app, _ = redis_app
    texts = unique_texts(4)
    miss = app.post("/v1/embeddings", {"model": M, "input": texts})
    time.sleep(0.3)
    hit = app.post("/v1/embeddings", {"model": M, "input": texts + texts[:1]})
    assert miss[1]["x-cache-hits"] == "0" and hit[1]["x-cache-hits"] == "5"
    assert hit[2]["usage"]["prompt_tokens"] == miss[2]["usage"]["prompt_tokens"] + body_tokens(app, texts[:1])


def body_tokens(app, texts) -> int:
    return sum(app.post("/tokenize", {"model": M, "input": texts})[2]["counts"])


def test_redis_going_away_slows_requests_but_never_fails_them(redis_app):
    app, redis = redis_app
    texts = unique_texts(3)
    reference, _ = embed(app, texts)
    redis.stop()
    try:
        for _ in range(5):
            vectors, headers = embed(app, texts)  # Redis is gone: served by the encoders
            np.testing.assert_allclose(vectors, reference, atol=1e-6)
            assert headers["x-cache-hits"] == "0"
        assert app.get("/stats")[2]["cache"]["errors"] > 0
    finally:
        redis.start()
    time.sleep(2.5)  # the circuit breaker's cool-down
    embed(app, texts)  # written back once Redis answers again
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        vectors, headers = embed(app, texts)
        if headers["x-cache-hits"] == "3":
            break
        time.sleep(0.5)
    assert headers["x-cache-hits"] == "3", "hits did not resume after Redis came back"
    np.testing.assert_allclose(vectors, reference, atol=1e-6)


def test_a_text_too_long_for_truncate_none_is_refused_even_when_its_truncated_vector_is_cached(service):
    text = f"cached long text {time.time()} " + "many words " * 400
    assert service.post("/v1/embeddings", {"model": M, "input": text})[0] == 200  # truncated, cached
    time.sleep(0.3)
    status, _, body = service.post("/v1/embeddings", {"model": M, "input": text, "truncate": "none"})
    assert status == 400 and "truncate is 'none'" in body["error"]["message"], body


def test_a_refused_input_is_named_by_its_place_in_the_request_when_others_are_cached(service):
    seen = f"a cached short text {time.time()}"
    assert service.post("/v1/embeddings", {"model": M, "input": seen, "truncate": "none"})[0] == 200
    time.sleep(0.3)
    too_long = f"too long {time.time()} " + "many words " * 400
    status, _, body = service.post("/v1/embeddings", {"model": M, "input": [seen, too_long], "truncate": "none"})
    assert status == 400 and body["error"]["message"].startswith("input[1] "), body
