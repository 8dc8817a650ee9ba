"""Where a request's time goes on the service path, from the service's own stage timings
(HTTP headers x-tokenize-time, x-cache-time, x-queue-time, x-inference-time,
x-postprocess-time, x-total-time; the same keys in gRPC trailers) set against what the
client observed.

    python -m loadtest.profile                        # starts its own service, runs the scenarios
    python -m loadtest.profile --url http://127.0.0.1:8000 --grpc-target 127.0.0.1:9000

Stages, per request (means, ms):
  tokenize     texts -> ids in the ingress
  cache        cache lookup (0 with the cache off)
  queue        encoder calls' wall time minus their inference: the Ray handle hop to the
               encoder replica and back (pickled arrays), the batcher's wait, and waiting
               behind other batches
  inference    ONNX Runtime time of the batched round(s) this request rode in
  postprocess  normalization / output encoding
  pipeline     server total minus the stages above (validation, merge in input order)
  outside      client latency minus server total: request read and JSON/pydantic parsing,
               rendering the answer (floats to JSON text), the Ray Serve proxy hops, loopback
               transfer, the client's own parsing
HTTP only, client side: time to response headers, body download, JSON parse.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.generator import run_load, write_json
from loadtest.load_config import LoadConfig
from loadtest.workload import Corpus, CorpusWorkload, FixedWorkload

SERVER_STAGES = ("tokenize", "cache", "queue", "inference", "postprocess")


def breakdown(samples: list[dict]) -> dict:
    """Mean ms per stage over ok requests, and each as a share of client latency."""
    if not samples:
        return {}
    lat = np.array([s["latency_ms"] for s in samples])
    rows: dict[str, float] = {}
    for st in SERVER_STAGES:
        rows[st] = float(np.mean([s["stages"].get(st, 0.0) for s in samples]))
    total = np.array([s["stages"].get("total", np.nan) for s in samples])
    rows["pipeline"] = float(np.nanmean(total)) - sum(rows[st] for st in SERVER_STAGES)
    rows["server_total"] = float(np.nanmean(total))
    rows["outside"] = float(np.nanmean(lat - total))
    rows["client_latency"] = float(lat.mean())
    client_keys = sorted({k for s in samples for k in s["client"]})
    client = {k: float(np.mean([s["client"].get(k, 0.0) for s in samples])) for k in client_keys}
    out = {
        "requests": len(samples),
        "texts_per_request": float(np.mean([s["texts"] for s in samples])),
        "stages_ms": rows,
        "share_of_latency": {k: v / rows["client_latency"] for k, v in rows.items() if k != "client_latency"},
        "client_ms": client,
        "response_bytes_mean": float(np.mean([s["bytes"] for s in samples])),
        "p50_latency_ms": float(np.percentile(lat, 50)),
    }
    if "headers" in client:
        # Server-side work that happens after the pipeline but before the headers leave:
        # body parsing + validation before it, rendering after it, proxy hops both ways.
        out["stages_ms"]["before_headers_outside_pipeline"] = client["headers"] - rows["server_total"]
    batches = [s["batch_size"] for s in samples if s.get("batch_size")]
    if batches:
        out["encoder_batch_texts_mean"] = float(np.mean(batches))
    return out


ORDER = ("tokenize", "cache", "queue", "inference", "postprocess", "pipeline", "server_total", "outside",
         "client_latency")


def markdown_table(named: dict[str, dict]) -> str:
    """One column per scenario: mean ms (share of client latency)."""
    named = {k: v for k, v in named.items() if v}
    if not named:
        return "(no samples)"
    head = "| stage (mean ms, share of client latency) | " + " | ".join(named) + " |"
    lines = [head, "|---|" + "---:|" * len(named)]
    for st in ORDER:
        cells = []
        for bd in named.values():
            v = bd["stages_ms"].get(st)
            share = bd["share_of_latency"].get(st)
            cells.append("-" if v is None else (f"{v:.1f}" if st == "client_latency" else f"{v:.1f} ({share:.0%})"))
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    extra = [("HTTP: to response headers", "headers"), ("HTTP: body download", "body"),
             ("HTTP: client JSON parse", "parse"), ("gRPC: call", "call")]
    for label, key in extra:
        if any(key in bd["client_ms"] for bd in named.values()):
            cells = [f"{bd['client_ms'][key]:.1f}" if key in bd["client_ms"] else "-" for bd in named.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| response bytes (mean) | " + " | ".join(f"{bd['response_bytes_mean']:,.0f}" for bd in named.values()) + " |")
    if any("encoder_batch_texts_mean" in bd for bd in named.values()):
        lines.append("| texts in the encoder batch (mean) | " + " | ".join(
            f"{bd['encoder_batch_texts_mean']:.1f}" if "encoder_batch_texts_mean" in bd else "-" for bd in named.values()) + " |")
    return "\n".join(lines)


@dataclass
class Scenario:
    name: str
    transport: str
    per_request: int
    concurrency: int
    encoding: str = "float"
    app: str = "miss"  # which deployed app (own service): miss (cache off) or cached


SCENARIOS = [
    Scenario("bulk-http", "http", 64, 4),
    Scenario("bulk-http-base64", "http", 64, 4, "base64"),
    Scenario("bulk-grpc", "grpc", 64, 4),
    Scenario("single-http-c32", "http", 1, 32),
    Scenario("single-http-c1", "http", 1, 1),
    Scenario("bulk-http-cache-hit", "http", 64, 4, app="cached"),
    Scenario("bulk-http-cache-hit-base64", "http", 64, 4, "base64", app="cached"),
    Scenario("single-http-cache-hit-c1", "http", 1, 1, app="cached"),
]


def run_scenarios(targets: dict, corpus: Corpus, scenarios: list[Scenario], duration_s: float,
                  progress: bool = True) -> dict[str, dict]:
    """targets: {app: (http_url, grpc_target, grpc_metadata)}; returns {scenario: report}."""
    out = {}
    for i, sc in enumerate(scenarios):
        if sc.app not in targets:
            continue
        url, grpc_target, md = targets[sc.app]
        if sc.app == "cached":
            wl = FixedWorkload.chunked(corpus.texts, corpus.tokens, sc.per_request, "corpus (cache hits)")
            prime = True
        else:
            wl = CorpusWorkload(corpus, sc.per_request, repeat_share=0.0, seed=i)
            prime = False
        cfg = LoadConfig(transport=sc.transport, url=url, grpc_target=grpc_target, grpc_metadata=md,
                         encoding_format=sc.encoding, concurrency=sc.concurrency, duration_s=duration_s,
                         warmup_s=min(2.0, duration_s / 2), prime_cache=prime, keep_samples=True,
                         progress=progress, label=sc.name)
        out[sc.name] = run_load(cfg, wl)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="HTTP base URL of a running service (else one is started here)")
    p.add_argument("--grpc-target", default=None)
    p.add_argument("--grpc-app", default="embedserve")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per scenario")
    p.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    p.add_argument("--texts", type=int, default=None, help="use the first N corpus texts")
    p.add_argument("--artifact-dir", default=None)
    p.add_argument("--output", default="loadtest/results/profile.json")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    wanted = [s for s in SCENARIOS if s.name in a.scenarios.split(",")]
    corpus = Corpus.load(a.model, a.artifact_dir)
    if a.texts:
        corpus = corpus.subset(a.texts)
    service = None
    if a.url:
        targets = {"miss": (a.url, a.grpc_target or "127.0.0.1:9000", [("application", a.grpc_app)])}
        wanted = [s for s in wanted if s.app == "miss"]  # a running service's cache state is unknown
    else:
        from loadtest.service import LocalService
        from loadtest.workload import artifact_dir

        print("starting a local Ray Serve ...", file=sys.stderr)
        service = LocalService.start()
        common = dict(models=[a.model], artifact_dir=artifact_dir(a.artifact_dir), providers=["cpu"], encoder_num_cpus=1)
        tag = f"p{int(time.time()) % 100000}"
        miss = service.deploy(f"{tag}-nocache", "/nocache", cache="off", **common)
        hit = service.deploy(f"{tag}-cached", "/cached", cache="memory", **common)
        targets = {"miss": (miss.http_url, miss.grpc_target, miss.grpc_metadata),
                   "cached": (hit.http_url, hit.grpc_target, hit.grpc_metadata)}
    try:
        reports = run_scenarios(targets, corpus, wanted, a.duration, not a.no_progress)
    finally:
        if service is not None:
            service.stop()
    named = {k: breakdown(r.get("samples", [])) for k, r in reports.items()}
    print(markdown_table(named))
    for k, r in reports.items():
        lat = r["latency_ms"]
        print(f"{k}: {r['ok']} ok, {r['errors_total']} errors, {r['texts_per_s']:.1f} texts/s, "
              f"p50 {lat['p50'] or 0:.1f} ms, p99 {lat['p99'] or 0:.1f} ms")
    write_json({"breakdown": named, "reports": {k: {kk: vv for kk, vv in r.items() if kk != "samples"}
                                                for k, r in reports.items()}}, a.output)
    print(f"wrote {Path(a.output).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
