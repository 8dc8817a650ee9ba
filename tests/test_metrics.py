"""Prometheus metrics on the node's fixed metrics port (EMBEDSERVE_METRICS_PORT), with the
service's own counters and stage histograms (Ray exports them as ray_embedserve_*)."""

from __future__ import annotations

import time
import urllib.request

import pytest

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_stage_histograms_and_counters_are_scraped_on_the_metrics_port(ray_serve, service):
    status, _, _ = service.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": f"scraped at {time.time()}"})
    assert status == 200
    wanted = ["ray_embedserve_stage_seconds_bucket{", 'stage="inference"', "ray_embedserve_requests_total{",
              "ray_embedserve_batch_size_bucket{"]
    text = ""
    deadline = time.monotonic() + 60  # Ray exports recorded metrics every few seconds
    while time.monotonic() < deadline:
        text = scrape(ray_serve.metrics_port)
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    missing = [w for w in wanted if w not in text]
    assert not missing, f"{missing} not on :{ray_serve.metrics_port}/metrics"
    inference = [line for line in text.splitlines()
                 if line.startswith("ray_embedserve_stage_seconds_count") and 'stage="inference"' in line]
    assert inference and max(float(line.rsplit(" ", 1)[1]) for line in inference) >= 1
