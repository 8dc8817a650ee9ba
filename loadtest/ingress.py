"""Single texts through each ingress Ray Serve offers, side by side on one machine: Ray Serve's
proxy actors, direct ingress (the replica serves HTTP and gRPC itself) and HAProxy in front of
direct-ingress replicas (`EMBEDSERVE_INGRESS`), against the raw engine's batch-1 latency.

Per option, in a fresh process with its own local Ray (the option is fixed when Ray starts):
  idle HTTP / gRPC   one text a request, one request at a time: client-observed p50 (what a
                     search query pays on a quiet service)
  c32 HTTP / gRPC    one text a request, 32 clients: texts/s (each a fresh text, cache off)
  cache hit          one text a request, 32 clients, every text already cached: requests/s
                     (the path with no model in it: plumbing only)
and the CPU every process of that Ray used per request in the c32 HTTP run (the load generator
not included).

    python -m loadtest.ingress                    # every option, 3 runs each, medians
    python -m loadtest.ingress --quick            # smoke test: few texts, 1 run
    python -m loadtest.ingress --options direct,haproxy --runs 5
    python -m loadtest.ingress --child direct --spec spec.json   (one option; prints one JSON line)

`make bench` runs it and puts its table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from loadtest.load_config import add_http_client_flag

OPTIONS = ("proxy", "direct", "haproxy")
ROOT = Path(__file__).resolve().parents[1]

# (key, label, unit)
ROWS = [
    ("raw_batch1_p50", "raw engine, one text (tokenize + run + pool), p50", "ms"),
    ("idle_http_p50", "idle, one text over HTTP, p50", "ms"),
    ("idle_grpc_p50", "idle, one text over gRPC, p50", "ms"),
    ("c32_http", "single texts, 32 clients, HTTP", "texts/s"),
    ("c32_grpc", "single texts, 32 clients, gRPC", "texts/s"),
    ("hit_c32_http", "cache hits, single texts, 32 clients, HTTP", "requests/s"),
    ("cpu_ms_per_request", "CPU of the whole local Ray per request (c32 HTTP)", "ms"),
    ("hit_cpu_ms_per_request", "CPU of the whole local Ray per cache-hit request", "ms"),
]


def log(msg: str) -> None:
    print(f"[ingress {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ray_cpu_s() -> float:
    """CPU seconds of every process this one started (the local Ray and its workers)."""
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def measure_option(spec: dict) -> dict:
    """One ingress option in this process: its own local Ray, two apps (cache off / on)."""
    from loadtest.generator import run_load
    from loadtest.load_config import LoadConfig
    from loadtest.service import LocalService
    from loadtest.workload import Corpus, FixedWorkload

    corpus = Corpus.load(spec["model"], spec["artifact_dir"]).subset(spec["texts"])
    single = FixedWorkload.chunked(corpus.texts, corpus.tokens, 1, "corpus, 1 a request")
    svc = LocalService.start(ingress=spec["ingress"])
    try:
        common = dict(models=[spec["model"]], artifact_dir=spec["artifact_dir"], variant=spec["variant"],
                      providers=spec["providers"].split(","), encoder_num_cpus=1)
        nocache = svc.deploy("ingress-nocache", "/nocache", cache="off", **common)
        cached = svc.deploy("ingress-cached", "/cached", cache="memory", **common)
        log(f"{spec['ingress']}: apps at {nocache.http_url} (gRPC {nocache.grpc_target}), {cached.http_url}")

        def cfg(app, transport, conc, label, requests, **kw):
            return LoadConfig(transport=transport, url=app.http_url, grpc_target=app.grpc_target,
                              grpc_metadata=app.grpc_metadata, model=spec["model"], concurrency=conc,
                              requests=requests, timeout_s=120, progress=False, label=label,
                              http_client=spec["http_client"], **kw)

        n, idle_n = len(single), min(spec["idle_requests"], len(single))
        for transport in ("http", "grpc"):  # warm-up: first runs of each shape, connections
            run_load(cfg(nocache, transport, 4, "warm-up", min(64, n)), single)
        run_load(cfg(cached, "http", 8, "prime", n), single)  # every text now cached
        runs = []
        for _ in range(spec["runs"]):
            r = {}
            for transport in ("http", "grpc"):
                rep = run_load(cfg(nocache, transport, 1, f"idle {transport}", idle_n), single)
                r[f"idle_{transport}_p50"] = rep["latency_ms"]["p50"]
                r[f"idle_{transport}_errors"] = rep["errors_total"]
            cpu0 = _ray_cpu_s()
            rep = run_load(cfg(nocache, "http", 32, "c32 http", n), single)
            r["cpu_ms_per_request"] = (_ray_cpu_s() - cpu0) * 1e3 / max(rep["sent"], 1)
            r["c32_http"], r["c32_http_p50"], r["c32_http_errors"] = rep["texts_per_s"], rep["latency_ms"]["p50"], rep["errors_total"]
            rep = run_load(cfg(nocache, "grpc", 32, "c32 grpc", n), single)
            r["c32_grpc"], r["c32_grpc_p50"], r["c32_grpc_errors"] = rep["texts_per_s"], rep["latency_ms"]["p50"], rep["errors_total"]
            cpu0 = _ray_cpu_s()
            rep = run_load(cfg(cached, "http", 32, "cache hits", n * spec["hit_passes"]), single)
            r["hit_cpu_ms_per_request"] = (_ray_cpu_s() - cpu0) * 1e3 / max(rep["sent"], 1)
            r["hit_c32_http"], r["hit_c32_http_errors"] = rep["requests_per_s"], rep["errors_total"]
            r["hit_ratio"] = rep["cache_hits"] / max(rep["texts"], 1)
            runs.append(r)
            log(f"{spec['ingress']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items() if not k.endswith("errors")))
        return {"ingress": spec["ingress"], "http_url": nocache.http_url, "grpc_target": nocache.grpc_target,
                "runs": runs}
    finally:
        svc.stop()


def run_option_child(option: str, spec: dict, workdir: Path, timeout_s: float = 3600) -> dict:
    """One option in a fresh interpreter (a process joins one Ray, and the option is Ray's env)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"ingress-{option}.json"
    path.write_text(json.dumps({**spec, "ingress": option}))
    proc = subprocess.run([sys.executable, "-m", "loadtest.ingress", "--child", option, "--spec", str(path)],
                          stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout_s, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"ingress option {option} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_batch1(spec: dict, workdir: Path) -> dict:
    """The raw engine's one-text latency, in its own process (loadtest.engines raw1)."""
    from loadtest.engines import run_child

    return run_child("raw1", {k: spec[k] for k in ("model", "artifact_dir", "variant", "providers", "intra_op_threads",
                                                  "max_batch_size", "max_batch_tokens", "streams", "runs")}
                     | {"providers": spec["providers"].split(","), "texts": spec["raw_texts"]}, workdir)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results: dict[str, dict], raw: dict | None) -> dict[str, dict]:
    """{option: {row key: median over runs}}, plus the raw engine's batch-1 p50."""
    out = {}
    for option, res in results.items():
        keys = {k for r in res["runs"] for k in r}
        out[option] = {k: median([r.get(k) for r in res["runs"]]) for k in sorted(keys)}
        out[option]["errors"] = sum(v for r in res["runs"] for k, v in r.items() if k.endswith("errors"))
    if raw is not None:
        out["raw"] = {"raw_batch1_p50": median([r["p50_ms"] for r in raw["runs"]])}
    return out


def markdown(summary: dict[str, dict], runs: int, raw_ceiling: float | None = None) -> str:
    """The options side by side; the targets beneath (ratios to the raw engine)."""
    options = [o for o in OPTIONS if o in summary]
    f = lambda v, d=1: "-" if v is None else f"{v:,.{d}f}"  # noqa: E731
    lines = [
        "| measurement (median of %d run(s)) | unit | " % runs + " | ".join(options) + " |",
        "|---|---|" + "---:|" * len(options),
    ]
    raw1 = (summary.get("raw") or {}).get("raw_batch1_p50")
    for key, label, unit in ROWS:
        if key == "raw_batch1_p50":
            if raw1 is not None:
                lines.append(f"| {label} | {unit} | " + " | ".join(f(raw1, 2) for _ in options) + " |")
            continue
        lines.append(f"| {label} | {unit} | " + " | ".join(f(summary[o].get(key), 2 if unit == 'ms' else 1) for o in options) + " |")
    lines.append("| errors (all runs) | | " + " | ".join(str(summary[o].get("errors", 0)) for o in options) + " |")
    if raw1 is not None:
        lines.append("| idle HTTP p50 - raw batch-1 p50 (target <= 3 ms) | ms | "
                     + " | ".join(f(summary[o]["idle_http_p50"] - raw1, 2) for o in options) + " |")
        lines.append("| idle gRPC p50 - raw batch-1 p50 (target <= 3 ms) | ms | "
                     + " | ".join(f(summary[o]["idle_grpc_p50"] - raw1, 2) for o in options) + " |")
    if raw_ceiling:
        for key, name in (("c32_http", "HTTP"), ("c32_grpc", "gRPC")):
            lines.append(f"| single texts c32 {name} / raw ceiling ({raw_ceiling:,.1f} texts/s; target >= 0.70) | x | "
                         + " | ".join(f(summary[o][key] / raw_ceiling, 2) for o in options) + " |")
    if "proxy" in summary:
        base = summary["proxy"]["hit_c32_http"]
        lines.append("| cache-hit requests/s / proxy's (target >= 2) | x | "
                     + " | ".join(f(summary[o]["hit_c32_http"] / base, 2) for o in options) + " |")
    return "\n".join(lines)


def measure_all(a, workdir: Path) -> tuple[dict, dict, dict | None]:
    """Every option asked for, one child process each; then the raw batch-1 latency."""
    from serving.settings import Settings
    from loadtest.workload import Corpus, artifact_dir

    s = Settings()
    adir = str(artifact_dir(a.artifact_dir))
    corpus = Corpus.load(a.model, adir).subset(a.texts)
    spec = dict(model=a.model, artifact_dir=adir, variant=a.variant, providers=a.providers, texts=a.texts,
                idle_requests=a.idle_requests, hit_passes=a.hit_passes, runs=a.runs, http_client=a.http_client,
                intra_op_threads=s.intra_op_threads, max_batch_size=s.max_batch_size,
                max_batch_tokens=s.max_batch_tokens, streams=s.openvino_streams,
                raw_texts=corpus.texts[: a.idle_requests])
    results = {}
    for option in a.options:
        log(f"option {option}: starting its own Ray")
        try:
            results[option] = run_option_child(option, spec, workdir)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"option {option} not measured: {exc}")
    raw = None
    try:
        raw = raw_batch1(spec, workdir)
    except RuntimeError as exc:
        log(f"raw batch-1 latency not measured: {str(exc)[-500:]}")
    return results, summarize(results, raw), raw


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m loadtest.ingress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: --texts 48 --idle-requests 24 --runs 1")
    p.add_argument("--options", default=",".join(OPTIONS), help="comma-separated: proxy, direct, haproxy")
    p.add_argument("--runs", type=int, default=None, help="runs per option; medians are reported (default 3)")
    p.add_argument("--texts", type=int, default=None, help="texts per c32 run (default 1000)")
    p.add_argument("--idle-requests", type=int, default=None, help="requests per idle run (default 200)")
    p.add_argument("--hit-passes", type=int, default=3, help="passes over the texts in a cache-hit run")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto")
    p.add_argument("--providers", default="cpu")
    p.add_argument("--artifact-dir", default=None)
    add_http_client_flag(p)
    p.add_argument("--json", default=None, help="default: loadtest/results/ingress-<time>.json")
    p.add_argument("--child", choices=OPTIONS, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.options = [o.strip() for o in a.options.split(",") if o.strip()]
    if bad := [o for o in a.options if o not in OPTIONS]:
        p.error(f"unknown option(s) {bad}: choose from {', '.join(OPTIONS)}")
    a.runs = a.runs or (1 if a.quick else 3)
    a.texts = a.texts or (48 if a.quick else 1000)
    a.idle_requests = a.idle_requests or (24 if a.quick else 200)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        print(json.dumps(measure_option(json.loads(Path(a.spec).read_text()))))
        return 0
    from loadtest.generator import write_json

    results, summary, raw = measure_all(a, ROOT / "loadtest" / "results" / "tmp")
    print(markdown(summary, a.runs))
    out = a.json or ROOT / "loadtest" / "results" / f"ingress-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json({"args": vars(a), "results": results, "raw": raw, "summary": summary}, out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
