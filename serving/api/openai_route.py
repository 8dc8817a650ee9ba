"""The OpenAI embeddings route, `POST /v1/embeddings`: OpenAI's JSON into the core's EmbedJob and
back (the wire format: serving.api.openai_wire)."""

from __future__ import annotations

from typing import Awaitable, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from models.errors import InvalidInput
from models.postprocess import EncodingFormat, OutputOptions, parse_format
from models.tokenizer import Truncate
from serving.api.http_bodies import error_responses, openapi_body, parse_body, read_json, timing_headers
from serving.api.ingress_core import Frontend
from serving.api.openai_wire import EmbeddingRequest, EmbeddingResponse, ErrorResponse
from serving.pipeline.embed import EmbedJob, EmbedOutcome

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
    elif not inp or isinstance(inp[0], str):  # none at all: admission refuses it, as at every door
        texts = list(inp)
    elif not accept_token_ids:
        raise InvalidInput(TOKEN_IDS_REFUSED, param="input", code="token_ids_not_accepted")
    elif isinstance(inp[0], int):
        token_ids = [list(inp)]
    else:
        token_ids = [list(x) for x in inp]
    opts = OutputOptions(req.dimensions, parse_format(req.encoding_format), req.normalize)
    return EmbedJob(req.model, texts, token_ids, opts, Truncate.parse(req.truncate), req.input_type)


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



def add_openai_routes(
    app: FastAPI, frontend: Callable[[], Frontend], authorized: Callable[[Request], Awaitable[Frontend]]
) -> None:
    """Mount `POST /v1/embeddings` on `app`; `authorized` returns the replica's Frontend once the
    request's key is checked."""

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
        outcome = await fe.embed(fe.admit(job, "http"), "http")
        return Response(
            render(outcome, job.options.encoding_format),
            media_type="application/json",
            headers=timing_headers(outcome),
        )
