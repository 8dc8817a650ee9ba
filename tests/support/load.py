"""Bounded load for the reliability tests: a few async HTTP workers for a fixed time, every
answer recorded (status, latency, Retry-After, body), nothing left running afterwards.

Workers back off a little after a 429 or 503 (as a polite client would), so a refused
request never turns into a busy loop on the shared test machine."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

STOP = object()  # what an on_tick returns to end the load early

# (path, json body, tag the check gets back) for the n-th request of a worker
MakeRequest = Callable[[int, int], tuple[str, Any, Any]]


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer (timeout, connection error)
    latency_s: float
    tag: Any = None
    retry_after: str | None = None
    body: Any = None
    error: str | None = None  # transport error, or what a check found wrong
    sent_at: float = 0.0  # seconds since the load started


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    duration_s: float = 0.0

    def statuses(self) -> Counter:
        return Counter(a.status for a in self.answers)

    def failed(self) -> list[Answer]:
        """Transport errors, 5xx, and answers a check rejected."""
        return [a for a in self.answers if a.status is None or a.status >= 500 or a.error]

    def max_latency(self) -> float:
        return max((a.latency_s for a in self.answers), default=0.0)

    def summary(self) -> str:
        codes = dict(sorted(self.statuses().items(), key=lambda kv: str(kv[0])))
        return f"{len(self.answers)} requests in {self.duration_s:.1f}s, statuses {codes}, max latency {self.max_latency():.2f}s"


async def drive(
    base_url: str,
    make: MakeRequest,
    *,
    workers: int,
    duration_s: float,
    timeout_s: float = 30.0,
    headers: dict | None = None,
    backoff_s: float = 0.05,
    keep_body: Callable[[Answer], bool] | None = None,
    on_tick: Callable[[float], Any] | None = None,
) -> Load:
    """`workers` closed-loop clients for `duration_s`; requests already sent finish (bounded
    by `timeout_s`). `on_tick(elapsed)` runs in a thread every 0.25 s (fault injection); when
    it returns `STOP`, the clients stop sending sooner."""
    load = Load()
    start = time.monotonic()
    stop = start + duration_s
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        n = 0
        while time.monotonic() < stop and not stopped:
            path, body, tag = make(w, n)
            n += 1
            t0 = time.monotonic()
            ans = Answer(None, 0.0, tag, sent_at=t0 - start)
            try:
                r = await client.post(base_url + path, json=body)
                ans.status = r.status_code
                ans.retry_after = r.headers.get("retry-after")
                try:
                    ans.body = r.json()
                except ValueError:
                    ans.body = {"raw": r.text[:500]}
            except httpx.HTTPError as exc:
                ans.error = f"{type(exc).__name__}: {exc}"
            ans.latency_s = time.monotonic() - t0
            if keep_body is not None and not keep_body(ans):
                ans.body = None
            load.answers.append(ans)
            if ans.status in (429, 503) or ans.status is None:
                await asyncio.sleep(backoff_s)

    stopped = False

    async def ticker() -> None:
        nonlocal stopped
        while time.monotonic() < stop and not stopped:
            if await asyncio.to_thread(on_tick, time.monotonic() - start) is STOP:
                stopped = True
            await asyncio.sleep(0.25)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers or {}) as client:
        tasks = [worker(w, client) for w in range(workers)]
        if on_tick is not None:
            tasks.append(ticker())
        await asyncio.gather(*tasks)
    load.duration_s = time.monotonic() - start
    return load


def run(base_url: str, make: MakeRequest, **kw) -> Load:
    return asyncio.run(drive(base_url, make, **kw))


def words(i: int, n: int = 40) -> str:
    """A distinct sentence of about `n` words for request `i` (no two alike, so no cache or
    in-request dedup can skip the encoder)."""
    vocab = ("river stone lamp orbit cedar signal harbor quiet ember violet copper tundra "
             "meadow prism lantern falcon summit glacier canyon willow").split()
    return f"text {i}: " + " ".join(vocab[(i * 7 + k * 3) % len(vocab)] for k in range(n))


def rss_bytes(pid: int) -> int:
    """Resident set size of a local process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def replica_pids(app_name: str) -> dict[str, int]:
    """{deployment name: pid} of the live replica processes of one Serve application on this
    machine, found by the process title Ray gives them (ray::ServeReplica:<app>:<deployment>)."""
    import psutil

    prefix = f"ray::ServeReplica:{app_name}:"
    out = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith(prefix):
            # the title gains ".<method>" while the replica runs one (e.g. Ingress.handle_request)
            out[re.sub(r"\.[A-Za-z_]+$", "", cmd[len(prefix):].split()[0])] = proc.info["pid"]
    return out


def replica_actor_names(app_name: str, deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))
