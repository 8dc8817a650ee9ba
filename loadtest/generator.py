"""The load generator: HTTP (OpenAI route; loadtest.lean_http, or httpx) or gRPC (grpc.aio), closed loop (N
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
import itertools
import json
import os
import random
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from loadtest.load_config import MAX_WARMUP_S, LoadConfig
from loadtest.recorder import Recorder
from loadtest.transports import Outcome, make_transport
from loadtest.workload import Workload


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
