"""Rerank over HTTP: `POST /v2/rerank` in Cohere's shape (errors as Cohere's `{"message"}`)
and `POST /v1/rerank` in the shape vLLM and Jina use (errors as the OpenAI routes'). Both build
the core's RerankJob and call the same pipeline (serving.pipeline.reranking): same auth, limits (the
service's max inputs: documents per request), metrics and timing headers as the embed routes.

A one-label cross-encoder's relevance_score is its sigmoid, as CrossEncoder.predict gives it;
a model of several labels ranks by its highest label score, and its per-label scores ride in
`scores` (an extension)."""

from __future__ import annotations

import uuid
from typing import Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from serving.api.cohere_route import API_VERSION, ApiVersion, CohereError, CohereRoute
from serving.api.ingress_core import Frontend
from serving.api.http_bodies import error_responses, openapi_body, parse_body, read_json, timing_headers
from serving.api.openai_wire import ErrorResponse
from serving.pipeline.reranking import RerankJob, RerankOutcome


# ---- Cohere v2 -------------------------------------------------------------------------------
class CohereRerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(..., description="A rerank model's id or alias (GET /v1/models: task rerank).")
    query: StrictStr = Field(..., description="The search query.")
    documents: list[StrictStr] = Field(..., description="Texts to score against the query (1 to the service's max inputs).")
    top_n: StrictInt | None = Field(None, description="Return only the best top_n results (default: all).")
    max_tokens_per_doc: StrictInt | None = Field(
        None, description="Cut each document after this many tokens before pairing (the pair is still cut at the "
        "model's maximum, document side first)."
    )
    priority: StrictInt | None = Field(None, description="Accepted, not used.")
    # --- from Cohere's v1 API ----------------------------------------------------------
    return_documents: StrictBool = Field(False, description="Include each result's document text.")


class RerankDocument(BaseModel):
    text: str


class CohereRerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None
    scores: list[float] | None = Field(None, description="A model of several labels: each label's score.")


class SearchUnits(BaseModel):
    search_units: int
    input_tokens: int


class RerankMeta(BaseModel):
    api_version: ApiVersion
    billed_units: SearchUnits


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereRerankResult]
    meta: RerankMeta


# ---- vLLM / Jina v1 ----------------------------------------------------------------------------
class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(..., description="A rerank model's id or alias (GET /v1/models: task rerank).")
    query: StrictStr = Field(..., description="The search query.")
    documents: list[StrictStr] = Field(..., description="Texts to score against the query.")
    top_n: StrictInt | None = Field(None, description="Return only the best top_n results (default: all).")
    return_documents: StrictBool = Field(True, description="Include each result's document (Jina's default).")


class RerankResult(BaseModel):
    index: int
    document: RerankDocument | None = None
    relevance_score: float
    scores: list[float] | None = Field(None, description="A model of several labels: each label's score.")


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


def results(outcome: RerankOutcome, documents: list[str], return_documents: bool) -> list[dict]:
    out = []
    for i in outcome.order:
        s = outcome.scores[i]
        item = {"index": i, "relevance_score": float(s if s.ndim == 0 else s.max())}
        if return_documents:
            item["document"] = {"text": documents[i]}
        if s.ndim:
            item["scores"] = [float(x) for x in s]
        out.append(item)
    return out


def render_cohere(outcome: RerankOutcome, req: CohereRerankRequest) -> bytes:
    return orjson.dumps({
        "id": str(uuid.uuid4()),
        "results": results(outcome, req.documents, req.return_documents),
        "meta": {"api_version": {"version": API_VERSION},
                 "billed_units": {"search_units": 1, "input_tokens": outcome.prompt_tokens}},
    })


def render_v1(outcome: RerankOutcome, req: RerankRequest) -> bytes:
    return orjson.dumps({
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": outcome.model_id,
        "usage": {"prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens},
        "results": results(outcome, req.documents, req.return_documents),
    })


def add_rerank_routes(app: FastAPI, frontend: Callable[[], Frontend]) -> None:
    """Mounted on `app` itself, as serving.api.cohere_route's route (Ray pickles the closure)."""

    async def cohere_rerank(request: Request) -> Response:
        fe = frontend()
        fe.authenticate(request.headers.get("authorization"))
        req = parse_body(CohereRerankRequest, await read_json(request, fe.max_payload_bytes))
        job = RerankJob(req.model, req.query, list(req.documents), req.top_n, req.max_tokens_per_doc)
        outcome = await fe.rerank(fe.admit(job, "cohere"), "cohere")
        return Response(render_cohere(outcome, req), media_type="application/json", headers=timing_headers(outcome))

    app.router.add_api_route(
        "/v2/rerank", cohere_rerank, methods=["POST"], response_model=CohereRerankResponse,
        responses=error_responses(CohereError), openapi_extra=openapi_body(CohereRerankRequest),
        summary="Rerank (Cohere-compatible)", route_class_override=CohereRoute,
    )

    async def rerank_v1(request: Request) -> Response:
        fe = frontend()
        fe.authenticate(request.headers.get("authorization"))
        req = parse_body(RerankRequest, await read_json(request, fe.max_payload_bytes))
        job = RerankJob(req.model, req.query, list(req.documents), req.top_n)
        outcome = await fe.rerank(fe.admit(job, "http"), "http")
        return Response(render_v1(outcome, req), media_type="application/json", headers=timing_headers(outcome))

    app.router.add_api_route(
        "/v1/rerank", rerank_v1, methods=["POST"], response_model=RerankResponse,
        responses=error_responses(ErrorResponse), openapi_extra=openapi_body(RerankRequest),
        summary="Rerank (vLLM / Jina-compatible)",
    )
