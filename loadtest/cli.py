"""`python -m loadtest`: drive a running embedserve (loopback only) and report.

Examples:
  python -m loadtest --duration 10 --concurrency 32                      # single texts, HTTP
  python -m loadtest --texts-per-request 64 --concurrency 4 --requests 50 --output bulk.json
  python -m loadtest --transport grpc --grpc-app embedserve --mode open --rate 40 --duration 20
  python -m loadtest --repeat-share 0.8 --hot-set 200 --prime-cache --length-mix short=0.7,long=0.3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from loadtest.generator import run_load
from loadtest.load_config import (
    DEFAULT_DURATION_S, MAX_DURATION_S, MAX_REQUESTS, LoadConfig, NotLoopback, add_http_client_flag,
)
from loadtest.recorder import format_report
from loadtest.workload import Corpus, CorpusWorkload, CORPUS_PATH
from models.errors import EmbedError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("target (loopback only)")
    t.add_argument("--transport", choices=["http", "grpc"], default="http")
    t.add_argument("--url", default="http://127.0.0.1:8000", help="HTTP base URL (POST {url}/v1/embeddings)")
    t.add_argument("--grpc-target", default="127.0.0.1:9000")
    t.add_argument("--grpc-app", default="embedserve",
                   help="Ray Serve application name, sent as gRPC metadata 'application' ('' sends none)")
    t.add_argument("--grpc-method", choices=["embed", "stream"], default="embed")
    add_http_client_flag(t)
    t.add_argument("--model", default="all-MiniLM-L6-v2")
    t.add_argument("--encoding-format", default="float", help="float, base64 (HTTP), int8, uint8, binary, ubinary")
    t.add_argument("--api-key", default=None)
    t.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s")

    l = p.add_argument_group("load")
    l.add_argument("--mode", choices=["closed", "open"], default="closed",
                   help="closed: N clients, one request each in flight; open: fixed arrival rate")
    l.add_argument("--concurrency", "-c", type=int, default=8, help="closed loop: concurrent clients")
    l.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    l.add_argument("--arrival", choices=["uniform", "poisson"], default="uniform")
    l.add_argument("--max-in-flight", type=int, default=1024, help="open loop: drop arrivals past this")
    l.add_argument("--duration", type=float, default=None,
                   help=f"seconds to measure (default {DEFAULT_DURATION_S:g} if --requests is not given; max {MAX_DURATION_S:g})")
    l.add_argument("--requests", "-n", type=int, default=None, help=f"requests to send (max {MAX_REQUESTS})")
    l.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before measuring (not counted)")
    l.add_argument("--warmup-requests", type=int, default=0, help="or a number of warm-up requests")

    w = p.add_argument_group("workload")
    w.add_argument("--corpus", default=str(CORPUS_PATH), help="JSON Lines of strings")
    w.add_argument("--texts-per-request", "-b", type=int, default=1)
    w.add_argument("--length-mix", default="corpus",
                   help="corpus, or weights over short (1-32 tokens), medium (33-96), long (97+) or lo-hi ranges, "
                        "e.g. short=0.7,long=0.3")
    w.add_argument("--repeat-share", type=float, default=0.0,
                   help="share of texts repeated from the hot set (cache hits once seen); the rest are unique")
    w.add_argument("--hot-set", type=int, default=None, help="texts in the hot set (default: the whole mixed corpus)")
    w.add_argument("--prime-cache", action="store_true", help="send the hot set once before measuring")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--artifact-dir", default=None, help="for the tokenizer [env EMBEDSERVE_ARTIFACT_DIR]")

    o = p.add_argument_group("output")
    o.add_argument("--output", "-o", default=None, help="write the JSON report here")
    o.add_argument("--samples", action="store_true", help="keep per-request records in the JSON")
    o.add_argument("--no-verify", action="store_true", help="do not parse answers (less client CPU)")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--label", default="")
    return p


def config_from_args(a: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        transport=a.transport, url=a.url, grpc_target=a.grpc_target,
        grpc_metadata=[("application", a.grpc_app)] if a.grpc_app else [],
        grpc_method=a.grpc_method, http_client=a.http_client, model=a.model, encoding_format=a.encoding_format,
        api_key=a.api_key,
        mode=a.mode, concurrency=a.concurrency, rate=a.rate, arrival=a.arrival, max_in_flight=a.max_in_flight,
        duration_s=a.duration, requests=a.requests, warmup_s=a.warmup, warmup_requests=a.warmup_requests,
        prime_cache=a.prime_cache, timeout_s=a.timeout, verify=not a.no_verify, keep_samples=a.samples,
        progress=not a.no_progress, label=a.label, seed=a.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args).validate()  # refuses non-loopback targets before any work
    except (ValueError, NotLoopback) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:  # the model's tokenizer counts each text's tokens
        corpus = Corpus.load(args.model, args.artifact_dir, args.corpus)
    except (EmbedError, OSError, ValueError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    workload = CorpusWorkload(corpus, args.texts_per_request, args.length_mix, args.repeat_share,
                              args.hot_set, seed=args.seed)
    print(f"corpus: {len(corpus)} texts, {corpus.stats()['tokens_mean']} tokens mean "
          f"(tokenized in {time.perf_counter() - t0:.2f} s)", file=sys.stderr)
    report = run_load(cfg, workload, args.output)
    print(format_report(report))
    if args.output:
        print(f"report: {Path(args.output).resolve()}")
    return 0 if report["ok"] > 0 and report["errors_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
