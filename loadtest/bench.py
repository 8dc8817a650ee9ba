"""`make bench`: the service against the raw engine ceiling and sentence-transformers, on the
same machine, in one run, on the corpus the repository carries.

  (1) raw ceilings  the engine the service uses (the `auto` variant, runtime, threads, streams,
                    batch limits and cost model from the service's settings), in-process,
                    pre-tokenized texts, length-sorted batches, no server; beside it each
                    runtime and precision alone (ONNX Runtime fp32 / fused, OpenVINO fp32),
                    what `auto` picks on a CPU without bf16 units, and the second model
  (2) sentence-transformers `encode`, the same texts, batched as it batches them (sorted, 32):
                    torch fp32, torch bf16, and its OpenVINO backend
  (ingress) single texts through each ingress Ray Serve offers (proxy, direct, haproxy), each on
                    a Ray of its own, beside the raw engine's batch-1 latency (loadtest.ingress)
  (3) the service (its own local Ray Serve, started here on free loopback ports):
      bulk HTTP (64 texts a request), single texts at concurrency 32 (dynamic batching),
      gRPC bulk, and cache hits (the same texts again) next to cache misses (unique texts)

Every figure is measured; each is the median of --runs runs. Writes BENCHMARKS.md and a
JSON file of everything under loadtest/results/.

    python -m loadtest.bench            # full: every corpus text, 3 runs
    python -m loadtest.bench --quick    # smoke test: a few texts, 1 run
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from loadtest import gemm_peak, sysinfo
from models.specs import resolve_model
from loadtest.cluster_bench import kept_section
from loadtest.engines import run_child
from loadtest.generator import run_load, write_json
from loadtest.load_config import LoadConfig
from loadtest.profile import breakdown, markdown_table
from loadtest.workload import Corpus, FixedWorkload, Uniquifier, artifact_dir

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20

# (key, label, what it is compared with, the ratio it must reach)
TARGETS = [
    ("raw", "raw engine (auto) >= 3x raw ONNX Runtime fp32", "raw_ort_fp32", 3.0),
    ("mpnet_raw", "all-mpnet-base-v2: raw engine (auto) >= 2.5x raw ONNX Runtime fp32", "mpnet_raw_ort_fp32", 2.5),
    ("raw_no_bf16", "auto on a CPU without bf16 (fp32) >= 1.0x raw ONNX Runtime fp32", "raw_ort_fp32", 1.0),
    ("bulk_http", "bulk HTTP >= 0.9x raw", "raw", 0.9),
    ("bulk_http", "bulk HTTP >= 1.2x sentence-transformers backend=openvino", "st_openvino", 1.2),
    ("grpc_bulk", "gRPC bulk >= 0.85x raw", "raw", 0.85),
    ("single_c32", "single-text at concurrency 32 >= 0.70x raw", "raw", 0.70),
    ("cache_hit", "cache hits >= 10x miss throughput", "cache_miss", 10.0),
]
# Peak RSS of the service (bulk HTTP row) before the OpenVINO engine: BENCHMARKS.md of
# 2026-11-23 (commit 793b6ea), 382 MiB. Target: no more than +30 %.
RSS_BEFORE_MIB = 382
RSS_GROWTH = 1.30
# The raw rows of the bench model, set against the machine's GEMM peak (loadtest.gemm_peak).
RAW_OF_MODEL = ("raw", "raw_ort_fp32", "raw_ov_fp32", "raw_no_bf16")
MPNET_TEXTS = 500  # the second model's raw ceilings run on the first texts only (5x the cost a text)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: --texts 128 --runs 1 (figures are not the numbers)")
    p.add_argument("--runs", type=int, default=None, help="runs per measurement; the median is reported (default 3)")
    p.add_argument("--texts", type=int, default=None, help="first N corpus texts (default: all of them)")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto", help="the service's variant (default: auto, as it serves)")
    p.add_argument("--providers", default="cpu", help="ONNX Runtime providers, for the raw run and the service alike")
    p.add_argument("--bulk-size", type=int, default=64, help="texts per bulk request")
    p.add_argument("--bulk-concurrency", type=int, default=4, help="bulk requests in flight")
    p.add_argument("--single-concurrency", type=int, default=32)
    p.add_argument("--hit-passes", type=int, default=5, help="passes over the texts in a cache-hit run")
    p.add_argument("--artifact-dir", default=None)
    p.add_argument("--skip-st", action="store_true", help="leave out sentence-transformers")
    p.add_argument("--skip-ingress", action="store_true",
                   help="leave out the ingress options side by side (python -m loadtest.ingress)")
    p.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--json", default=None, help="default: loadtest/results/bench-<time>.json")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.runs is None:
        a.runs = 1 if a.quick else 3
    if a.texts is None and a.quick:
        a.texts = 128
    if a.runs < 1:
        p.error("--runs must be at least 1")
    return a


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def engine_row(name: str, result: dict, n_texts: int, n_tokens: int) -> dict:
    runs = []
    for r in result["runs"]:
        lat = r["batch_latency_ms"]
        runs.append({"seconds": r["seconds"], "texts_per_s": n_texts / r["seconds"], "tokens_per_s": n_tokens / r["seconds"],
                     "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "errors": 0,
                     "cores": r["cpu_s"] / r["seconds"], "loadavg": None})
    return {"name": name, "runs": runs, "peak_rss_bytes": result["peak_rss_bytes"], "detail": {
        k: v for k, v in result.items() if k not in ("runs", "peak_rss_bytes")}}


def summarize(row: dict) -> dict:
    runs = row["runs"]
    return {
        "texts_per_s": median([r["texts_per_s"] for r in runs]),
        "tokens_per_s": median([r["tokens_per_s"] for r in runs]),
        "p50": median([r["p50"] for r in runs]),
        "p99": median([r["p99"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "cores": median([r.get("cores") for r in runs]),
        "client_cores": median([r.get("client_cores") for r in runs]),
        "texts_per_cpu_s": median([r["texts_per_s"] / r["cores"] if r.get("cores") else None for r in runs]),
        "spread": (min(r["texts_per_s"] for r in runs), max(r["texts_per_s"] for r in runs)),
    }


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
                              timeout_s=300, keep_samples=True, progress=progress, label=label)

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


LABELS = {
    "raw": "(1) raw ceiling: the engine the service runs (auto), in-process",
    "raw_ort_fp32": "(1) raw: ONNX Runtime fp32 (the engine before OpenVINO)",
    "raw_ort_optimized": "(1) raw: ONNX Runtime fp32, fused graph",
    "raw_ov_fp32": "(1) raw: OpenVINO fp32",
    "raw_no_bf16": "(1) raw: auto as on a CPU without bf16 units",
    "mpnet_raw": "(1) raw: all-mpnet-base-v2, auto",
    "mpnet_raw_ort_fp32": "(1) raw: all-mpnet-base-v2, ONNX Runtime fp32",
    "st": "(2) sentence-transformers, torch fp32",
    "st_bf16": "(2) sentence-transformers, torch bf16",
    "st_openvino": "(2) sentence-transformers, backend=\"openvino\"",
    "bulk_http": "(3) service, bulk HTTP",
    "single_c32": "(3) service, single text, concurrency 32",
    "grpc_bulk": "(3) service, gRPC bulk",
    "cache_miss": "(3) service, cache miss (unique texts)",
    "cache_hit": "(3) service, cache hit (same texts again)",
    "separate_bulk": "(3) service, bulk HTTP, encoder in its own deployment",
    "separate_single": "(3) service, single text, concurrency 32, encoder in its own deployment",
}


def render(a, meta: dict, rows: dict, summary: dict, verdicts: list, stages: dict, ingress: dict | None = None) -> str:
    m = meta["machine"]
    cs = meta["corpus"]
    raw = summary.get("raw", {}).get("texts_per_s")  # None when the raw run failed: no "x raw" column figures
    f = lambda v, d=1: "-" if v is None else f"{v:,.{d}f}"  # noqa: E731
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m loadtest.bench` (`make bench`); every figure below is measured by that run, none is typed in.",
        "",
    ]
    if a.quick:
        lines += ["> **Quick mode (smoke test)**: few texts and one run; these figures only show that the tools work.",
                  "> Run `make bench` on a quiet machine for the numbers.", ""]
    lines += [
        f"- Date: {meta['date']}",
        f"- Command: `{meta['command']}`",
        f"- Machine: nproc {m['nproc']}, {m['cpu_model']}, {m['ram_gib']} GiB RAM, {m['os']}",
        f"- CPU flags the figures came from: {', '.join(m['cpu_flags']) or 'none of the reported ones'} "
        f"({'has' if m['cpu_bf16'] else 'no'} bf16 matrix units)",
        "- Engines: " + "; ".join(
            f"{k}: {e['variant']} on {(e.get('describe') or {}).get('backend')} {(e.get('describe') or {}).get('version')}, "
            f"{e['precision']}, {(e.get('describe') or {}).get('streams') or 1} stream(s)"
            if e.get("variant") else f"{k}: sentence-transformers {e.get('mode')}"
            + (f" ({e['precision']})" if e.get("precision") else "")
            for k, e in meta["engines"].items()),
        f"- Load average (1/5/15 min) at start {m['loadavg']}, at end {meta['loadavg_end']}; CPU pressure "
        f"(PSI some avg60) at start {m['cpu_pressure_avg60']}%, at end {meta['cpu_pressure_end']}%"
        # Only the figures at start tell of other work: at the end they include this run's own load.
        + (" — the machine was busy with other work when the run began; figures are noisy."
           if m['loadavg'][0] > m['nproc'] * 0.75 or (m['cpu_pressure_avg60'] or 0) > 10 else ""),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- Texts: {cs['texts']} texts from `{Path(cs['source']).relative_to(ROOT) if Path(cs['source']).is_relative_to(ROOT) else cs['source']}`, "
        f"{cs['tokens_mean']} tokens a text on average (median {cs['tokens_p50']:g}, p90 {cs['tokens_p90']:g}, max {cs['tokens_max']}; "
        f"the model's tokenizer, specials included, truncated at {cs['truncated_at']}), {cs['tokens_total']:,} tokens in all",
        f"- Model: {cs['model']}, variant `{a.variant}` (the service's), providers `{a.providers}`, "
        f"batches of at most {meta['max_batch_size']} texts / {meta['max_batch_tokens']} padded tokens",
        f"- Each figure: median of {a.runs} run(s); spread (min-max texts/s) in the last column",
        "",
        "| measurement | texts/s | tokens/s | x raw | p50 ms | p99 ms | peak RSS MiB | CPU cores used | texts per CPU-s | errors | runs: texts/s min-max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in LABELS:
        if key not in summary:
            continue
        s = summary[key]
        base = summary.get("mpnet_raw", {}).get("texts_per_s") if key.startswith("mpnet") else raw
        ratio = s["texts_per_s"] / base if base else None
        lo, hi = s["spread"]
        lines.append(f"| {LABELS[key]} | {f(s['texts_per_s'])} | {f(s['tokens_per_s'], 0)} | {f(ratio, 2)} | "
                     f"{f(s['p50'])} | {f(s['p99'])} | {rows[key]['peak_rss_bytes'] / MiB:,.0f} | {f(s['cores'], 2)} | {f(s['texts_per_cpu_s'])} | {s['errors']} | "
                     f"{lo:,.1f}-{hi:,.1f} |")
    lines += [
        "",
        "Notes:",
        "- (1) and (2) run in fresh child processes of the benchmark (peak RSS is that process's); their p50/p99 are per "
        f"engine run (up to {meta['max_batch_size']} texts; with several streams, one batch a stream side by side) / "
        f"`encode` batch (32 texts), not per request. (1) excludes tokenization ({f(meta['raw_tokenize_s'], 2)} s for these "
        f"texts); (2) includes it. all-mpnet-base-v2 rows: the first {MPNET_TEXTS} texts; their x raw compares with its own "
        "ONNX Runtime fp32 row in the targets. sentence-transformers' OpenVINO backend gets one untimed pass first "
        "(it compiles each new shape).",
        f"- (3) p50/p99 are per request, client-observed. Bulk: {a.bulk_size} texts a request, {a.bulk_concurrency} requests in flight; "
        f"single: 1 text a request, {a.single_concurrency} in flight. Floats as JSON (HTTP) / repeated float (gRPC). "
        "The load generator shares the machine's cores with the service.",
        "- (3) peak RSS: the application's Ray Serve replica processes (the ingress, and the encoder where it has its own), summed.",
        "- CPU cores used: CPU time over wall time of the measured process(es) ((1)/(2): the child; (3): the app's replicas "
        "and Ray Serve's proxies; the load generator's own share is in the JSON as client_cores). Well under the core count "
        "on a busy machine means the measurement was starved by other work; texts per CPU-second is then the steadier "
        "figure (ONNX Runtime's spinning threads count as CPU too).",
        f"- Cache: hit = the same texts again on a cache-on app, after one priming pass ({a.hit_passes} passes a run); miss = texts "
        "made unique with a two-word prefix (+2 tokens each) on the same app. Bulk HTTP, single and gRPC run on a cache-off app.",
        "- The service rows run the default placement (`encoder_placement=ingress`: the encoder inside the ingress "
        "replica, no Ray hop per call); \"encoder in its own deployment\" rows are the same loads on the cluster layout "
        "(`encoder_placement=replica`, as the Helm chart and serve.yaml deploy it).",
        "",
        "## Targets (ratios of texts/s)",
        "",
        "| target | measured | verdict |",
        "|---|---:|---|",
    ]
    for label, value, verdict in verdicts:
        lines.append(f"| {label} | {f(value, 2)}x | {verdict} |")
    if ingress:
        from loadtest.ingress import markdown as ingress_table

        ia = ingress["args"]
        lines += [
            "",
            "## Ingress options side by side: single texts (`python -m loadtest.ingress`)",
            "",
            f"Each option in its own local Ray (the option is Ray Serve's environment), cache off except the cache-hit row; "
            f"{ia['texts']} texts a c32 run, {ia['idle_requests']} one-at-a-time requests an idle run, medians of "
            f"{ia['runs']} run(s). `direct` is what `embedserve serve` runs (and the service rows above); the Helm chart "
            "and serve.yaml default to `proxy` (`serve.ingress.mode: haproxy` is one value away). The raw batch-1 figure is the engine alone, one text at a time (tokenize + "
            "run + pool, `python -m loadtest.engines raw1`).",
            "",
            ingress_table(ingress["summary"], ia["runs"], summary.get("raw", {}).get("texts_per_s")),
        ]
    lines += [
        "",
        "## Where a request's time goes (service path)",
        "",
        "From the service's stage timings (`x-*-time` headers / gRPC trailers) against client latency, over every "
        "measured request; `python -m loadtest.profile` runs more scenarios (base64, concurrency 1).",
        "",
        markdown_table({LABELS[k].replace("(3) service, ", ""): v for k, v in stages.items() if v}),
        "",
    ]
    findings = ROOT / "loadtest" / "FINDINGS.md"
    if findings.is_file():  # the hand-written analysis of the profile, after the measured tables
        lines += [findings.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    progress = not a.no_progress
    from serving.settings import Settings

    s = Settings()
    adir = artifact_dir(a.artifact_dir)
    machine = sysinfo.machine()
    log(f"machine: nproc {machine['nproc']}, {machine['cpu_model']}, load {machine['loadavg']}")
    corpus = Corpus.load(a.model, adir)
    if a.texts:
        corpus = corpus.subset(a.texts)
    n_texts, n_tokens = len(corpus), sum(corpus.tokens)
    log(f"texts: {n_texts}, {n_tokens} tokens ({n_tokens / n_texts:.1f} a text), {a.runs} run(s) each")

    spec_in = dict(model=a.model, artifact_dir=str(adir), variant=a.variant, providers=a.providers.split(","),
                   intra_op_threads=s.intra_op_threads, max_batch_size=s.max_batch_size,
                   max_batch_tokens=s.max_batch_tokens, streams=s.openvino_streams, texts=corpus.texts,
                   tokens=corpus.tokens, runs=a.runs)
    workdir = ROOT / "loadtest" / "results" / "tmp"
    rows: dict[str, dict] = {}
    engines: dict[str, dict] = {}
    no_bf16 = [f for f in machine["cpu_flags"] if f not in ("amx_bf16", "avx512_bf16")]
    mpnet = Corpus.load("all-mpnet-base-v2", adir).subset(min(MPNET_TEXTS, n_texts))
    mp_in = {**spec_in, "model": "all-mpnet-base-v2", "texts": mpnet.texts, "tokens": mpnet.tokens}
    plan = [
        ("raw", "raw", spec_in, corpus),
        ("raw_ort_fp32", "raw", {**spec_in, "variant": "fp32"}, corpus),
        ("raw_ort_optimized", "raw", {**spec_in, "variant": "optimized"}, corpus),
        ("raw_ov_fp32", "raw", {**spec_in, "variant": "openvino-fp32"}, corpus),
        ("raw_no_bf16", "raw", {**spec_in, "cpu_features": no_bf16}, corpus),
        ("mpnet_raw", "raw", mp_in, mpnet),
        ("mpnet_raw_ort_fp32", "raw", {**mp_in, "variant": "fp32"}, mpnet),
    ]
    if not a.skip_st:
        plan += [("st", "st", {**spec_in, "st_mode": "torch"}, corpus),
                 ("st_bf16", "st", {**spec_in, "st_mode": "torch-bf16"}, corpus),
                 ("st_openvino", "st", {**spec_in, "st_mode": "openvino"}, corpus)]
    raw = None  # the raw ceiling's result, when it could be measured
    for key, kind, spec_k, texts_k in plan:
        log(LABELS[key])
        try:
            result = run_child(kind, spec_k, workdir)
        except RuntimeError as exc:  # e.g. the export / bench extra is not installed
            log(f"{key} not measured: {str(exc)[-500:]}")
            continue
        rows[key] = engine_row(key, result, len(texts_k), sum(texts_k.tokens))
        engines[key] = {k: result.get(k) for k in ("variant", "precision", "describe", "mode")}
        if key == "raw":
            raw = result
    ingress = None
    if not a.skip_ingress:  # before the service's own Ray starts: each option runs a Ray of its own
        from loadtest import ingress as ingress_bench

        ia = ingress_bench.parse_args(
            (["--quick"] if a.quick else []) + ["--runs", str(a.runs), "--model", a.model, "--variant", a.variant,
                                                "--providers", a.providers]
            + (["--artifact-dir", a.artifact_dir] if a.artifact_dir else []))
        results, isummary, _ = ingress_bench.measure_all(ia, workdir)
        ingress = {"args": vars(ia), "results": results, "summary": isummary}
    svc_rows, stages = measure_service(a, corpus, progress)
    service_stats = svc_rows.pop("_stats", None)
    rows.update(svc_rows)

    summary = {k: summarize(v) for k, v in rows.items()}
    verdicts = []
    for key, label, base, need in TARGETS:
        if key in summary and base in summary and summary[base]["texts_per_s"]:
            value = summary[key]["texts_per_s"] / summary[base]["texts_per_s"]
            verdicts.append((label, value, "PASS" if value >= need else "MISS"))
        else:
            verdicts.append((label, None, "not measured"))
    if "bulk_http" in rows:
        grown = rows["bulk_http"]["peak_rss_bytes"] / MiB / RSS_BEFORE_MIB
        verdicts.append((f"service peak RSS <= {RSS_BEFORE_MIB} MiB (before OpenVINO) + 30%", grown,
                         "PASS" if grown <= RSS_GROWTH else "MISS"))

    argv_shown = sys.argv[1:] if argv is None else argv
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m loadtest.bench " + shlex.join(argv_shown) if argv_shown else "python -m loadtest.bench",
        "machine": machine,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpu_pressure_end": sysinfo.cpu_pressure(),
        "corpus": corpus.stats(),
        "max_batch_size": s.max_batch_size,
        "max_batch_tokens": s.max_batch_tokens,
        "raw_tokenize_s": raw["tokenize_s"] if raw else None,
        "engines": engines,
    }
    md = render(a, meta, rows, summary, verdicts, stages, ingress)
    raws = {k: (LABELS[k], summary[k]["texts_per_s"], engines[k].get("precision")) for k in RAW_OF_MODEL if k in summary}
    if raws:  # the raw engines of the bench model against this machine's GEMM peak
        md += "\n" + "\n".join(gemm_peak.peak_section(raws, adir / resolve_model(a.model).key / "model.onnx",
                                                       corpus.tokens, gemm_peak.measure_peaks(s.intra_op_threads),
                                                       s.intra_op_threads)) + "\n"
    kept = kept_section(Path(a.output))  # `make bench-cluster`'s section, measured apart
    Path(a.output).write_text(md + ("\n" + kept if kept else ""))
    out_json = a.json or ROOT / "loadtest" / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json({"meta": meta, "args": vars(a), "rows": rows, "summary": summary, "service_stats": service_stats,
                "verdicts": verdicts, "stages": stages, "ingress": ingress}, out_json)

    # The table on stdout, then the verdicts.
    start = md.index("| measurement")
    print(md[start: md.index("\nNotes:")])
    for label, value, verdict in verdicts:
        print(f"{verdict:>5}  {label}: {'-' if value is None else f'{value:.2f}x'}")
    print(f"\nwrote {a.output} and {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
