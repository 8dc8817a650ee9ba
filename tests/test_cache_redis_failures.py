"""Embedding cache: Redis failing never fails a request (stopped, hung, restarted: fast misses,
the breaker, answers stay correct), its URLs and authentication, and how the backend is chosen.

Real redis-server processes (tests/support/redis_server.py), no fakes.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serving.pipeline.cache import (
    CircuitBreaker,
    EmbeddingCache,
    MemoryCache,
    NullCache,
    RedisCache,
    build_cache,
)
from tests.support.cache import (
    CALL_BOUND_S,
    fresh_keys,
    redis_cache,
    store,
    vectors,
)
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

# --- redis: failing open ---------------------------------------------------------------

def on_own_redis(scenario):
    """What `scenario(server)` returns, run on a redis-server of its own (it stops and starts it)."""
    with RedisServer() as server:
        return asyncio.run(scenario(server))


async def timed_get(cache: EmbeddingCache, keys: list[str]) -> tuple[float, list]:
    """(elapsed seconds, result) of one get_many."""
    started = time.monotonic()
    got = await cache.get_many(keys)
    return time.monotonic() - started, got


def test_redis_stopped_gives_fast_misses_errors_and_an_open_breaker():
    keys, vecs = fresh_keys(3), vectors(3)

    async def scenario(server: RedisServer):
        cache = redis_cache(server.url)
        await store(cache, keys, vecs)
        server.stop()
        failures = [await timed_get(cache, keys) for _ in range(3)]  # threshold = 3
        after_failures = cache.stats()
        skipped = [await timed_get(cache, keys) for _ in range(5)]
        cache.set_many(dict(zip(keys, vecs)))  # must not raise either
        await cache.flush_pending()
        final = cache.stats()
        await cache.close()
        return failures, after_failures, skipped, final

    failures, after_failures, skipped, final = on_own_redis(scenario)

    for elapsed, got in failures + skipped:
        assert got == [None] * 3
        assert elapsed < CALL_BOUND_S
    assert after_failures["errors"] == 3 and after_failures["breaker"] == "open"
    # while open, nothing goes to the network:
    assert final["redis_calls"] == after_failures["redis_calls"]
    assert final["breaker_skips"] == 5 + 1
    assert final["errors"] == 3 and final["dropped_writes"] == 3
    assert final["misses"] == 8 * 3


def test_hung_redis_gets_time_out_into_misses_and_later_answers_stay_correct():
    keys, vecs = fresh_keys(2), vectors(2)
    other_keys, other_vecs = fresh_keys(2), vectors(2, seed=1)

    async def scenario(server: RedisServer):
        cache = redis_cache(server.url, failure_threshold=100)
        await store(cache, keys, vecs)
        await store(cache, other_keys, other_vecs)
        server.pause()  # accepts connections, never answers
        try:
            hung = [await timed_get(cache, keys) for _ in range(2)]
        finally:
            server.resume()
        # the replies to the timed-out MGETs arrive now; they must not be read as ours
        after = await cache.get_many(other_keys)
        stats = cache.stats()
        await cache.close()
        return hung, after, stats

    hung, after, stats = on_own_redis(scenario)

    for elapsed, got in hung:
        assert got == [None, None] and elapsed < CALL_BOUND_S
    assert all(np.array_equal(a, b) for a, b in zip(after, other_vecs))
    assert stats["errors"] == 2


def test_redis_restarted_hits_resume_after_the_cooldown_with_the_same_cache_object():
    keys, vecs = fresh_keys(3), vectors(3)

    async def scenario(server: RedisServer):
        cache = redis_cache(server.url)
        assert await cache.get_many(keys) == [None] * 3  # up, empty
        server.stop()
        for _ in range(3):
            await cache.get_many(keys)
        assert cache.stats()["breaker"] == "open"
        server.start()  # same port, empty (no persistence)
        still_open = await cache.get_many(keys)  # inside the cool-down: skipped
        await asyncio.sleep(cache.breaker.cooldown_s + 0.05)
        cache.set_many(dict(zip(keys, vecs)))  # this write is the half-open probe
        await cache.flush_pending()
        got = await cache.get_many(keys)
        stats = cache.stats()
        await cache.close()
        return still_open, got, stats

    still_open, got, stats = on_own_redis(scenario)

    assert still_open == [None] * 3
    assert all(np.array_equal(a, b) for a, b in zip(got, vecs))
    assert stats["breaker"] == "closed" and stats["breaker_opens"] == 1


def test_breaker_reopens_when_the_half_open_probe_fails():
    keys = fresh_keys(1)

    async def scenario(server: RedisServer):
        cache = redis_cache(server.url)
        server.stop()
        for _ in range(3):
            await cache.get_many(keys)
        await asyncio.sleep(cache.breaker.cooldown_s + 0.05)
        calls = cache.stats()["redis_calls"]
        await cache.get_many(keys)  # the probe: fails
        await cache.get_many(keys)  # open again: skipped
        stats = cache.stats()
        await cache.close()
        return calls, stats

    calls, stats = on_own_redis(scenario)
    assert stats["redis_calls"] == calls + 1
    assert stats["breaker"] == "open" and stats["breaker_opens"] == 2


def test_half_open_admits_one_probe_and_a_cancelled_probe_does_not_wedge_it():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5.0, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # only one probe at a time
    breaker.record_abort()  # the probe's request was cancelled
    assert breaker.allow()  # the next call probes instead
    assert breaker.record_success() and breaker.state == "closed"


# --- redis: URLs and authentication ----------------------------------------------------

def test_password_in_the_url_authenticates():
    keys, vecs = fresh_keys(2), vectors(2)

    async def scenario(server: RedisServer):
        cache = redis_cache(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        await store(cache, keys, vecs)
        got = await cache.get_many(keys)
        await cache.close()
        return got, cache.stats()

    with RedisServer(password="s3cret") as server:
        got, stats = asyncio.run(scenario(server))
    assert all(np.array_equal(a, b) for a, b in zip(got, vecs))
    assert stats["errors"] == 0


def test_wrong_password_fails_open():
    keys, vecs = fresh_keys(2), vectors(2)

    async def scenario(server: RedisServer):
        cache = redis_cache(f"redis://:wrong@127.0.0.1:{server.port}/0")
        cache.set_many(dict(zip(keys, vecs)))
        await cache.flush_pending()
        got = await cache.get_many(keys)
        await cache.close()
        return got, cache.stats()

    with RedisServer(password="s3cret") as server:
        got, stats = asyncio.run(scenario(server))
    assert got == [None, None]
    assert stats["errors"] == 2 and stats["writes"] == 0 and stats["hits"] == 0


def test_rediss_url_talks_tls_to_a_tls_only_redis():
    keys, vecs = fresh_keys(2), vectors(2)

    async def scenario(server: RedisServer):
        cache = redis_cache(server.url)  # rediss://:pw@127.0.0.1:N/0?ssl_ca_certs=...
        await store(cache, keys, vecs)
        got = await cache.get_many(keys)
        await cache.close()
        return got, cache.stats()

    with RedisServer(password="s3cret", tls=True) as server:
        assert server.url.startswith("rediss://:s3cret@")
        got, stats = asyncio.run(scenario(server))
    assert all(np.array_equal(a, b) for a, b in zip(got, vecs))
    assert stats["errors"] == 0


def test_rediss_url_selects_a_tls_connection():
    from redis.asyncio.connection import SSLConnection

    cache = RedisCache("rediss://:pw@cache.internal:6380/2", ttl_s=60)
    pool = cache._client.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 2


# --- construction ----------------------------------------------------------------------

@pytest.mark.parametrize("mode, url, expected", [
    ("auto", None, MemoryCache),
    ("auto", "", MemoryCache),
    ("auto", "redis://127.0.0.1:1/0", RedisCache),
    ("redis", "redis://127.0.0.1:1/0", RedisCache),
    ("memory", "redis://127.0.0.1:1/0", MemoryCache),
    ("off", "redis://127.0.0.1:1/0", NullCache),
    ("OFF", None, NullCache),
])
def test_build_cache_selects_the_backend_from_the_mode(mode, url, expected):
    cache = build_cache(mode, url, ttl_s=60, max_bytes=1 << 20, timeout_s=0.05)
    assert type(cache) is expected


def test_build_cache_redis_mode_without_url_is_an_error():
    with pytest.raises(ValueError, match="URL"):
        build_cache("redis", None, ttl_s=60, max_bytes=1 << 20, timeout_s=0.05)


def test_build_cache_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown cache mode"):
        build_cache("disk", None, ttl_s=60, max_bytes=1 << 20, timeout_s=0.05)
