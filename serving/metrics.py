"""Prometheus metrics on Ray's metrics endpoint of each node (EMBEDSERVE_METRICS_PORT, 8080, on a
node `embedserve serve` starts; `--metrics-export-port 8080` on the Helm chart's pods), where
Ray names them with a `ray_` prefix (ray_embedserve_requests_total, ...).

| name | kind | tags |
|---|---|---|
| embedserve_requests_total | counter | model, transport, status |
| embedserve_texts_total | counter | model |
| embedserve_tokens_total | counter | model |
| embedserve_cache_hits_total / embedserve_cache_misses_total | counter | model |
| embedserve_stage_seconds | histogram | model, stage (tokenize, cache, queue, inference, postprocess, total) |
| embedserve_batch_size | histogram | model (texts per ONNX Runtime run) |
| embedserve_batch_padded_tokens | histogram | model |

A request only adds to plain dicts and a list; Ray's metric calls (about ten a request, a few
per cent of a single-text request's CPU) happen once a second, off the request's path: counters
as one increment of their sum, histograms one observation a request.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ray.serve import metrics

STAGE_BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
BATCH_BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
TOKEN_BOUNDS = [64, 256, 1024, 2048, 4096, 8192, 16384, 32768]


class IngressMetrics:
    FLUSH_S = 1.0

    def __init__(self):
        self.requests = metrics.Counter(
            "embedserve_requests_total", "Requests by outcome.", tag_keys=("model", "transport", "status")
        )
        self.texts = metrics.Counter("embedserve_texts_total", "Texts embedded.", tag_keys=("model",))
        self.tokens = metrics.Counter("embedserve_tokens_total", "Prompt tokens.", tag_keys=("model",))
        self.hits = metrics.Counter("embedserve_cache_hits_total", "Cache hits.", tag_keys=("model",))
        self.misses = metrics.Counter("embedserve_cache_misses_total", "Cache misses.", tag_keys=("model",))
        self.stages = metrics.Histogram(
            "embedserve_stage_seconds", "Time per pipeline stage.", boundaries=STAGE_BOUNDS, tag_keys=("model", "stage")
        )
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._per_model: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # texts, tokens, hits, misses
        self._timings: list[tuple[str, dict[str, float]]] = []
        self._flush: asyncio.TimerHandle | None = None

    def record(self, model: str, transport: str, outcome=None, status: str = "ok", count: int = 0):
        self._requests[(model, transport, status)] += 1
        if outcome is not None:
            sums = self._per_model[model]
            sums[0] += count
            sums[1] += outcome.prompt_tokens
            sums[2] += outcome.cache_hits
            sums[3] += count - outcome.cache_hits
            self._timings.append((model, outcome.timings))
        if self._flush is None:
            try:
                self._flush = asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
            except RuntimeError:  # no event loop (a plain test): at once
                self.flush()

    def flush(self) -> None:
        """Hand what was recorded to Ray's metrics."""
        self._flush = None
        requests, self._requests = self._requests, defaultdict(int)
        per_model, self._per_model = self._per_model, defaultdict(lambda: [0, 0, 0, 0])
        timings, self._timings = self._timings, []
        for (model, transport, status), n in requests.items():
            self.requests.inc(n, tags={"model": model, "transport": transport, "status": status})
        for model, (texts, tokens, hits, misses) in per_model.items():
            tags = {"model": model}
            for counter, n in ((self.texts, texts), (self.tokens, tokens), (self.hits, hits), (self.misses, misses)):
                if n:
                    counter.inc(n, tags=tags)
        for model, stages in timings:
            for stage, seconds in stages.items():
                self.stages.observe(seconds, tags={"model": model, "stage": stage})


class EncoderMetrics:
    def __init__(self, model: str):
        self.tags = {"model": model}
        self.batch_size = metrics.Histogram(
            "embedserve_batch_size", "Texts per ONNX Runtime run.", boundaries=BATCH_BOUNDS, tag_keys=("model",)
        )
        self.padded = metrics.Histogram(
            "embedserve_batch_padded_tokens", "Padded tokens per run.", boundaries=TOKEN_BOUNDS, tag_keys=("model",)
        )

    def record(self, stats):
        for size in stats.batch_sizes:
            self.batch_size.observe(size, tags=self.tags)
        if stats.batches:
            self.padded.observe(stats.padded_tokens / stats.batches, tags=self.tags)
