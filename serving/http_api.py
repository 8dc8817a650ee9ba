"""The OpenAI-compatible HTTP API: translates JSON into the core's EmbedJob and back."""

from __future__ import annotations

import json
import math

import orjson
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import EmbedError, InvalidInput, PayloadTooLarge
from models.postprocess import EncodingFormat, OutputOptions, parse_format
from models.tokenizer import Truncate
from serving.errors import as_embed_error, error_body, http_status
from serving.frontend import Frontend
from serving.pipeline import EmbedJob, EmbedOutcome
from serving.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)

ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Invalid input or option"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model"),
        (413, "Payload too large"),
        (429, "Overloaded: retry after Retry-After seconds"),
        (503, "Not ready"),
    ]
}


def job_from_request(req: EmbeddingRequest) -> EmbedJob:
    inp = req.input
    texts = token_ids = None
    if isinstance(inp, str):
        texts = [inp]
    elif not inp:
        raise InvalidInput("input must not be empty.", param="input")
    elif isinstance(inp[0], str):
        texts = list(inp)
    elif isinstance(inp[0], int):
        token_ids = [list(inp)]
    else:
        token_ids = [list(x) for x in inp]
    opts = OutputOptions(req.dimensions, parse_format(req.encoding_format), req.normalize)
    return EmbedJob(req.model, texts, token_ids, opts, Truncate.parse(req.truncate))


def render(outcome: EmbedOutcome, fmt: EncodingFormat) -> bytes:
    """The response body, serialized once, straight from numpy (no pydantic or list round trip
    on the hot path). float32 values are written in their shortest exact form."""
    vectors = outcome.vectors
    body = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": outcome.model_id,
        "usage": {"prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def timing_headers(outcome: EmbedOutcome) -> dict[str, str]:
    t = outcome.timings
    ms = lambda s: f"{s * 1000:.2f}"  # noqa: E731
    return {
        "x-tokenize-time": ms(t.get("tokenize", 0)),
        "x-cache-time": ms(t.get("cache", 0)),
        "x-queue-time": ms(t.get("queue", 0)),
        "x-inference-time": ms(t.get("inference", 0)),
        "x-postprocess-time": ms(t.get("postprocess", 0)),
        "x-total-time": ms(t.get("total", 0)),
        "x-cache-hits": str(outcome.cache_hits),
        "x-batch-size": str(outcome.batch_size),
    }


def error_response(err: EmbedError) -> JSONResponse:
    headers = {}
    if getattr(err, "retry_after_s", None) is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    return JSONResponse(error_body(err), status_code=http_status(err), headers=headers)


async def read_json(request: Request, limit: int) -> object:
    """The body as JSON, bounded in size; malformed or absurdly nested JSON is a 400.

    An oversize body is still read (and dropped) up to 8x the limit, so the client, which is
    usually still sending, gets a clean 413 instead of a reset connection."""
    declared = request.headers.get("content-length")
    too_big = bool(declared and declared.isdigit() and int(declared) > limit)
    body = bytearray()
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            too_big = True
            body.clear()
        elif not too_big:
            body += chunk
        if seen > 8 * limit:
            break
    if too_big:
        raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"The request body is not valid JSON: {str(exc)[:200]}") from None
    reject_lone_surrogates(obj)
    return obj


def reject_lone_surrogates(obj: object) -> None:
    """JSON may escape half a UTF-16 pair ("\\ud800"); Python keeps it as a lone surrogate,
    which is not Unicode text and breaks the tokenizer and the JSON encoder alike."""
    stack = [obj]
    while stack:  # iterative: json.loads allows nesting deeper than Python's recursion
        x = stack.pop()
        if isinstance(x, str):
            if not x.isascii():
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidInput(
                        "The request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode."
                    ) from None
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())


def parse_body(model, obj: object):
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        param = str(first["loc"][0]) if first["loc"] else None
        raise InvalidInput(f"Invalid '{loc or 'body'}': {first['msg']}.", param=param) from None


def openapi_body(model) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def build_http_app(frontend: Callable[[], Frontend]) -> FastAPI:
    """The FastAPI app; `frontend` returns the replica's Frontend when a request arrives."""
    app = FastAPI(
        title="embedserve",
        version="0.1.0",
        description="OpenAI-compatible text embeddings on ONNX Runtime and Ray Serve.",
    )

    @app.exception_handler(EmbedError)
    async def _embed_error(_: Request, exc: EmbedError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return error_response(InvalidInput(f"Invalid request: {first['msg']}.", param=None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        err = EmbedError(str(exc.detail))
        err.code = "not_found" if exc.status_code == 404 else "invalid_request"
        return JSONResponse(error_body(err), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        return error_response(as_embed_error(exc))

    async def authorized(request: Request) -> Frontend:
        fe = frontend()
        fe.authenticate(request.headers.get("authorization"))
        return fe

    @app.post(
        "/v1/embeddings",
        response_model=EmbeddingResponse,
        responses=ERRORS,
        openapi_extra=openapi_body(EmbeddingRequest),
        summary="Create embeddings (OpenAI-compatible)",
    )
    async def embeddings(request: Request) -> Response:
        fe = await authorized(request)
        req = parse_body(EmbeddingRequest, await read_json(request, fe.max_payload_bytes))
        job = job_from_request(req)
        outcome = await fe.embed(job, "http")
        return Response(
            render(outcome, job.options.encoding_format),
            media_type="application/json",
            headers=timing_headers(outcome),
        )

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="List served models")
    async def models(request: Request):
        fe = await authorized(request)
        cards = [{"object": "model", "created": 0, "owned_by": "embedserve", **m} for m in await fe.models()]
        return {"object": "list", "data": cards}

    @app.post(
        "/tokenize",
        response_model=TokenizeResponse,
        responses=ERRORS,
        openapi_extra=openapi_body(TokenizeRequest),
        summary="Token ids and counts, as the model sees them",
    )
    async def tokenize(request: Request):
        fe = await authorized(request)
        req = parse_body(TokenizeRequest, await read_json(request, fe.max_payload_bytes))
        texts = [req.input] if isinstance(req.input, str) else req.input
        rt = fe.pipeline.runtime(req.model)
        fe.pipeline.check_count(EmbedJob(req.model, texts))
        seqs = rt.tokenizer.encode(texts)
        return {"model": rt.spec.id, "tokens": [s.tolist() for s in seqs], "counts": [len(s) for s in seqs]}

    @app.get("/health", summary="Alive")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", responses={503: ERRORS[503]}, summary="Every model loaded and answering")
    async def ready():
        return {"status": "ready", "models": await frontend().require_ready()}

    @app.get("/stats", responses=ERRORS, summary="Cache hit ratio and requests in flight")
    async def stats(request: Request):
        fe = await authorized(request)
        return fe.stats()

    return app
