"""What the cache tests share: key spaces, fresh keys, vectors, caches on a real redis-server."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from serving.pipeline.cache import EmbeddingCache, KeySpace, MemoryCache, RedisCache
from tests.support.redis_server import RedisServer

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


