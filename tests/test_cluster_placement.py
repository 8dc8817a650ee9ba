"""On the multi-node cluster, the chart's application puts encoder replicas on both worker nodes
(none on the head, which has no CPUs) and both answer requests; every answer is the engine's."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.support import load
from tests.support.cluster import ENCODER, INGRESS, Reference, unique_texts, vectors_of

pytestmark = pytest.mark.integration


def test_encoder_replicas_on_both_worker_nodes_answer_requests(cluster_app):
    before = {node: cluster_app.encoder_calls(node) for node in ("worker-0", "worker-1")}
    texts = unique_texts(f"placement {time.time()}")
    seen = []

    def request(w: int, n: int):
        batch = [next(texts) for _ in range(1 + n % 3)]
        return "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": batch}, batch

    spread_at: dict = {}  # when the encoders first ran on both nodes, and that layout

    def spread(t: float):
        seen.append(cluster_app.placement())
        if not spread_at and set(seen[-1].get(ENCODER, [])) == {"worker-0", "worker-1"} and t > 10:
            spread_at.update(t=t, layout=seen[-1])
        # Keep the load on a while longer, so the replica that just started on the second node
        # gets calls too (stopping at once left it none).
        return load.STOP if spread_at and t - spread_at["t"] >= 15 else None

    # Load enough that Serve autoscales the encoders past one replica; until they run on both.
    result = load.run(cluster_app.url(), request, workers=8, duration_s=150, timeout_s=90, on_tick=spread)
    print("placement:", result.summary(), spread_at.get("layout"), "then", seen[-1])
    assert result.statuses() == {200: len(result.answers)}, result.summary()
    assert spread_at, seen[-1]
    layout = spread_at["layout"]
    assert set(layout[ENCODER]) == {"worker-0", "worker-1"}, layout
    assert sorted(layout[INGRESS]) == ["worker-0", "worker-1"], layout  # one per node (maxReplicasPerNode)
    assert "head" not in {n for nodes in layout.values() for n in nodes}

    # Both nodes' encoder replicas answered: Serve's per-replica counters on each node's
    # Prometheus endpoint went up (Ray reports them every few seconds).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        grew = {n: cluster_app.encoder_calls(n) - before[n] for n in before}
        if all(v > 0 for v in grew.values()):
            break
        time.sleep(2)
    assert all(v > 0 for v in grew.values()), grew

    ref = Reference()
    for a in result.answers:
        got = vectors_of(a.body, len(a.tag))
        assert got is not None, a.body
        cos = np.sum(got * ref.of(a.tag, cluster_app.args["variant"]), axis=1)
        assert cos.min() >= 0.9999, (a.tag, cos.min())
