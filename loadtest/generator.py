"""The load generator: HTTP (OpenAI route, httpx) or gRPC (grpc.aio), closed loop (N
concurrent clients) or open loop (fixed arrival rate), bounded in time and count, loopback
targets only.

    report = run_load(LoadConfig(transport="http", url="http://127.0.0.1:8000",
                                 concurrency=8, duration_s=10), workload)

Latency is per request, client-observed: from the moment the request is sent (closed loop)
or was due to be sent (open loop, so a slow server cannot hide its queue by slowing the
client down) to the moment the whole answer is read and checked.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import json
import os
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import numpy as np

from loadtest.workload import Workload

# Hard bounds: whatever the caller asks, a run stops within these.
MAX_DURATION_S = 1800.0
MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 1024
MAX_RATE = 20_000.0
MAX_TIMEOUT_S = 300.0
MAX_WARMUP_S = 300.0
DEFAULT_DURATION_S = 10.0

STAGES = ("tokenize", "cache", "queue", "inference", "postprocess", "total")


class NotLoopback(ValueError):
    pass


def check_loopback(host: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    host = host.strip("[]")
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        if host.lower() != "localhost":
            raise NotLoopback(f"refusing target host {host!r}: only loopback (127.0.0.0/8, ::1, localhost)") from None
        infos = socket.getaddrinfo(host, None)
        addrs = [ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos]
    bad = [str(a) for a in addrs if not a.is_loopback]
    if not addrs or bad:
        raise NotLoopback(f"refusing target host {host!r}: resolves to non-loopback {bad}")


def check_http_target(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    check_loopback(parts.hostname)


def check_grpc_target(target: str) -> None:
    host = target.split("://", 1)[-1]
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    check_loopback(host)


@dataclass
class LoadConfig:
    transport: Literal["http", "grpc"] = "http"
    url: str = "http://127.0.0.1:8000"  # HTTP base URL; requests go to {url}/v1/embeddings
    grpc_target: str = "127.0.0.1:9000"
    grpc_metadata: list[tuple[str, str]] = field(default_factory=list)  # e.g. [("application", "embedserve")]
    grpc_method: Literal["embed", "stream"] = "embed"
    model: str = "all-MiniLM-L6-v2"
    encoding_format: str = "float"
    api_key: str | None = None
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8  # closed loop: clients, each with one request in flight
    rate: float | None = None  # open loop: requests per second
    arrival: Literal["uniform", "poisson"] = "uniform"
    max_in_flight: int = 1024  # open loop: past it an arrival is dropped (error "client_backlog")
    duration_s: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    warmup_requests: int = 0
    prime_cache: bool = False  # send the workload's hot set once before measuring
    timeout_s: float = 60.0
    verify: bool = True  # parse answers: count embeddings, read usage tokens
    keep_samples: bool = False  # per-request records in the report (for profiling)
    progress: bool = True
    label: str = ""
    seed: int = 0

    def validate(self) -> "LoadConfig":
        if self.transport == "http":
            check_http_target(self.url)
        elif self.transport == "grpc":
            check_grpc_target(self.grpc_target)
        else:
            raise ValueError(f"unknown transport {self.transport!r}")
        if self.mode == "open":
            if not self.rate or self.rate <= 0:
                raise ValueError("open loop needs a positive rate")
            if self.rate > MAX_RATE:
                raise ValueError(f"rate is capped at {MAX_RATE}/s")
        elif self.mode != "closed":
            raise ValueError(f"unknown mode {self.mode!r}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be within 1..{MAX_CONCURRENCY}")
        if not 1 <= self.max_in_flight <= 100_000:
            raise ValueError("max_in_flight must be within 1..100000")
        if self.duration_s is None and self.requests is None:
            self.duration_s = DEFAULT_DURATION_S
        if self.duration_s is not None and not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration must be within (0, {MAX_DURATION_S}] s")
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise ValueError(f"requests must be within 1..{MAX_REQUESTS}")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be within (0, {MAX_TIMEOUT_S}] s")
        if not 0 <= self.warmup_s <= MAX_WARMUP_S or not 0 <= self.warmup_requests <= 10_000:
            raise ValueError(f"warm-up is bounded by {MAX_WARMUP_S} s and 10000 requests")
        return self

    @property
    def time_limit_s(self) -> float:
        """The measured window stops issuing requests after this long, whatever the count."""
        return min(self.duration_s or MAX_DURATION_S, MAX_DURATION_S)


# ---- transports --------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    error: str | None = None  # the error class: HTTP status, gRPC code name, exception kind
    detail: str = ""
    server_tokens: int | None = None
    stages: dict[str, float] | None = None  # server stage timings, ms, from headers / trailers
    cache_hits: int | None = None
    batch_size: int | None = None
    client: dict[str, float] | None = None  # client-side split, ms (HTTP: headers, body, parse)
    response_bytes: int = 0


def _stage_ms(get) -> dict[str, float]:
    out = {}
    for stage in STAGES:
        v = get(f"x-{stage}-time")
        if v is not None:
            try:
                out[stage] = float(v)
            except ValueError:
                pass
    return out


class HttpTransport:
    def __init__(self, cfg: LoadConfig):
        import httpx

        self.cfg = cfg
        self.endpoint = cfg.url.rstrip("/") + "/v1/embeddings"
        headers = {"content-type": "application/json"}
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        conns = cfg.concurrency if cfg.mode == "closed" else min(cfg.max_in_flight, 256)
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
            trust_env=False,  # never a proxy: loopback only
        )
        self.httpx = httpx

    def body(self, texts: list[str]) -> bytes:
        return json.dumps(
            {"model": self.cfg.model, "input": texts, "encoding_format": self.cfg.encoding_format},
            separators=(",", ":"),
        ).encode()

    async def send(self, texts: list[str], body: bytes | None = None) -> Outcome:
        httpx = self.httpx
        body = body if body is not None else self.body(texts)
        t0 = time.perf_counter()
        try:
            async with self.client.stream("POST", self.endpoint, content=body) as resp:
                t1 = time.perf_counter()
                raw = await resp.aread()
                t2 = time.perf_counter()
        except httpx.TimeoutException as exc:
            return Outcome(False, "timeout", repr(exc)[:200])
        except httpx.ConnectError as exc:
            return Outcome(False, "connect_error", repr(exc)[:200])
        except httpx.HTTPError as exc:
            return Outcome(False, type(exc).__name__, repr(exc)[:200])
        if resp.status_code != 200:
            return Outcome(False, str(resp.status_code), raw[:300].decode(errors="replace"))
        h = resp.headers
        out = Outcome(True, stages=_stage_ms(h.get), response_bytes=len(raw))
        if "x-cache-hits" in h:
            out.cache_hits = int(h["x-cache-hits"])
        if "x-batch-size" in h:
            out.batch_size = int(h["x-batch-size"])
        if self.cfg.verify:
            try:
                doc = json.loads(raw)
                data = doc["data"]
                out.server_tokens = int(doc["usage"]["prompt_tokens"])
            except (ValueError, KeyError, TypeError) as exc:
                return Outcome(False, "bad_response", repr(exc)[:200])
            if len(data) != len(texts) or (data and data[-1]["index"] != len(texts) - 1):
                return Outcome(False, "bad_response", f"{len(data)} embeddings for {len(texts)} texts")
            first = data[0]["embedding"] if data else []
            if isinstance(first, str):
                base64.b64decode(first)  # the client's share of work for base64 answers
        t3 = time.perf_counter()
        out.client = {"headers": (t1 - t0) * 1e3, "body": (t2 - t1) * 1e3, "parse": (t3 - t2) * 1e3}
        return out

    async def close(self) -> None:
        await self.client.aclose()


class GrpcTransport:
    def __init__(self, cfg: LoadConfig):
        import grpc
        from grpc import aio

        from serving.grpc_gen import embedding_pb2 as pb
        from serving.grpc_gen import embedding_pb2_grpc as pbg

        self.cfg = cfg
        self.grpc = grpc
        self.pb = pb
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.channel = aio.insecure_channel(cfg.grpc_target, options=opts)
        self.stub = pbg.EmbeddingServiceStub(self.channel)
        md = list(cfg.grpc_metadata)
        if cfg.api_key:
            md.append(("authorization", f"Bearer {cfg.api_key}"))
        self.metadata = tuple(md)
        formats = {
            "float": pb.ENCODING_FORMAT_FLOAT, "int8": pb.ENCODING_FORMAT_INT8, "uint8": pb.ENCODING_FORMAT_UINT8,
            "binary": pb.ENCODING_FORMAT_BINARY, "ubinary": pb.ENCODING_FORMAT_UBINARY,
        }
        if cfg.encoding_format not in formats:
            raise ValueError(f"gRPC has no encoding format {cfg.encoding_format!r} (use {', '.join(formats)})")
        self.format = formats[cfg.encoding_format]

    def body(self, texts: list[str]):
        return self.pb.EmbedRequest(model=self.cfg.model, texts=texts, encoding_format=self.format)

    async def send(self, texts: list[str], body=None) -> Outcome:
        req = body if body is not None else self.body(texts)
        t0 = time.perf_counter()
        try:
            if self.cfg.grpc_method == "stream":
                call = self.stub.EmbedStream(req, metadata=self.metadata, timeout=self.cfg.timeout_s)
                data, tokens, size = [], 0, 0
                async for resp in call:
                    data.extend(e.index for e in resp.data)
                    tokens += resp.usage.prompt_tokens
                    size += resp.ByteSize()
                trailers = await call.trailing_metadata()
            else:
                call = self.stub.Embed(req, metadata=self.metadata, timeout=self.cfg.timeout_s)
                resp = await call
                trailers = await call.trailing_metadata()
                data = [e.index for e in resp.data]
                tokens, size = resp.usage.prompt_tokens, resp.ByteSize()
        except self.grpc.aio.AioRpcError as err:
            return Outcome(False, f"grpc_{err.code().name}", (err.details() or "")[:300])
        t1 = time.perf_counter()
        md = dict(trailers or ())
        out = Outcome(True, stages=_stage_ms(md.get), server_tokens=tokens, response_bytes=size)
        if self.cfg.verify and sorted(data) != list(range(len(texts))):
            return Outcome(False, "bad_response", f"{len(data)} embeddings for {len(texts)} texts")
        out.client = {"call": (t1 - t0) * 1e3}
        return out

    async def close(self) -> None:
        await self.channel.close()


def make_transport(cfg: LoadConfig):
    return HttpTransport(cfg) if cfg.transport == "http" else GrpcTransport(cfg)


# ---- recording ---------------------------------------------------------------------------


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    """Linear-interpolated percentiles (ordered by construction); None when empty."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(arr, qs))}


