"""Every Ingress replica shares one Redis: a text embedded through the Ingress replica on one
worker node is a cache hit through the Ingress replica on the other node."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.support.cluster import INGRESS, Reference, vectors_of

pytestmark = pytest.mark.integration


def test_a_text_embedded_on_one_node_is_a_cache_hit_on_the_other(cluster_app):
    layout = cluster_app.placement()
    assert sorted(layout[INGRESS]) == ["worker-0", "worker-1"], layout
    text = f"shared between nodes {time.time()}"

    # Each worker node's Serve proxy hands requests to the Ingress replica on its own node
    # (Serve routes to a local replica first): worker-0's /stats is its replica's, never the other's.
    stats = {n: cluster_app.get("/stats", node=n)[2] for n in ("worker-0", "worker-1")}
    status, headers, body = cluster_app.post([text], node="worker-0")
    assert status == 200 and headers["x-cache-hits"] == "0", (status, headers, body)
    first = vectors_of(body, 1)

    deadline = time.monotonic() + 10  # the cache write is in the background
    while True:
        status, headers, again = cluster_app.post([text], node="worker-1")
        assert status == 200, again
        if headers["x-cache-hits"] == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert headers["x-cache-hits"] == "1", headers
    np.testing.assert_array_equal(vectors_of(again, 1), first)
    # The model's vector, to the variant's precision (bf16 moves elements by up to ~5e-4 with the
    # run's shape and threads), judged by cosine as in the other cluster tests.
    ref = Reference().of([text], cluster_app.args["variant"])
    assert float(np.sum(first * ref)) >= 0.9999, float(np.sum(first * ref))

    # Two different replicas answered: each one's own counters moved by its own request only.
    after = {n: cluster_app.get("/stats", node=n)[2] for n in ("worker-0", "worker-1")}
    print("stats before", stats, "after", after)
    assert after["worker-0"]["cache"]["backend"] == after["worker-1"]["cache"]["backend"] == "redis"
    assert after["worker-0"]["cache"]["misses"] > stats["worker-0"]["cache"]["misses"]
    assert after["worker-1"]["cache"]["hits"] > stats["worker-1"]["cache"]["hits"]
    assert after["worker-1"]["cache"]["misses"] == stats["worker-1"]["cache"]["misses"]
