"""Rolling updates of the chart's application under load, on the cluster: a changed batching
setting, then a model artifact of another version (other weights, its own checksum), then back
to the first. No request fails, and no answer holds vectors of two model versions, even a
request split into several encoder calls while old and new replicas both answer. Every vector
is checked against the engine's for its version."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from tests.support import load
from tests.support.cluster import Reference, other_weights, vectors_of

pytestmark = pytest.mark.integration

SAME = 0.9999  # cosine of a vector to the engine's for its own version (another version: < 0.999)


def test_rolling_updates_under_load_fail_no_request_and_never_mix_model_versions(cluster_app):
    assert cluster_app.args["max_batch_size"] != 32
    variant = cluster_app.args["variant"]  # the chart's: auto (v2's artifacts hold the fused fp32 graph only)
    v2 = other_weights(Path(cluster_app.cluster.temp_dir) / "artifacts-v2")
    rng = random.Random(7)
    words = "alpha beta gamma delta cedar orbit lamp quiet ember violet copper tundra prism falcon".split()
    pool = [f"rollout {i}: " + " ".join(rng.choice(words) for _ in range(5 + i % 25)) for i in range(300)]
    ref = Reference()
    versions = {"v1": ref.of(pool, variant), "v2": ref.of(pool, variant, artifacts=v2)}
    assert np.sum(versions["v1"] * versions["v2"], axis=1).max() < SAME  # every text tells them apart
    index = {t: i for i, t in enumerate(pool)}
    cache = redis.Redis.from_url(cluster_app.cluster.redis.url)
    flushed = [time.monotonic()]
    stages = [(("serve.maxBatchSize=32",), None), (("serve.maxBatchSize=32",), v2), ((), None)]
    done: list[tuple[float, str]] = []

    def request(w: int, n: int):
        if time.monotonic() - flushed[0] > 2:  # keep the encoders answering, not the cache
            cache.flushdb()
            flushed[0] = time.monotonic()
        batch = rng.sample(pool, rng.choice([1, 2, 3, 100, 150]))  # 100, 150: two, three encoder calls
        return "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": batch}, batch

    def roll(t: float):
        if t < 5:
            return None
        if len(done) == len(stages):
            return load.STOP
        sets, artifacts = stages[len(done)]
        cluster_app.deploy(*sets, artifact_dir=artifacts)
        done.append((round(t, 1), f"{sets} {artifacts or ''}"))
        return None

    result = load.run(cluster_app.url(), request, workers=6, duration_s=900, timeout_s=120, on_tick=roll,
                      backoff_s=0.2)
    print("rolling updates:", result.summary(), "updates started at", done)
    assert len(done) == len(stages), done
    assert result.statuses() == {200: len(result.answers)}, [(a.status, a.error, str(a.body)[:200])
                                                               for a in result.failed()][:5]
    seen = {"v1": 0, "v2": 0}
    for a in result.answers:
        got = vectors_of(a.body, len(a.tag))
        assert got is not None, f"a partial answer: {str(a.body)[:300]}"
        rows = [index[t] for t in a.tag]
        match = {v: np.sum(got * ref_v[rows], axis=1) >= SAME for v, ref_v in versions.items()}
        assert np.all(match["v1"] | match["v2"]), f"a vector of neither version (sent at {a.sent_at:.1f} s)"
        one = [v for v in versions if np.all(match[v])]
        assert one, f"an answer mixing two model versions ({len(a.tag)} texts, sent at {a.sent_at:.1f} s)"
        seen[one[0]] += 1
    print("answers per model version:", seen)
    assert seen["v1"] and seen["v2"], seen  # both versions answered while it rolled
