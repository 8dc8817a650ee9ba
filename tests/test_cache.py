"""Embedding cache: repeated texts never reach the model, and come back bit for bit: keys,
the memory backend, what Redis stores. Redis failing (and never failing a request) in
tests/test_cache_redis_failures.py.

Real redis-server processes (tests/support/redis_server.py), no fakes.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.pipeline.cache import MemoryCache, NullCache, RedisCache
from tests.support.cache import (
    DIM,
    fresh_keys,
    keyspace,
    make_cache,
    redis_cache,
    store,
    vectors,
)
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

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
