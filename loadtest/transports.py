"""The load generator's transports: HTTP (the OpenAI route, httpx) and gRPC (grpc.aio), each
sending one request and reading the whole answer, with the server's stage timings."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass

import orjson

from loadtest.load_config import LoadConfig

STAGES = ("tokenize", "cache", "queue", "inference", "postprocess", "total")


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
    """The OpenAI route over HTTP/1.1: the lean client (loadtest.lean_http) by default, httpx with
    `cfg.http_client == "httpx"` (or for https)."""

    def __init__(self, cfg: LoadConfig):
        self.cfg = cfg
        self.path = "/v1/embeddings"
        headers = {"content-type": "application/json"}
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        conns = cfg.concurrency if cfg.mode == "closed" else min(cfg.max_in_flight, 256)
        self.lean = cfg.http_client == "lean" and cfg.url.startswith("http://")
        if self.lean:
            from loadtest.lean_http import LeanHttpClient

            self.client = LeanHttpClient(cfg.url, headers, conns)
            return
        import httpx

        self.client = httpx.AsyncClient(
            base_url=cfg.url.rstrip("/"),
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

    async def _post(self, body: bytes) -> tuple[int, dict, bytes, float, float]:
        """(status, headers, body, seconds to the headers, seconds for the body)."""
        if self.lean:
            async with asyncio.timeout(self.cfg.timeout_s):
                a = await self.client.post(self.path, body)
            return a.status, a.headers, a.body, a.headers_s, a.body_s
        httpx = self.httpx
        t0 = time.perf_counter()
        try:  # httpx's errors as the lean client's (the builtins), so `send` names them once
            async with self.client.stream("POST", self.path, content=body) as resp:
                t1 = time.perf_counter()
                raw = await resp.aread()
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except httpx.ConnectError as exc:
            raise ConnectionRefusedError(str(exc)) from exc
        return resp.status_code, resp.headers, raw, t1 - t0, time.perf_counter() - t1

    async def send(self, texts: list[str], body: bytes | None = None) -> Outcome:
        body = body if body is not None else self.body(texts)
        try:
            status, h, raw, headers_s, body_s = await self._post(body)
        except TimeoutError as exc:
            return Outcome(False, "timeout", repr(exc)[:200])
        except ConnectionRefusedError as exc:
            return Outcome(False, "connect_error", repr(exc)[:200])
        except Exception as exc:  # noqa: BLE001 (a broken connection, a bad answer): named by class
            return Outcome(False, type(exc).__name__, repr(exc)[:200])
        t2 = time.perf_counter()
        if status != 200:
            return Outcome(False, str(status), raw[:300].decode(errors="replace"))
        out = Outcome(True, stages=_stage_ms(h.get), response_bytes=len(raw))
        if "x-cache-hits" in h:
            out.cache_hits = int(h["x-cache-hits"])
        if "x-batch-size" in h:
            out.batch_size = int(h["x-batch-size"])
        if self.cfg.verify:
            try:
                doc = orjson.loads(raw)
                data = doc["data"]
                out.server_tokens = int(doc["usage"]["prompt_tokens"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                return Outcome(False, "bad_response", repr(exc)[:200])
            if len(data) != len(texts) or (data and data[-1]["index"] != len(texts) - 1):
                return Outcome(False, "bad_response", f"{len(data)} embeddings for {len(texts)} texts")
            first = data[0]["embedding"] if data else []
            if isinstance(first, str):
                base64.b64decode(first)  # the client's share of work for base64 answers
        t3 = time.perf_counter()
        out.client = {"headers": headers_s * 1e3, "body": body_s * 1e3, "parse": (t3 - t2) * 1e3}
        return out

    async def close(self) -> None:
        await (self.client.close() if self.lean else self.client.aclose())


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
