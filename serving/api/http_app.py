"""The HTTP app: one FastAPI app holding every HTTP front door (OpenAI, Cohere, rerank, sparse),
the service's own routes (/v1/models, /tokenize, /health, /ready, /stats) and the OpenAI-shaped
error handlers every non-Cohere route answers with."""

from __future__ import annotations

from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import EmbedError, InputTooLong, InvalidInput
from models.tokenizer import Truncate
from serving.api.admission import admit
from serving.api.cohere_route import add_cohere_routes
from serving.api.errors import as_embed_error, error_body, http_status, retry_after
from serving.api.http_bodies import error_responses, openapi_body, parse_body, read_json
from serving.api.ingress_core import Frontend
from serving.api.openai_route import add_openai_routes
from serving.api.openai_wire import ErrorResponse, ModelList, TokenizeRequest, TokenizeResponse
from serving.api.rerank_routes import add_rerank_routes
from serving.api.sparse_routes import add_sparse_routes
from serving.pipeline.embed import EmbedJob

ERRORS = error_responses(ErrorResponse)


def cut(rt, text: str, prompt: str) -> bool:
    """Whether `text` (with `prompt`) is over the model's maximum length."""
    try:
        rt.tokenizer.encode([text], Truncate.NONE, prompt)
        return False
    except InputTooLong:
        return True


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

    add_openai_routes(app, frontend, authorized)
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
        admitted = admit(fe.served, EmbedJob(req.model, texts, input_type=req.input_type), any_task=True)
        rt, prompt = admitted.runtime, admitted.prompt
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
