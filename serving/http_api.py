"""The OpenAI-compatible HTTP API: translates JSON into the core's EmbedJob and back."""

from __future__ import annotations


import orjson
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import EmbedError, InputTooLong, InvalidInput
from models.postprocess import EncodingFormat, OutputOptions, parse_format
from models.prompts import resolve_prompt
from models.tokenizer import Truncate
from serving.cohere_api import add_cohere_routes
from serving.errors import as_embed_error, error_body, http_status, retry_after
from serving.frontend import Frontend
from serving.http_io import error_responses, openapi_body, parse_body, read_json, timing_headers
from serving.pipeline import EmbedJob, EmbedOutcome
from serving.rerank_api import add_rerank_routes
from serving.sparse_http import add_sparse_routes
from serving.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)

ERRORS = error_responses(ErrorResponse)


TOKEN_IDS_REFUSED = (
    "input is an array of token ids, and this service embeds text: send the text itself (or ids from this "
    "service's own POST /tokenize, once EMBEDSERVE_ACCEPT_TOKEN_IDS=true). Ids from another tokenizer embed the "
    "wrong text. LangChain's OpenAIEmbeddings sends tiktoken ids by default: give it "
    "check_embedding_ctx_length=False."
)


def job_from_request(req: EmbeddingRequest, accept_token_ids: bool = False) -> EmbedJob:
    """The core's job for an OpenAI request; token ids only with `accept_token_ids`
    (Settings.accept_token_ids), as no client can know this service's tokenizer but from /tokenize."""
    inp = req.input
    texts = token_ids = None
    if isinstance(inp, str):
        texts = [inp]
    elif not inp:
        raise InvalidInput("input must not be empty.", param="input")
    elif isinstance(inp[0], str):
        texts = list(inp)
    elif not accept_token_ids:
        raise InvalidInput(TOKEN_IDS_REFUSED, param="input", code="token_ids_not_accepted")
    elif isinstance(inp[0], int):
        token_ids = [list(inp)]
    else:
        token_ids = [list(x) for x in inp]
    opts = OutputOptions(req.dimensions, parse_format(req.encoding_format), req.normalize)
    return EmbedJob(req.model, texts, token_ids, opts, Truncate.parse(req.truncate), req.input_type)


def cut(rt, text: str, prompt: str) -> bool:
    """Whether `text` (with `prompt`) is over the model's maximum length."""
    try:
        rt.tokenizer.encode([text], Truncate.NONE, prompt)
        return False
    except InputTooLong:
        return True


def render(outcome: EmbedOutcome, fmt: EncodingFormat) -> bytes:
    """The response body, serialized once, straight from numpy (no pydantic or list round trip
    on the hot path). float32 values are written in their shortest exact form."""
    vectors = outcome.vectors
    data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    for item, n in zip(data, outcome.windows or ()):
        item["windows"] = n
    body = {
        "object": "list",
        "data": data,
        "model": outcome.model_id,
        "usage": {"prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(err: EmbedError) -> JSONResponse:
    wait = retry_after(err)
    headers = {"Retry-After": wait} if wait else {}
    return JSONResponse(error_body(err), status_code=http_status(err), headers=headers)


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
        job = job_from_request(req, fe.accept_token_ids)
        outcome = await fe.embed(job, "http")
        return Response(
            render(outcome, job.options.encoding_format),
            media_type="application/json",
            headers=timing_headers(outcome),
        )

    add_cohere_routes(app, frontend)
    add_rerank_routes(app, frontend)
    add_sparse_routes(app, frontend)

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
        summary="Token ids and counts, as the model sees them (after truncation; truncated says which were cut)",
    )
    async def tokenize(request: Request):
        fe = await authorized(request)
        req = parse_body(TokenizeRequest, await read_json(request, fe.max_payload_bytes))
        texts = [req.input] if isinstance(req.input, str) else req.input
        rt = fe.pipeline.runtime(req.model)
        fe.pipeline.check_count(EmbedJob(req.model, texts))
        prompt = resolve_prompt(rt.prompts, req.input_type)
        seqs = rt.tokenizer.encode(texts, Truncate.END, prompt)
        full = rt.spec.max_seq_length
        return {"model": rt.spec.id, "tokens": [s.tolist() for s in seqs], "counts": [len(s) for s in seqs],
                "truncated": [len(s) >= full and cut(rt, t, prompt) for s, t in zip(seqs, texts)],
                "max_input_tokens": full}

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
