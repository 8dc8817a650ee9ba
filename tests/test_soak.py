"""A bounded soak of mixed traffic (HTTP and gRPC; texts, token ids, every output format,
cache hits and evictions, bad requests, streams): no failed request, and the replicas' RSS does
not grow past a stated bound once warm.

EMBEDSERVE_SOAK_S sets the measured time: 30 s in `make test`, 120 s+ in `make soak`."""

from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from tests.support import load
from tests.support.service import deploy, undeploy

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
SOAK_S = float(os.environ.get("EMBEDSERVE_SOAK_S", "30"))
WARMUP_S = max(8.0, SOAK_S / 4)
CACHE_BYTES = 1 << 20  # small, so the soak keeps evicting: the LRU's bound is part of the test
# Once warm, a replica may still grow by allocator noise and ORT arenas meeting a new shape,
# but not with time: the bound does not scale with SOAK_S.
RSS_GROWTH_BOUND = 64 << 20
POOL = [load.words(90_000 + i, 8 + i % 30) for i in range(64)]


@pytest.fixture(scope="module")
def soaked(ray_serve):
    app = deploy(ray_serve, "soak", "/soak", models=[M], cache="memory", cache_max_bytes=CACHE_BYTES, encoder_num_cpus=0.5,
                 accept_token_ids=True)
    yield app
    undeploy("soak")


def mixed(w: int, n: int):
    i = (w << 24) + n
    kind = n % 8
    if kind == 0:  # fresh texts: cache misses, LRU evictions
        return "/v1/embeddings", {"model": M, "input": [load.words(i * 8 + k, 20) for k in range(8)]}, kind
    if kind == 1:  # repeated texts: cache hits
        return "/v1/embeddings", {"model": M, "input": [POOL[(n + k) % len(POOL)] for k in range(6)]}, kind
    if kind == 2:
        return "/v1/embeddings", {"model": M, "input": [[101, 2000 + (n + k) % 500, 2003, 102] for k in range(4)]}, kind
    if kind == 3:
        return "/v1/embeddings", {"model": M, "input": POOL[n % len(POOL)], "encoding_format": "base64", "dimensions": 128}, kind
    if kind == 4:
        fmt = ["int8", "uint8", "binary", "ubinary"][n % 4]
        return "/v1/embeddings", {"model": M, "input": [POOL[n % 64], f"q {i}"], "encoding_format": fmt}, kind
    if kind == 5:
        return "/tokenize", {"model": M, "input": [POOL[n % 64], f"tokenize {i}"]}, kind
    if kind == 6:  # refused: 400
        return "/v1/embeddings", {"model": M, "input": "x", "dimensions": 0}, kind
    return "/v1/embeddings", {"model": M, "input": "long " * 600 + str(i), "normalize": bool(n % 2)}, kind  # truncated


def grpc_loop(app, stop: threading.Event, counts: dict) -> None:
    with app.grpc_channel() as channel:
        stub = pbg.EmbeddingServiceStub(channel)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 3:
                    req = pb.EmbedRequest(model=M, texts=[POOL[n % 64], f"grpc {n}"], dimensions=64 + n % 4 * 32)
                    stub.Embed(req, metadata=app.grpc_metadata, timeout=30)
                else:
                    req = pb.EmbedRequest(model=M, texts=[f"stream {n} {k}" for k in range(40)], chunk_size=16)
                    assert sum(len(r.data) for r in stub.EmbedStream(req, metadata=app.grpc_metadata, timeout=60)) == 40
                counts["ok"] = counts.get("ok", 0) + 1
            except (grpc.RpcError, AssertionError) as err:
                counts.setdefault("errors", []).append(repr(err)[:200])
            time.sleep(0.05)


def soak(app, seconds: float, samples: list | None = None) -> tuple[load.Load, dict]:
    stop, counts = threading.Event(), {}
    g = threading.Thread(target=grpc_loop, args=(app, stop, counts), daemon=True)
    g.start()
    pids = load.replica_pids(app.name)

    def sample(t: float) -> None:
        if samples is not None and (not samples or t - samples[-1][0] >= 2):
            samples.append((t, {d: load.rss_bytes(p) for d, p in pids.items()}))

    try:
        result = load.run(app.http_url, mixed, workers=3, duration_s=seconds, timeout_s=60,
                          keep_body=lambda a: a.status not in (200,), on_tick=sample)
    finally:
        stop.set()
        g.join(90)
    return result, counts


def test_mixed_soak_keeps_replica_memory_bounded(soaked):
    pids = load.replica_pids("soak")
    assert set(pids) == {"Ingress"}, pids  # the default placement: the encoder runs inside the ingress
    # ONNX Runtime's CPU arena keeps its high-water mark: reach it first with the largest run
    # the encoder can be given (max_batch_size texts of max_seq_length tokens = max_batch_tokens),
    # then warm the mix, so what is measured is growth with time, not the first big batch.
    for r in range(2):
        widest = {"model": M, "input": [f"widest {r} {k} " + "word " * 300 for k in range(64)]}
        assert soaked.post("/v1/embeddings", widest, timeout=120)[0] == 200
    warm, warm_grpc = soak(soaked, WARMUP_S)
    assert not warm.failed() and not warm_grpc.get("errors"), (warm.summary(), warm_grpc.get("errors"))
    time.sleep(1)
    before = {d: load.rss_bytes(p) for d, p in pids.items()}
    samples: list = []
    result, grpc_counts = soak(soaked, SOAK_S, samples)
    time.sleep(1)
    after = {d: load.rss_bytes(p) for d, p in pids.items()}
    assert load.replica_pids("soak") == pids, "a replica restarted during the soak"
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    print(f"soak {SOAK_S:.0f}s after {WARMUP_S:.0f}s warm-up: HTTP {result.summary()}; gRPC calls ok {grpc_counts.get('ok', 0)}")
    for d in pids:
        series = " ".join(f"{t:.0f}s:{mib(r[d]):.0f}" for t, r in samples[:: max(1, len(samples) // 12)])
        print(f"  {d}: RSS {mib(before[d])} MiB -> {mib(after[d])} MiB (peak {mib(max(s[1][d] for s in samples))} MiB; {series})")
    codes = result.statuses()
    assert set(codes) <= {200, 400}, result.summary()
    assert codes[400] > 0 and codes[200] > 0
    assert all(a.body["error"]["code"] == "invalid_value" for a in result.answers if a.status == 400)
    assert not result.failed(), [(a.status, a.error, a.body) for a in result.failed()][:3]
    assert not grpc_counts.get("errors"), grpc_counts["errors"][:3]
    assert grpc_counts.get("ok", 0) > 0
    for d in pids:
        assert after[d] - before[d] < RSS_GROWTH_BOUND, f"{d} grew {mib(after[d] - before[d])} MiB in {SOAK_S:.0f}s"
    # The in-process cache kept to its bound through all the fresh texts.
    _, _, stats = soaked.get("/stats")
    assert stats["cache"]["bytes"] <= CACHE_BYTES and stats["in_flight"] == 0, stats
