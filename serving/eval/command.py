"""`embedserve eval DATA`: what each model, size, encoding and prompt choice costs in search
quality, on your own query / document pairs.

    DATA   a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) or a pairs file
           (JSONL, CSV or Parquet with query and document; optional query_id, document_id, grade)
    --demo the demo set shipped with embedserve (serving/eval/data/demo; see its README)

Embeds with the in-process engine (the artifacts of `embedserve export`) or, with --url, through a
running service; queries as input_type search_query and documents as search_document (or both
plain, with --input-types off); searches every option exactly, as a vector database would; prints
a table ranked by NDCG@10 and writes eval.json, eval.md and quality-vs-bytes.png to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serving.eval import data as eval_data
from serving.eval import report
from serving.eval.embed import LocalEmbedder, ServiceEmbedder, ServiceError
from serving.eval.runner import Options, run
from serving.eval.search import ENCODINGS

DEMO = Path(__file__).resolve().parent / "data" / "demo"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Settings fields that are flags of `embedserve eval` (the in-process engine).
ENGINE_SETTINGS = ("artifact_dir", "providers", "intra_op_threads", "cpu_features", "fidelity_min_cos",
                   "fidelity_top10_kept", "prompts", "window_overlap_tokens", "max_windows_per_text")


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="A BEIR folder or a pairs file (JSONL, CSV, Parquet).")
    p.add_argument("--demo", action="store_true", help="Evaluate the shipped demo set instead of DATA.")
    p.add_argument("--model", action="append", help=f"Model(s) to compare; repeat or comma-separate (default {DEFAULT_MODEL}).")
    p.add_argument("--url", help="A running embedserve (e.g. http://127.0.0.1:8000): embed through its HTTP API.")
    p.add_argument("--api-key", default=os.environ.get("EMBEDSERVE_EVAL_API_KEY"),
                   help="Bearer key for --url [env EMBEDSERVE_EVAL_API_KEY].")
    p.add_argument("--dimensions", default="64,128,256,full", help="Sizes to measure (Matryoshka truncation).")
    p.add_argument("--encoding", default=",".join(ENCODINGS), help="Encodings to measure.")
    p.add_argument("--variant", default=None, help="Engine variants (in-process only; default auto,fp32).")
    p.add_argument("--input-types", default="on,off",
                   help="on: queries as search_query, documents as search_document; off: both plain.")
    p.add_argument("--k", default="1,5,10,100", help="Cut-offs for recall@k and kept@k.")
    p.add_argument("--no-long-docs", action="store_true",
                   help="Skip searching the corpus embedded whole (truncate=window), which embeds it twice.")
    p.add_argument("--out", default="eval-out", help="Folder for eval.json, eval.md and the plot.")


def options_from(args) -> Options:
    dims = csv_list(args.dimensions)
    for d in dims:
        if d != "full" and not (d.isdigit() and int(d) > 0):
            raise ValueError(f"--dimensions: {d!r} is not a positive integer or 'full'")
    encodings = csv_list(args.encoding)
    bad = [e for e in encodings if e not in ENCODINGS]
    if bad or not encodings:
        raise ValueError(f"--encoding: {', '.join(bad) or 'none given'}; use any of {', '.join(ENCODINGS)}")
    types = csv_list(args.input_types)
    if not types or any(t not in ("on", "off") for t in types):
        raise ValueError(f"--input-types: {args.input_types!r}; use on, off or on,off")
    try:
        ks = tuple(sorted({int(k) for k in csv_list(args.k)}))
    except ValueError:
        raise ValueError(f"--k: {args.k!r} is not a list of integers") from None
    if not ks or ks[0] < 1:
        raise ValueError("--k: cut-offs must be integers of at least 1")
    return Options(tuple(dict.fromkeys(dims)), tuple(dict.fromkeys(encodings)), tuple(dict.fromkeys(types)), ks,
                   not args.no_long_docs)


def embedders(args):
    models = [m for value in (args.model or [DEFAULT_MODEL]) for m in csv_list(value)]
    if args.url:
        if args.variant:
            raise ValueError("--variant picks the in-process engine's variant; with --url the service's own runs")
        for m in models:
            yield ServiceEmbedder.load(args.url, m, args.api_key)
        return
    from models.specs import resolve_model
    from serving.settings import Settings

    overrides = {k: getattr(args, k) for k in ENGINE_SETTINGS if getattr(args, k, None) is not None}
    settings = Settings(**overrides)
    for m in models:
        resolve_model(m)  # an unknown name fails before any model loads
    for m in models:
        seen = set()
        for v in csv_list(args.variant or "auto,fp32"):
            emb = LocalEmbedder.load(m, v, settings)
            if emb.variant in seen:  # auto chose a variant already listed
                print(f"{emb.model_id}: variant {v} runs {emb.variant}, already measured", file=sys.stderr)
                continue
            seen.add(emb.variant)
            yield emb


def progress_bar(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="text", file=sys.stderr, leave=False, dynamic_ncols=True)

    def tick(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return tick


def command(args) -> int:
    from models.errors import ArtifactsMissing, EmbedError

    try:
        opts = options_from(args)
        if args.demo == bool(args.data):
            raise ValueError("give DATA (a BEIR folder or a pairs file) or --demo, not both or neither")
        ds = eval_data.load(DEMO if args.demo else args.data)
        result = run(ds, list(embedders(args)), opts, progress_bar)
    except (ValueError, ServiceError, ArtifactsMissing, EmbedError) as exc:
        message = getattr(exc, "message", None) or (exc.args[0] if exc.args else repr(exc))
        print(f"embedserve eval: {message}", file=sys.stderr)
        return 2
    print(report.table(result))
    print()
    print(report.slice_table(result))
    if report.notes(result):
        print()
        print(report.notes(result))
    written = report.write(result, Path(args.out))
    print(f"\nwrote {', '.join(map(str, written))}")
    if not any(p.suffix == ".png" for p in written):
        print("no plot: matplotlib is not installed (pip install 'embedserve[eval]')", file=sys.stderr)
    return 0
