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

Then rerank and sparse against their raw engines (python -m loadtest.bench_tasks, its own process
and Ray; --skip-tasks leaves it out and keeps the section of the last run).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from loadtest import bench_tasks, gemm_peak, sysinfo
from loadtest.load_config import add_http_client_flag
from loadtest.bench_report import (
    LABELS,
    MPNET_TEXTS,
    ROOT,
    MiB,
    engine_row,
    render,
    summarize,
)
from loadtest.bench_service import log, measure_service
from loadtest.cluster_bench import kept_section
from loadtest.engines import run_child
from loadtest.generator import write_json
from loadtest.workload import Corpus, artifact_dir, run_parser, settle_runs
from models.specs import resolve_model

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


def parse_args(argv):
    p = run_parser("python -m loadtest.bench", __doc__, "measurement")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto", help="the service's variant (default: auto, as it serves)")
    p.add_argument("--providers", default="cpu", help="ONNX Runtime providers, for the raw run and the service alike")
    p.add_argument("--bulk-size", type=int, default=64, help="texts per bulk request")
    p.add_argument("--bulk-concurrency", type=int, default=4, help="bulk requests in flight")
    p.add_argument("--single-concurrency", type=int, default=32)
    add_http_client_flag(p)
    p.add_argument("--hit-passes", type=int, default=5, help="passes over the texts in a cache-hit run")
    p.add_argument("--artifact-dir", default=None)
    p.add_argument("--skip-st", action="store_true", help="leave out sentence-transformers")
    p.add_argument("--skip-ingress", action="store_true",
                   help="leave out the ingress options side by side (python -m loadtest.ingress)")
    p.add_argument("--skip-tasks", action="store_true",
                   help="leave out rerank and sparse against their raw engines (python -m loadtest.bench_tasks)")
    p.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--json", default=None, help="default: loadtest/results/bench-<time>.json")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return settle_runs(p, a)


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
                   max_batch_tokens=s.max_batch_tokens, streams=s.openvino_streams, pack=s.pack_texts, texts=corpus.texts,
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
                                                "--providers", a.providers, "--http-client", a.http_client]
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
    # `make bench-cluster`'s section, measured apart, and the rerank / sparse one (measured again below)
    kept = kept_section(Path(a.output)) + kept_section(Path(a.output), bench_tasks.BEGIN, bench_tasks.END)
    Path(a.output).write_text(md + ("\n" + kept if kept else ""))
    out_json = a.json or ROOT / "loadtest" / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json({"meta": meta, "args": vars(a), "rows": rows, "summary": summary, "service_stats": service_stats,
                "verdicts": verdicts, "stages": stages, "ingress": ingress}, out_json)

    # The table on stdout, then the verdicts.
    start = md.index("| measurement")
    print(md[start: md.index("\nNotes:")])
    for label, value, verdict in verdicts:
        print(f"{verdict:>5}  {label}: {'-' if value is None else f'{value:.2f}x'}")
    if not a.skip_tasks:  # in a process of its own: it starts a Ray of its own
        log("rerank and sparse against their raw engines (python -m loadtest.bench_tasks)")
        tasks = subprocess.run([sys.executable, "-m", "loadtest.bench_tasks", "--runs", str(a.runs), "--variant",
                                a.variant, "--providers", a.providers, "--output", a.output]
                               + (["--quick"] if a.quick else []) + (["--texts", str(a.texts)] if a.texts else []),
                               cwd=ROOT, check=False)
        if tasks.returncode != 0:
            log(f"rerank / sparse not measured (loadtest.bench_tasks exited {tasks.returncode})")
    print(f"\nwrote {a.output} and {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