@dataclass
class Recorder:
    keep_samples: bool = False
    sent: int = 0
    ok: int = 0
    texts: int = 0
    tokens: int = 0
    server_tokens: int = 0
    server_tokens_seen: int = 0  # ok answers that reported usage
    cache_hits: int = 0
    response_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    stage_sums: dict[str, float] = field(default_factory=dict)
    stage_counts: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    first_send: float | None = None
    last_done: float | None = None
    in_flight: int = 0
    late_sends: int = 0  # open loop: sent more than 10 ms after their due time

    def record(self, n_texts: int, n_tokens: int, latency_s: float, out: Outcome, done: float) -> None:
        self.sent += 1
        self.last_done = done
        if out.ok:
            self.ok += 1
            self.texts += n_texts
            self.tokens += n_tokens
            self.latencies_ms.append(latency_s * 1e3)
            self.response_bytes += out.response_bytes
            if out.server_tokens is not None:
                self.server_tokens += out.server_tokens
                self.server_tokens_seen += 1
            if out.cache_hits is not None:
                self.cache_hits += out.cache_hits
            for src in (out.stages or {}), {f"client_{k}": v for k, v in (out.client or {}).items()}:
                for k, v in src.items():
                    self.stage_sums[k] = self.stage_sums.get(k, 0.0) + v
                    self.stage_counts[k] = self.stage_counts.get(k, 0) + 1
            if self.keep_samples:
                self.samples.append({
                    "texts": n_texts, "tokens": n_tokens, "latency_ms": latency_s * 1e3,
                    "stages": out.stages or {}, "client": out.client or {},
                    "cache_hits": out.cache_hits, "batch_size": out.batch_size, "bytes": out.response_bytes,
                })
        else:
            self.errors[out.error or "unknown"] = self.errors.get(out.error or "unknown", 0) + 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{out.error}: {out.detail}")

    def summary(self, window_s: float) -> dict:
        w = max(window_s, 1e-9)
        lat = self.latencies_ms
        stages = {k: self.stage_sums[k] / self.stage_counts[k] for k in sorted(self.stage_sums)}
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors_total": self.sent - self.ok,
            "errors": dict(sorted(self.errors.items())),
            "error_samples": self.error_samples,
            "texts": self.texts,
            "tokens": self.tokens,
            "server_tokens": self.server_tokens if self.server_tokens_seen == self.ok else None,
            "cache_hits": self.cache_hits,
            "window_s": window_s,
            "requests_per_s": self.sent / w,
            "ok_requests_per_s": self.ok / w,
            "texts_per_s": self.texts / w,
            "tokens_per_s": self.tokens / w,
            "latency_ms": {
                **percentiles(lat),
                "mean": float(np.mean(lat)) if lat else None,
                "max": float(np.max(lat)) if lat else None,
            },
            "stages_mean_ms": stages,
            "response_bytes_mean": self.response_bytes / self.ok if self.ok else None,
            "late_sends": self.late_sends,
        }


