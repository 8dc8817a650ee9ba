"""Embedding cache: repeated texts never reach the model; Redis failing never fails a request.

Real redis-server processes (tests/support/redis_server.py), no fakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import numpy as np
import pytest

from serving.cache import (
    CircuitBreaker,
    EmbeddingCache,
    KeySpace,
    MemoryCache,
    NullCache,
    RedisCache,
    build_cache,
)
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

DIM = 384
FAST = dict(failure_threshold=3, cooldown_s=0.3)  # short cool-down so tests stay quick
CALL_BOUND_S = 1.0  # generous upper bound for one failing call on a noisy 2-core machine
_unique = itertools.count()


def keyspace(**changes) -> KeySpace:
    base = KeySpace(model_id="sentence-transformers/all-MiniLM-L6-v2", revision="sha256:abc",
                    variant="fp32", pooling="mean", normalize=True, max_length=256,
                    truncation_side="right", prompt="")
    return dataclasses.replace(base, **changes)


def fresh_keys(n: int) -> list[str]:
    """Keys no other test uses (the module shares one redis-server)."""
    ks = keyspace(model_id=f"test-model-{next(_unique)}")
    return [ks.key(f"text {i}") for i in range(n)]


def vectors(n: int, dim: int = DIM, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.standard_normal((n, dim)).astype(np.float32))


def redis_cache(url: str, timeout_s: float = 0.25, **options) -> RedisCache:
    """Timeout above the 50 ms default: a TLS handshake on a loaded 2-core box needs it."""
    return RedisCache(url, ttl_s=600, timeout_s=timeout_s, **{**FAST, **options})


async def store(cache: EmbeddingCache, keys: list[str], vecs: list[np.ndarray]) -> None:
    cache.set_many(dict(zip(keys, vecs)))
    await cache.flush_pending()


def make_cache(kind: str, server: RedisServer) -> EmbeddingCache:
    return MemoryCache(max_bytes=1 << 24) if kind == "memory" else redis_cache(server.url)


# --- round trip ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_second_get_after_set_returns_bit_identical_vectors(kind, redis_server):
    keys, vecs = fresh_keys(8), vectors(8)

    async def scenario():
        cache = make_cache(kind, redis_server)
        assert await cache.get_many(keys) == [None] * 8
        await store(cache, keys, vecs)
        got = await cache.get_many(keys)
        stats = cache.stats()
        await cache.close()
        return got, stats

    got, stats = asyncio.run(scenario())
    for want, have in zip(vecs, got):
        assert have.dtype == np.float32 and have.tobytes() == want.tobytes()
    assert (stats["hits"], stats["misses"], stats["writes"]) == (8, 8, 8)
    assert stats["hit_ratio"] == 0.5


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_get_many_preserves_input_order_with_mixed_hits_misses_and_duplicates(kind, redis_server):
    keys, vecs = fresh_keys(4), vectors(4)
    a, b, c, d = keys
    asked = [c, d, a, c, b, d, a]  # a and c stored; b and d missing; duplicates

    async def scenario():
        cache = make_cache(kind, redis_server)
        await store(cache, [a, c], [vecs[0], vecs[2]])
        got = await cache.get_many(asked)
        await cache.close()
        return got

    got = asyncio.run(scenario())
    expected = {a: vecs[0], c: vecs[2]}
    for key, have in zip(asked, got):
        if key in expected:
            assert np.array_equal(have, expected[key])
        else:
            assert have is None


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_returned_vectors_are_independent_writable_copies(kind, redis_server):
    keys, vecs = fresh_keys(1), vectors(1)

    async def scenario():
        cache = make_cache(kind, redis_server)
        await store(cache, keys, vecs)
        first = (await cache.get_many(keys))[0]
        first[:] = 0  # a caller normalising/truncating in place must not corrupt the cache
        second = (await cache.get_many(keys))[0]
        await cache.close()
        return second

    assert np.array_equal(asyncio.run(scenario()), vecs[0])


def test_null_cache_always_misses_and_stores_nothing():
    async def scenario():
        cache = NullCache()
        cache.set_many({"k": vectors(1)[0]})
        await cache.flush_pending()
        return await cache.get_many(["k", "k"]), cache.stats()

    got, stats = asyncio.run(scenario())
    assert got == [None, None]
    assert (stats["hits"], stats["misses"], stats["writes"]) == (0, 2, 0)


# --- key space -----------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("model_id", "BAAI/bge-small-en-v1.5"),
    ("revision", "sha256:def"),
    ("variant", "int8"),
    ("pooling", "cls"),
    ("normalize", False),
    ("max_length", 128),
    ("truncation_side", "left"),
    ("prompt", "query: "),
])
def test_any_field_that_changes_the_vector_changes_the_key(field, value):
    base = keyspace()
    changed = keyspace(**{field: value})
    assert changed.prefix() != base.prefix()
    assert changed.key("hello") != base.key("hello")


def test_same_fields_give_the_same_key():
    assert keyspace().key("hello") == keyspace().key("hello")
    assert keyspace().key([101, 7592, 102]) == keyspace().key([101, 7592, 102])
    assert keyspace().key("hello") != keyspace().key("hello ")


def test_key_is_prefix_plus_sha256_hex():
    ks = keyspace()
    prefix = ks.prefix()
    name, version, digest, rest = prefix.split(":")
    assert (name, version, rest) == ("embedserve", "v2", "")
    assert len(digest) == 16
    key = ks.key("hello")
    assert key.startswith(prefix) and len(key) == len(prefix) + 64
    assert keyspace(key_prefix="other").prefix().startswith("other:v2:")


def test_text_and_token_ids_never_collide():
    ks = keyspace()
    assert ks.key("[1, 2]") != ks.key([1, 2])
    assert ks.key("[1,2]") != ks.key([1, 2])
    # the exact bytes an id list hashes to, sent as text:
    assert ks.key("ids:\x01\x00\x00\x00") != ks.key([1])
    assert ks.key("") != ks.key([])
    assert ks.key([1, 2]) != ks.key([2, 1])


def test_keys_accept_any_python_string():
    ks = keyspace()
    assert ks.key("\ud800") != ks.key("\udc00")  # lone surrogates are valid JSON input


# --- memory backend ------------------------------------------------------------------

def test_memory_cache_never_exceeds_max_bytes():
    ks = keyspace()
    entry = len(ks.key("x")) + DIM * 4
    cache = MemoryCache(max_bytes=10 * entry + 17)

    async def scenario():
        for i in range(200):
            cache.set_many({ks.key(f"t{i}"): v for v in vectors(1, seed=i)})
            assert cache.stats()["bytes"] <= cache.max_bytes
        return cache.stats()

    stats = asyncio.run(scenario())
    assert stats["entries"] == 10 and stats["bytes"] == 10 * entry
    assert stats["writes"] == 200


def test_memory_cache_evicts_least_recently_used():
    ks = keyspace()
    a, b, c, d = (ks.key(t) for t in "abcd")
    vec = vectors(1)[0]
    cache = MemoryCache(max_bytes=3 * (len(a) + DIM * 4))

    async def scenario():
        cache.set_many({a: vec, b: vec, c: vec})
        await cache.get_many([a])  # a is now more recent than b
        cache.set_many({d: vec})
        return [v is not None for v in await cache.get_many([a, b, c, d])]

    assert asyncio.run(scenario()) == [True, False, True, True]


def test_memory_cache_skips_an_entry_larger_than_its_bound():
    cache = MemoryCache(max_bytes=100)

    async def scenario():
        cache.set_many({"k": vectors(1)[0]})
        return await cache.get_many(["k"])

    assert asyncio.run(scenario()) == [None]
    assert cache.stats()["bytes"] == 0 and cache.stats()["dropped_writes"] == 1


# --- redis: what is stored -----------------------------------------------------------

def test_redis_values_are_exactly_dim_times_4_bytes_of_little_endian_float32(redis_server):
    keys, vecs = fresh_keys(2), [vectors(1, dim=768)[0], vectors(1, dim=32)[0]]

    async def scenario():
        cache = redis_cache(redis_server.url)
        await store(cache, keys, vecs)
        await cache.close()

    asyncio.run(scenario())
    plain = redis_server.client()
    for key, vec in zip(keys, vecs):
        raw = plain.get(key)
        assert len(raw) == vec.size * 4
        assert raw == vec.astype("<f4").tobytes()
        assert np.array_equal(np.frombuffer(raw, "<f4"), vec)


def test_redis_entries_expire_after_the_configured_ttl(redis_server):
    keys = fresh_keys(3)

    async def scenario():
        cache = RedisCache(redis_server.url, ttl_s=120, timeout_s=0.25)
        await store(cache, keys, vectors(3))
        await cache.close()

    asyncio.run(scenario())
    plain = redis_server.client()
    for key in keys:
        assert 0 < plain.ttl(key) <= 120


def test_evicted_or_expired_redis_keys_simply_miss(redis_server):
    keys, vecs = fresh_keys(2), vectors(2)

    async def scenario():
        cache = redis_cache(redis_server.url)
        await store(cache, keys, vecs)
        redis_server.client().delete(keys[0])
        got = await cache.get_many(keys)
        await cache.close()
        return got, cache.stats()

    got, stats = asyncio.run(scenario())
    assert got[0] is None and np.array_equal(got[1], vecs[1])
    assert stats["errors"] == 0


def test_set_many_returns_before_the_write_happens(redis_server):
    keys, vecs = fresh_keys(4), vectors(4)

    async def scenario():
        cache = redis_cache(redis_server.url)
        cache.set_many(dict(zip(keys, vecs)))
        pending = cache.stats()["pending_writes"]
        await cache.flush_pending()
        stats = cache.stats()
        await cache.close()
        return pending, stats

    pending, stats = asyncio.run(scenario())
    assert pending == 1
    assert stats["pending_writes"] == 0 and stats["writes"] == 4


def test_pending_writes_are_bounded_and_excess_is_dropped_and_counted(redis_server):
    async def scenario():
        cache = redis_cache(redis_server.url, max_pending_writes=2)
        for i in range(5):
            cache.set_many(dict(zip(fresh_keys(3), vectors(3, seed=i))))
        stats = cache.stats()
        await cache.close()
        return stats, cache.stats()

    before, after = asyncio.run(scenario())
    assert before["pending_writes"] == 2 and before["dropped_writes"] == 9
    assert after["writes"] == 6 and after["dropped_writes"] == 9


def test_set_many_outside_an_event_loop_drops_instead_of_raising(redis_server):
    cache = redis_cache(redis_server.url)
    cache.set_many({fresh_keys(1)[0]: vectors(1)[0]})
    assert cache.stats()["dropped_writes"] == 1


# --- redis: failing open ---------------------------------------------------------------

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

    with RedisServer() as server:
        failures, after_failures, skipped, final = asyncio.run(scenario(server))

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

    with RedisServer() as server:
        hung, after, stats = asyncio.run(scenario(server))

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

    with RedisServer() as server:
        still_open, got, stats = asyncio.run(scenario(server))

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

    with RedisServer() as server:
        calls, stats = asyncio.run(scenario(server))
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
