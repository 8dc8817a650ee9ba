"""Embedding cache: repeated texts skip the encoder; a failing cache never fails a request.

One entry per (key space, input) holds the full-dimension pooled float32 vector as
little-endian bytes, so it serves every ``dimensions`` and output encoding.

Backends: ``NullCache`` (off), ``MemoryCache`` (bounded in-process LRU) and
``RedisCache`` (shared, TTL'd, fail-open behind a circuit breaker). All of them are
meant to be used from one asyncio event loop; none is thread-safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Awaitable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Bump when the stored value layout changes. v2: the pipeline stores each input's token and
# window counts after the vector (serving.pipeline.embed.ENTRY_EXTRA), so a hit is never tokenized.
FORMAT_VERSION = "v2"
VALUE_DTYPE = np.dtype("<f4")
_LATENCY_WINDOW = 2048  # get-call latencies kept for mean/p99


@dataclass(frozen=True)
class KeySpace:
    """Everything that changes a vector; any field change yields a new key prefix."""

    model_id: str
    revision: str  # artifact checksum
    variant: str  # fp32 / optimized / int8
    pooling: str
    normalize: bool
    max_length: int
    truncation_side: str
    prompt: str = ""
    key_prefix: str = "embedserve"

    @cached_property
    def _prefix(self) -> str:
        fields = asdict(self)
        del fields["key_prefix"]
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return f"{self.key_prefix}:{FORMAT_VERSION}:{hashlib.sha256(blob).hexdigest()[:16]}:"

    def prefix(self) -> str:
        """``{key_prefix}:{FORMAT_VERSION}:{hash of the fields}:``."""
        return self._prefix

    def key(self, text: str | Sequence[int]) -> str:
        """Cache key of one input: a text, or a list of token ids (never colliding)."""
        if isinstance(text, str):
            payload = b"text:" + text.encode("utf-8", "surrogatepass")
        else:
            payload = b"ids:" + np.asarray(text, dtype="<i4").tobytes()
        return self._prefix + hashlib.sha256(payload).hexdigest()

    def pair_key(self, query: str, document: str) -> str:
        """Cache key of one (query, document) pair (a cross-encoder's input); the query's
        length leads, so no two pairs (nor a pair and a text) share a payload."""
        q = query.encode("utf-8", "surrogatepass")
        payload = b"pair:" + len(q).to_bytes(8, "little") + q + document.encode("utf-8", "surrogatepass")
        return self._prefix + hashlib.sha256(payload).hexdigest()


def encode_vector(vec: np.ndarray) -> bytes:
    """Stored value: the vector as little-endian float32 bytes."""
    return np.ascontiguousarray(vec, dtype=VALUE_DTYPE).tobytes()


def decode_vector(raw: bytes | None) -> np.ndarray | None:
    """A fresh (writable) float32 vector, or None for a miss or a malformed value."""
    if not raw or len(raw) % VALUE_DTYPE.itemsize:
        return None
    return np.frombuffer(raw, dtype=VALUE_DTYPE).copy()


class EmbeddingCache(ABC):
    """Common interface and counters; ``stats()`` counters only ever increase."""

    backend = "abstract"

    def __init__(self) -> None:
        self._counts = {"hits": 0, "misses": 0, "errors": 0, "writes": 0, "dropped_writes": 0}
        self._latencies_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    @abstractmethod
    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        """Vectors for ``keys`` in order (None = miss). Never raises for backend errors."""

    @abstractmethod
    def set_many(self, items: dict[str, np.ndarray]) -> None:
        """Store vectors without blocking the caller (may be dropped). Never raises."""

    async def flush_pending(self) -> None:
        """Wait for background writes (tests, shutdown)."""

    async def close(self) -> None:
        """Flush pending writes and release resources."""
        await self.flush_pending()

    def stats(self) -> dict[str, Any]:
        """Counters, sizes where known, hit ratio, breaker state, get latency (ms)."""
        lookups = self._counts["hits"] + self._counts["misses"]
        lat = np.fromiter(self._latencies_ms, dtype=np.float64)
        return {
            "backend": self.backend,
            **self._counts,
            "entries": None,
            "bytes": None,
            "hit_ratio": self._counts["hits"] / lookups if lookups else 0.0,
            "breaker": "closed",
            "get_latency_mean_ms": float(lat.mean()) if lat.size else 0.0,
            "get_latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else 0.0,
        }

    def _finish_get(self, found: list[np.ndarray | None], started: float) -> list[np.ndarray | None]:
        hits = sum(v is not None for v in found)
        self._counts["hits"] += hits
        self._counts["misses"] += len(found) - hits
        self._latencies_ms.append((time.perf_counter() - started) * 1e3)
        return found


class NullCache(EmbeddingCache):
    """Cache disabled: every lookup misses, nothing is stored."""

    backend = "off"

    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        self._counts["misses"] += len(keys)
        return [None] * len(keys)

    def set_many(self, items: dict[str, np.ndarray]) -> None:
        return None


class MemoryCache(EmbeddingCache):
    """In-process LRU bounded by ``max_bytes`` (value bytes + key bytes)."""

    backend = "memory"

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        super().__init__()
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        started = time.perf_counter()
        found = []
        for key in keys:
            raw = self._data.get(key)
            if raw is not None:
                self._data.move_to_end(key)
            found.append(decode_vector(raw))
        return self._finish_get(found, started)

    def set_many(self, items: dict[str, np.ndarray]) -> None:
        for key, vec in items.items():
            self._put(key, encode_vector(vec))

    def _put(self, key: str, value: bytes) -> None:
        size = len(key) + len(value)
        self._remove(key)
        if size > self.max_bytes:
            self._counts["dropped_writes"] += 1
            return
        while self._bytes + size > self.max_bytes:
            self._remove(next(iter(self._data)))
        self._data[key] = value
        self._bytes += size
        self._counts["writes"] += 1

    def _remove(self, key: str) -> None:
        value = self._data.pop(key, None)
        if value is not None:
            self._bytes -= len(key) + len(value)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "entries": len(self._data), "bytes": self._bytes}


class CircuitBreaker:
    """closed -> (``failure_threshold`` consecutive failures) -> open -> (``cooldown_s``)
    -> half_open: exactly one probe call; its success closes, its failure re-opens."""

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state = "closed"
        self.opens = 0
        self._failures = 0
        self._opened_at = 0.0

    def allow(self) -> bool:
        """Whether a call may go to the backend now (open: no; half_open: the one probe)."""
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self.state = "half_open"  # this caller is the probe; others are refused
            return True
        return False

    def record_success(self) -> bool:
        """Returns True when this closes a non-closed breaker."""
        recovered = self.state != "closed"
        self.state, self._failures = "closed", 0
        return recovered

    def record_failure(self) -> bool:
        """Returns True when this opens the breaker."""
        if self.state == "open":
            return False  # a late failure of a call started before opening
        self._failures += 1
        if self.state == "half_open" or self._failures >= self.failure_threshold:
            self.state, self._opened_at = "open", self._clock()
            self.opens += 1
            return True
        return False

    def record_abort(self) -> None:
        """The call was cancelled: no verdict; a half-open breaker lets the next call probe."""
        if self.state == "half_open":
            self.state = "open"  # _opened_at unchanged, so the cool-down has already passed


_FAILED = object()  # the backend call raised or timed out
_SKIPPED = object()  # the breaker refused the call


class RedisCache(EmbeddingCache):
    """Shared cache in Redis (``MGET`` reads, pipelined ``SET EX`` background writes).

    Fail-open: every call is bounded by a timeout; errors and timeouts become misses
    (reads) or dropped writes and count in ``errors``. A circuit breaker skips Redis
    entirely after ``failure_threshold`` consecutive failures, for ``cooldown_s``.
    """

    backend = "redis"

    def __init__(self, url: str, ttl_s: int, timeout_s: float = 0.05, *,
                 failure_threshold: int = 3, cooldown_s: float = 2.0,
                 max_pending_writes: int = 64, write_timeout_s: float | None = None,
                 max_connections: int | None = None) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        super().__init__()
        self._counts.update(redis_calls=0, breaker_skips=0)
        self.ttl_s = int(ttl_s)
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s or max(4 * timeout_s, 0.25)
        self.max_pending_writes = max_pending_writes
        self.breaker = CircuitBreaker(failure_threshold, cooldown_s)
        self._pending: set[asyncio.Task[None]] = set()
        self._client = redis.asyncio.from_url(
            url,
            socket_timeout=self.write_timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # no client-side retries: the breaker decides
            max_connections=max_connections,
        )

    async def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        started = time.perf_counter()
        if not keys:
            return []
        raw = await self._call(lambda: self._client.mget(keys), self.timeout_s)
        if raw is _FAILED or raw is _SKIPPED:
            raw = [None] * len(keys)
        return self._finish_get([decode_vector(r) for r in raw], started)

    def set_many(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        payload = {key: encode_vector(vec) for key, vec in items.items()}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or len(self._pending) >= self.max_pending_writes:
            self._counts["dropped_writes"] += len(payload)
            return
        task = loop.create_task(self._write(payload))
        self._pending.add(task)  # strong reference until done
        task.add_done_callback(self._pending.discard)

    async def flush_pending(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.flush_pending()
        await self._client.aclose()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "breaker": self.breaker.state,
                "breaker_opens": self.breaker.opens, "pending_writes": len(self._pending)}

    async def _write(self, payload: dict[str, bytes]) -> None:
        async def op() -> Any:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in payload.items():
                    pipe.set(key, value, ex=self.ttl_s)
                return await pipe.execute()

        result = await self._call(op, self.write_timeout_s)
        if result is _SKIPPED:
            self._counts["dropped_writes"] += len(payload)
        elif result is not _FAILED:
            self._counts["writes"] += len(payload)

    async def _call(self, op: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
        """Run one Redis operation through the breaker; never raises (except cancellation)."""
        if not self.breaker.allow():
            self._counts["breaker_skips"] += 1
            return _SKIPPED
        self._counts["redis_calls"] += 1
        try:
            result = await asyncio.wait_for(op(), timeout_s)
        except asyncio.CancelledError:
            self.breaker.record_abort()
            raise
        except Exception as exc:  # noqa: BLE001 - fail open on anything
            self._counts["errors"] += 1
            if self.breaker.record_failure():
                log.warning("embedding cache: Redis unavailable (%s: %s); bypassing it for %.1fs",
                            type(exc).__name__, exc, self.breaker.cooldown_s)
            return _FAILED
        if self.breaker.record_success():
            log.info("embedding cache: Redis reachable again")
        return result


def build_cache(mode: str, redis_url: str | None, ttl_s: int, max_bytes: int,
                timeout_s: float, **redis_options: Any) -> EmbeddingCache:
    """``auto``: Redis if a URL is set, else memory; ``redis`` (URL required); ``memory``; ``off``.

    ``redis_options`` go to ``RedisCache`` (failure_threshold, cooldown_s, ...).
    """
    mode = mode.strip().lower()
    if mode == "auto":
        mode = "redis" if redis_url else "memory"
    if mode == "redis":
        if not redis_url:
            raise ValueError("cache mode 'redis' needs a Redis URL")
        return RedisCache(redis_url, ttl_s, timeout_s, **redis_options)
    if mode == "memory":
        return MemoryCache(max_bytes)
    if mode == "off":
        return NullCache()
    raise ValueError(f"unknown cache mode {mode!r} (expected auto, redis, memory or off)")