# ---- the loops ---------------------------------------------------------------------------


async def _one(transport, workload: Workload, i: int, rec: Recorder, due: float | None = None) -> None:
    texts, tokens = workload.request(i)
    body = transport.body(texts)
    start = time.perf_counter()
    if rec.first_send is None:
        rec.first_send = due if due is not None else start
    if due is not None and start - due > 0.010:
        rec.late_sends += 1
    rec.in_flight += 1
    try:
        out = await transport.send(texts, body)
    except Exception as exc:  # never let one request kill the run
        out = Outcome(False, type(exc).__name__, repr(exc)[:200])
    finally:
        rec.in_flight -= 1
    done = time.perf_counter()
    rec.record(len(texts), tokens, done - (due if due is not None else start), out, done)


async def _closed_loop(cfg, transport, workload, rec, deadline, limit, first_index) -> None:
    counter = itertools.count(first_index)
    stop = first_index + limit if limit is not None else None

    async def client():
        while time.perf_counter() < deadline:
            i = next(counter)
            if stop is not None and i >= stop:
                return
            await _one(transport, workload, i, rec)

    await asyncio.gather(*(client() for _ in range(cfg.concurrency)))


async def _open_loop(cfg, transport, workload, rec, deadline, limit, first_index) -> None:
    rng = random.Random(cfg.seed)
    interval = 1.0 / cfg.rate
    tasks: set[asyncio.Task] = set()
    due = time.perf_counter()
    n = 0
    while (limit is None or n < limit) and due < deadline:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i = first_index + n
        if len(tasks) >= cfg.max_in_flight:
            rec.record(0, 0, 0.0, Outcome(False, "client_backlog", f"{len(tasks)} requests in flight"),
                       time.perf_counter())
        else:
            task = asyncio.create_task(_one(transport, workload, i, rec, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
        due += rng.expovariate(cfg.rate) if cfg.arrival == "poisson" else interval
    if tasks:
        await asyncio.gather(*tasks)


async def _ticker(bar, rec: Recorder, start: float, by_count: bool) -> None:
    while True:
        await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - start
        bar.n = rec.sent if by_count else min(round(elapsed, 1), bar.total or elapsed)
        bar.set_postfix(ok=rec.ok, err=rec.sent - rec.ok, rps=f"{rec.sent / max(elapsed, 1e-9):.1f}",
                        tps=f"{rec.texts / max(elapsed, 1e-9):.0f}", refresh=False)
        bar.refresh()


async def _phase(cfg, transport, workload, rec, seconds, limit, first_index, desc) -> float:
    from tqdm.auto import tqdm

    start = time.perf_counter()
    deadline = start + seconds
    by_count = limit is not None and (cfg.duration_s is None or desc == "warm-up")
    bar = tqdm(total=limit if by_count else round(seconds, 1), unit="req" if by_count else "s",
               desc=f"{cfg.label or cfg.transport} {desc}".strip(), disable=not cfg.progress, leave=False,
               dynamic_ncols=True)
    tick = asyncio.create_task(_ticker(bar, rec, start, by_count))
    try:
        loop = _closed_loop if cfg.mode == "closed" else _open_loop
        await loop(cfg, transport, workload, rec, deadline, limit, first_index)
    finally:
        tick.cancel()
        bar.close()
    return start


async def prime(transport, texts: list[str], per_request: int = 64, concurrency: int = 2) -> int:
    """Send `texts` once (e.g. a cache's hot set); returns how many requests failed."""
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def send(chunk):
        nonlocal failed
        async with gate:
            out = await transport.send(chunk)
            failed += not out.ok

    await asyncio.gather(*(send(c) for c in chunks))
    return failed


WARMUP_INDEX = 1 << 40  # warm-up requests never reuse the measured requests' unique texts


async def run_load_async(cfg: LoadConfig, workload: Workload, output: str | Path | None = None) -> dict:
    cfg.validate()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    transport = make_transport(cfg)
    try:
        primed = None
        if cfg.prime_cache and hasattr(workload, "hot_texts"):
            hot = workload.hot_texts()
            primed = {"texts": len(hot), "failed_requests": await prime(transport, hot)}
        warm = None
        if cfg.warmup_s > 0 or cfg.warmup_requests > 0:
            wrec = Recorder()
            wcfg = LoadConfig(**{**asdict(cfg), "duration_s": cfg.warmup_s or None,
                                 "requests": cfg.warmup_requests or None})
            wstart = await _phase(wcfg, transport, workload, wrec, cfg.warmup_s or MAX_WARMUP_S,
                                  cfg.warmup_requests or None, WARMUP_INDEX, "warm-up")
            warm = {"sent": wrec.sent, "ok": wrec.ok, "errors": wrec.errors,
                    "seconds": (wrec.last_done or wstart) - wstart}
        rec = Recorder(keep_samples=cfg.keep_samples)
        start = await _phase(cfg, transport, workload, rec, cfg.time_limit_s, cfg.requests, 0, "")
    finally:
        await transport.close()
    begin = rec.first_send if rec.first_send is not None else start
    window = (rec.last_done or begin) - begin
    report = {
        "label": cfg.label,
        "started_at": started_at,
        "config": {**asdict(cfg), "grpc_metadata": [list(x) for x in cfg.grpc_metadata],
                   "api_key": "***" if cfg.api_key else None},
        "workload": workload.describe(),
        "prime": primed,
        "warmup": warm,
        "machine": {"nproc": os.cpu_count(), "loadavg": list(os.getloadavg())},
        **rec.summary(window),
    }
    if cfg.keep_samples:
        report["samples"] = rec.samples
    if output is not None:
        write_json(report, output)
    return report


def run_load(cfg: LoadConfig, workload: Workload, output: str | Path | None = None) -> dict:
    """Blocking wrapper around `run_load_async` (its own event loop)."""
    return asyncio.run(run_load_async(cfg, workload, output))


def write_json(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def format_report(r: dict) -> str:
    lat = r["latency_ms"]
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    lines = [
        f"{r['label'] or r['config']['transport']}: {r['sent']} requests in {r['window_s']:.2f} s "
        f"({r['ok']} ok, {r['errors_total']} errors: {errs})",
        f"  throughput  {r['requests_per_s']:.1f} req/s   {r['texts_per_s']:.1f} texts/s   "
        f"{r['tokens_per_s']:.0f} tokens/s",
        f"  latency ms  p50 {f(lat['p50'])}   p95 {f(lat['p95'])}   p99 {f(lat['p99'])}   max {f(lat['max'])}",
    ]
    if r["stages_mean_ms"]:
        lines.append("  stages ms (mean)  " + "   ".join(f"{k} {v:.2f}" for k, v in r["stages_mean_ms"].items()))
    if r.get("late_sends"):
        lines.append(f"  {r['late_sends']} sends ran >10 ms behind schedule (client saturated?)")
    return "\n".join(lines)
