"""Serve autoscales the chart's encoder deployment on the cluster: load adds replicas up to the
configured maximum, quiet removes them down to the minimum, and no request fails either way."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.support import load
from tests.support.cluster import ENCODER, Reference, unique_texts, vectors_of

pytestmark = pytest.mark.integration


def wait_replicas(cluster_app, want: int, timeout_s: float) -> list[tuple[float, int]]:
    """Poll the encoder replica count until it is `want` (RUNNING ones); the timeline seen."""
    seen, start = [], time.monotonic()
    while time.monotonic() - start < timeout_s:
        n = len(cluster_app.placement().get(ENCODER, []))
        if not seen or seen[-1][1] != n:
            seen.append((round(time.monotonic() - start, 1), n))
        if n == want:
            break
        time.sleep(1)
    return seen


def all_answers_right(cluster_app, result) -> None:
    ref = Reference()
    assert result.statuses() == {200: len(result.answers)}, result.summary()
    for a in result.answers:
        got = vectors_of(a.body, len(a.tag))
        assert got is not None, a.body
        assert np.sum(got * ref.of(a.tag, cluster_app.args["variant"]), axis=1).min() >= 0.9999, a.tag


def test_load_adds_encoder_replicas_up_to_the_maximum_and_quiet_removes_them(cluster_app):
    scaling = cluster_app.deployment_config(ENCODER)["autoscaling_config"]
    low, high = scaling["min_replicas"], scaling["max_replicas"]
    assert high > low
    quiet = wait_replicas(cluster_app, low, 90)
    assert quiet[-1][1] == low, f"not back to {low} replicas when quiet: {quiet}"

    texts = unique_texts(f"autoscaling {time.time()}")
    counts: list[tuple[float, int]] = []
    held = {}

    def request_of(size: int):
        def request(w: int, n: int):
            batch = [next(texts) for _ in range(size)]
            return "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": batch}, batch
        return request

    def watch(t: float):
        n = len(cluster_app.placement().get(ENCODER, []))
        counts.append((round(t, 1), n))
        if n >= high:
            held.setdefault("at", t)
        return load.STOP if "at" in held and t > held["at"] + 5 else None

    # Up: 12 clients keep up to 12 encoder calls in flight, three times the target of the
    # maximum's replicas. Each carries 8 texts, so a request's time is mostly the encoder's:
    # with one or two short texts the hops before it (proxy, ingress) held half the calls on a
    # slow machine, and Serve saw too few in flight to want the maximum.
    up = load.run(cluster_app.url(), request_of(8), workers=12, duration_s=150, timeout_s=90, on_tick=watch)
    print("scale up:", up.summary(), "replicas over time:", counts[:: max(1, len(counts) // 20)])
    assert max(n for _, n in counts) == high, counts

    # Down, at once: one client, one text at a time (never more than one replica's target),
    # while Serve removes replicas.
    down_seen = []

    def shrink(t: float):
        n = len(cluster_app.placement().get(ENCODER, []))
        down_seen.append((round(t, 1), n))
        return load.STOP if n == low else None

    down = load.run(cluster_app.url(), request_of(1), workers=1, duration_s=120, timeout_s=90, on_tick=shrink)
    print("scale down:", down.summary(), "replicas over time:", down_seen[:: max(1, len(down_seen) // 20)])
    assert down_seen[0][1] > low and down_seen[-1][1] == low, down_seen
    assert max(n for _, n in down_seen) <= high
    all_answers_right(cluster_app, up)
    all_answers_right(cluster_app, down)
