"""`make bench`'s section (3): the service on its own local Ray Serve (free loopback ports), three
applications (cache off, cache on, the encoder in its own deployment) under the bench's loads, each
run's throughput, latency, peak RSS and CPU recorded; and the bench's progress lines."""

from __future__ import annotations

import os
import sys
import time

from loadtest.generator import run_load
from loadtest.load_config import LoadConfig
from loadtest.profile import breakdown
from loadtest.workload import Corpus, FixedWorkload, Uniquifier, artifact_dir


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure_service(a, corpus: Corpus, progress: bool) -> tuple[dict, dict]:
    from loadtest.service import LocalService, RssSampler, proxy_pids, replica_pids

    adir = artifact_dir(a.artifact_dir)
    log("starting a local Ray Serve (own Ray, free loopback ports)")
    t0 = time.perf_counter()
    svc = LocalService.start()
    rows: dict[str, dict] = {}
    samples: dict[str, list] = {}
    try:
        common = dict(models=[a.model], artifact_dir=adir, variant=a.variant, providers=a.providers.split(","),
                      encoder_num_cpus=1)
        tag = f"bench{int(time.time()) % 100000}"
        nocache = svc.deploy(f"{tag}-nocache", "/nocache", cache="off", **common)
        cached = svc.deploy(f"{tag}-cached", "/cached", cache="memory", **common)
        separate = svc.deploy(f"{tag}-separate", "/separate", cache="off", encoder_placement="replica", **common)
        log(f"service ready in {time.perf_counter() - t0:.0f} s: {nocache.http_url}, {cached.http_url}, gRPC {nocache.grpc_target}")

        texts, tokens = corpus.texts, corpus.tokens
        bulk = FixedWorkload.chunked(texts, tokens, a.bulk_size, f"corpus, {a.bulk_size} a request")
        single = FixedWorkload.chunked(texts, tokens, 1, "corpus, 1 a request")
        uniq = Uniquifier(corpus.tokenizer, salt=int(time.time() * 1000))
        uniq.check(texts, tokens)

        def miss_workload(run: int) -> FixedWorkload:
            made = [uniq.make(t, n, run * len(texts) + i) for i, (t, n) in enumerate(zip(texts, tokens))]
            return FixedWorkload.chunked([t for t, _ in made], [n for _, n in made], a.bulk_size,
                                         "unique texts (2-word prefix, +2 tokens)")

        def cfg(app, transport, conc, label, requests):
            return LoadConfig(transport=transport, url=app.http_url, grpc_target=app.grpc_target,
                              grpc_metadata=app.grpc_metadata, model=a.model, concurrency=conc, requests=requests,
                              timeout_s=300, keep_samples=True, progress=progress, label=label,
                              http_client=a.http_client)

        plan = [
            ("bulk_http", lambda r: (cfg(nocache, "http", a.bulk_concurrency, "bulk HTTP", len(bulk)), bulk, nocache)),
            ("single_c32", lambda r: (cfg(nocache, "http", a.single_concurrency, "single c32", len(single)), single, nocache)),
            ("grpc_bulk", lambda r: (cfg(nocache, "grpc", a.bulk_concurrency, "gRPC bulk", len(bulk)), bulk, nocache)),
            ("cache_miss", lambda r: (cfg(cached, "http", a.bulk_concurrency, "cache miss", len(bulk)), miss_workload(r), cached)),
            ("cache_hit", lambda r: (cfg(cached, "http", a.bulk_concurrency, "cache hit", len(bulk) * a.hit_passes), bulk, cached)),
            ("separate_bulk", lambda r: (cfg(separate, "http", a.bulk_concurrency, "bulk HTTP, encoder deployment", len(bulk)), bulk, separate)),
            ("separate_single", lambda r: (cfg(separate, "http", a.single_concurrency, "single c32, encoder deployment", len(single)), single, separate)),
        ]
        # Warm both apps (ORT's first runs per shape, connections) and put the hit texts in the cache.
        log("warming up and priming the cache")
        for app, transport in ((nocache, "http"), (nocache, "grpc"), (cached, "http"), (separate, "http")):
            run_load(LoadConfig(transport=transport, url=app.http_url, grpc_target=app.grpc_target,
                                grpc_metadata=app.grpc_metadata, model=a.model, concurrency=2,
                                requests=min(4, len(bulk)), timeout_s=300, progress=False, label="warm-up"), bulk)
        run_load(LoadConfig(url=cached.http_url, model=a.model, concurrency=2, requests=len(bulk), timeout_s=300,
                            progress=False, label="prime"), bulk)

        proxies = proxy_pids()
        for run in range(a.runs):
            for key, make in plan:
                c, wl, app = make(run)
                pids = list(replica_pids(app.name).values())
                load1 = os.getloadavg()[0]
                client0 = time.process_time()
                with RssSampler(pids, cpu_only_pids=proxies) as rss:
                    rep = run_load(c, wl)
                client_cpu = time.process_time() - client0
                lat = rep["latency_ms"]
                row = rows.setdefault(key, {"name": key, "runs": [], "peak_rss_bytes": 0, "detail": {
                    "workload": rep["workload"], "concurrency": c.concurrency, "transport": c.transport,
                    "replicas": sorted(replica_pids(app.name))}})
                row["runs"].append({"texts_per_s": rep["texts_per_s"], "tokens_per_s": rep["tokens_per_s"],
                                    "p50": lat["p50"], "p99": lat["p99"], "errors": rep["errors_total"],
                                    "error_kinds": rep["errors"], "seconds": rep["window_s"],
                                    "server_tokens_match": rep["server_tokens"] in (None, rep["tokens"]),
                                    "cores": rss.cpu_s / max(rep["window_s"], 1e-9),
                                    "client_cores": client_cpu / max(rep["window_s"], 1e-9), "loadavg": load1})
                row["peak_rss_bytes"] = max(row["peak_rss_bytes"], rss.peak)
                samples.setdefault(key, []).extend(rep.pop("samples", []))
                log(f"run {run + 1}/{a.runs} {key}: {rep['texts_per_s']:.1f} texts/s, p50 {lat['p50'] or 0:.0f} ms, "
                    f"p99 {lat['p99'] or 0:.0f} ms, errors {rep['errors_total']}")
        stats = {name: app.get("/stats")[2] for name, app in (("nocache", nocache), ("cached", cached), ("separate", separate))}
        rows["_stats"] = stats
    finally:
        log("stopping the service")
        svc.stop()
    return rows, {k: breakdown(v) for k, v in samples.items()}
