"""Bulk rerank and sparse requests to the service over HTTP, closed loop (N clients, each with one
request in flight), every answer checked: Cohere's `POST /v2/rerank` (one query, a request's
documents: one result a document) and `POST /v1/embeddings/sparse` (one vector a text). Counted
by the load generator's Recorder: items (pairs or texts), tokens, client-observed latency,
errors by class."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from loadtest.lean_http import LeanHttpClient
from loadtest.load_config import check_http_target
from loadtest.recorder import Recorder
from loadtest.transports import Outcome

ROUTES = {"rerank": "/v2/rerank", "sparse": "/v1/embeddings/sparse"}


@dataclass(frozen=True)
class TaskRequest:
    body: bytes
    items: int  # pairs (rerank) or texts (sparse) it carries
    tokens: int  # tokens the model reads for them (the engine's own tokenizer)


def rerank_request(model: str, query: str, documents: list[str], tokens: int) -> TaskRequest:
    return TaskRequest(orjson.dumps({"model": model, "query": query, "documents": documents}), len(documents), tokens)


def sparse_request(model: str, texts: list[str], tokens: int) -> TaskRequest:
    return TaskRequest(orjson.dumps({"model": model, "input": texts}), len(texts), tokens)


def read_answer(kind: str, raw: bytes, items: int) -> Outcome:
    """The answer has one result an item (and the tokens the server counted)."""
    try:
        doc = orjson.loads(raw)
        if kind == "rerank":
            got, tokens = len(doc["results"]), doc["meta"]["billed_units"]["input_tokens"]
        else:
            got, tokens = len(doc["data"]), doc["usage"]["prompt_tokens"]
            if any(len(d["indices"]) != len(d["values"]) for d in doc["data"]):
                return Outcome(False, "bad_response", "indices and values differ in length")
    except (ValueError, KeyError, TypeError) as exc:
        return Outcome(False, "bad_response", repr(exc)[:200])
    if got != items:
        return Outcome(False, "bad_response", f"{got} results for {items} items")
    return Outcome(True, server_tokens=int(tokens), response_bytes=len(raw))


async def _run(url: str, kind: str, requests: list[TaskRequest], concurrency: int, timeout_s: float) -> dict:
    client = LeanHttpClient(url, {"content-type": "application/json"}, concurrency)
    rec = Recorder()
    pending = iter(range(len(requests)))  # shared by the clients: each takes the next request
    try:
        async def one_client():
            for i in pending:
                r = requests[i]
                start = time.perf_counter()
                if rec.first_send is None:
                    rec.first_send = start
                try:
                    async with asyncio.timeout(timeout_s):
                        a = await client.post(ROUTES[kind], r.body)
                    out = (read_answer(kind, a.body, r.items) if a.status == 200
                           else Outcome(False, str(a.status), a.body[:300].decode(errors="replace")))
                except Exception as exc:  # noqa: BLE001 (never let one request end the run)
                    out = Outcome(False, type(exc).__name__, repr(exc)[:200])
                done = time.perf_counter()
                rec.record(r.items, r.tokens, done - start, out, done)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    finally:
        await client.close()
    window = (rec.last_done or 0.0) - (rec.first_send or 0.0)
    return rec.summary(window)


def run_requests(url: str, kind: str, requests: list[TaskRequest], concurrency: int = 4,
                 timeout_s: float = 300) -> dict:
    """Every request once, `concurrency` in flight; the Recorder's summary (texts_per_s: items/s)."""
    check_http_target(url)
    return asyncio.run(_run(url, kind, requests, concurrency, timeout_s))
