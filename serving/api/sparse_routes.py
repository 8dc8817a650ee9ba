"""The sparse (SPLADE) HTTP routes: JSON into the core's SparseJob (serving.pipeline.sparse) and back.

Two shapes of the same vectors:
- `POST /embed_sparse`, text-embeddings-inference's: {inputs, truncate, truncation_direction,
  prompt_name} -> per input a list of {index, value} (with return_text: {index, value, text});
- `POST /v1/embeddings/sparse`, the form vector databases take (Qdrant SparseVector, Milvus sparse,
  Elasticsearch / OpenSearch rank features): {model, input, input_type, top_k, return_tokens} ->
  {data: [{index, indices, values, tokens?}], model, usage}.
In both, indices ascend (a coalesced torch sparse tensor's order: what SparseEncoder.encode gives).
"""

from __future__ import annotations

from typing import Callable, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from models.errors import InvalidInput
from models.tokenizer import Truncate
from serving.api.ingress_core import Frontend
from serving.api.http_bodies import error_responses, openapi_body, parse_body, read_json, timing_headers
from serving.api.openai_wire import ErrorResponse
from serving.pipeline.sparse import SparseJob, SparseOutcome

ERRORS = error_responses(ErrorResponse)


class TeiSparseRequest(BaseModel):
    """text-embeddings-inference's /embed_sparse body, and our extensions below it."""

    model_config = ConfigDict(extra="ignore")
    inputs: str | list[str]
    truncate: bool = Field(True, description="Cut inputs over the model's length (false: too long is a 400).")
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    prompt_name: str | None = Field(None, description="The model's prompt to put before each input.")
    # --- embedserve extensions -------------------------------------------------------
    model: str | None = Field(None, description="A served sparse model (default: the first one).")
    return_text: bool = Field(False, description="Each entry also carries its vocabulary string as `text`.")
    top_k: int | None = Field(None, description="Keep the k largest weights per input.")


class SparseEmbeddingRequest(BaseModel):
    """/v1/embeddings/sparse: OpenAI's embeddings request, sparse."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, description="A served sparse model (default: the first one).")
    input: str | list[str]
    input_type: str | None = Field(None, description="Picks the model's prompt, as for dense models.")
    top_k: int | None = Field(None, description="Keep the k largest weights per input (max_active_dims).")
    truncate: Literal["end", "start", "none"] = "end"
    return_tokens: bool = Field(False, description="The vocabulary strings beside the indices.")


class SparseEntry(BaseModel):
    index: int
    value: float
    text: str | None = None


class SparseEmbedding(BaseModel):
    object: Literal["sparse_embedding"] = "sparse_embedding"
    index: int
    indices: list[int]
    values: list[float]
    tokens: list[str] | None = None


class SparseUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class SparseEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SparseEmbedding]
    model: str
    usage: SparseUsage


def _texts(inputs: str | list[str], param: str) -> list[str]:
    if isinstance(inputs, str):
        return [inputs]
    if not inputs:
        raise InvalidInput(f"{param} must not be empty.", param=param)
    return list(inputs)


def job_from_tei(req: TeiSparseRequest) -> SparseJob:
    side = Truncate.START if req.truncation_direction.lower() == "left" else Truncate.END
    return SparseJob(req.model or None, _texts(req.inputs, "inputs"), side if req.truncate else Truncate.NONE,
                     req.prompt_name, req.top_k, req.return_text)


def job_from_openai(req: SparseEmbeddingRequest) -> SparseJob:
    return SparseJob(req.model or None, _texts(req.input, "input"), Truncate(req.truncate), req.input_type,
                     req.top_k, req.return_tokens)


def render_tei(outcome: SparseOutcome) -> bytes:
    body = []
    for i, v in enumerate(outcome.vectors):
        pairs = v.as_pairs()
        if outcome.tokens is not None:
            for pair, text in zip(pairs, outcome.tokens[i]):
                pair["text"] = text
        body.append(pairs)
    return orjson.dumps(body)


def render_openai(outcome: SparseOutcome) -> bytes:
    data = []
    for i, v in enumerate(outcome.vectors):
        item = {"object": "sparse_embedding", "index": i, "indices": v.indices, "values": v.values}
        if outcome.tokens is not None:
            item["tokens"] = outcome.tokens[i]
        data.append(item)
    usage = {"prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": outcome.model_id, "usage": usage},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def add_sparse_routes(app: FastAPI, frontend: Callable[[], Frontend]) -> None:
    """Mounted on `app` itself, like the Cohere route (see serving.api.cohere_route.add_cohere_routes)."""

    async def run(request: Request, model, to_job, render) -> Response:
        fe = frontend()
        fe.authenticate(request.headers.get("authorization"))
        job = to_job(parse_body(model, await read_json(request, fe.max_payload_bytes)))
        outcome = await fe.embed_sparse(fe.admit(job, "http"), "http")
        return Response(render(outcome), media_type="application/json", headers=timing_headers(outcome))

    async def embed_sparse(request: Request) -> Response:
        return await run(request, TeiSparseRequest, job_from_tei, render_tei)

    async def embeddings_sparse(request: Request) -> Response:
        return await run(request, SparseEmbeddingRequest, job_from_openai, render_openai)

    app.router.add_api_route(
        "/embed_sparse", embed_sparse, methods=["POST"], response_model=list[list[SparseEntry]], responses=ERRORS,
        openapi_extra=openapi_body(TeiSparseRequest),
        summary="Sparse (SPLADE) embeddings, text-embeddings-inference's shape: [{index, value}] per input",
    )
    app.router.add_api_route(
        "/v1/embeddings/sparse", embeddings_sparse, methods=["POST"], response_model=SparseEmbeddingResponse,
        responses=ERRORS, openapi_extra=openapi_body(SparseEmbeddingRequest),
        summary="Sparse (SPLADE) embeddings as indices / values arrays (Qdrant, Milvus, Elasticsearch)",
    )
