"""Cohere's embed API, `POST /v2/embed`: translates Cohere's JSON into the core's EmbedJob and
back. A thin front door: the same pipeline, limits, auth, cache, metrics and timing headers as
the OpenAI route. Several `embedding_types` come from one pass over the pooled vectors.
Errors leave in Cohere's shape, `{"message": ...}`, with the same statuses as the OpenAI route
(the core's errors mapped once, for the whole route, by `CohereRoute`)."""

from __future__ import annotations

import uuid
from typing import Callable, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from models.errors import EmbedError, InvalidInput, InvalidOption
from models.postprocess import EncodingFormat, OutputOptions
from models.tokenizer import Truncate
from serving.api.errors import as_embed_error, http_status, retry_after
from serving.api.ingress_core import Frontend
from serving.api.http_bodies import error_responses, openapi_body, parse_body, read_json, timing_headers
from serving.pipeline.embed import EmbedJob, EmbedOutcome

TRUNCATE = {"NONE": Truncate.NONE, "START": Truncate.START, "END": Truncate.END, "WINDOW": Truncate.WINDOW}
EMBEDDING_TYPES = {f.value: f for f in EncodingFormat}  # float, base64, int8, uint8, binary, ubinary
API_VERSION = "2"


# ---- the wire format, fields in the order of Cohere's reference ------------------------------
class TextContent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: StrictStr = Field(..., description="text (image_url is not supported: this service embeds text).")
    text: StrictStr | None = None


class EmbedInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: list[TextContent] = Field(..., description="Text parts, embedded together (joined by a newline).")


class CohereEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    texts: list[StrictStr] | None = Field(None, description="Texts to embed (1 to the service's max inputs).")
    images: list[StrictStr] | None = Field(None, description="Not supported: this service embeds text.")
    model: StrictStr = Field(..., description="Model id or alias, as listed by GET /v1/models.")
    input_type: StrictStr | None = Field(
        None,
        description="search_document, search_query, classification or clustering (or another prompt name the model "
        "declares): puts the model's prompt for it before each text.",
    )
    embedding_types: list[StrictStr] | None = Field(
        None, description="One or more of float (default), int8, uint8, binary, ubinary, base64; all from one pass."
    )
    truncate: StrictStr = Field(
        "END",
        description="NONE (too long is an error), START, END; extension: WINDOW embeds a long text whole, in "
        "overlapping windows pooled into one vector.",
    )
    inputs: list[EmbedInput] | None = Field(None, description="Instead of texts: inputs of text content parts.")
    max_tokens: StrictInt | None = Field(
        None, description="Accepted when at least the model's maximum (then the model's maximum applies)."
    )
    output_dimension: StrictInt | None = Field(None, description="Matryoshka truncation to this many dimensions.")
    priority: StrictInt | None = Field(None, description="Accepted, not used.")


class EmbeddingsByType(BaseModel):
    float_: list[list[float]] | None = Field(None, alias="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    input_tokens: int


class ApiMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class CohereEmbedResponse(BaseModel):
    id: str
    embeddings: EmbeddingsByType
    texts: list[str]
    meta: ApiMeta
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"
    # --- embedserve extension --------------------------------------------------------
    windows: list[int] | None = Field(None, description="With truncate WINDOW: the windows each text took.")


class CohereError(BaseModel):
    message: str


ERRORS = error_responses(CohereError)


# ---- errors: the core's, in Cohere's shape ---------------------------------------------------
def error_response(err: EmbedError) -> JSONResponse:
    wait = retry_after(err)
    headers = {"Retry-After": wait} if wait else {}
    return JSONResponse({"message": err.message}, status_code=http_status(err), headers=headers)


class CohereRoute(APIRoute):
    """Whatever fails on a route of this class leaves as Cohere's error: the core's error
    (anything else becomes one, as on every route) with the status the core's error maps to."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 (mapped once, here, for the whole route)
                return error_response(as_embed_error(exc))

        return route


# ---- JSON <-> EmbedJob -------------------------------------------------------------------------
def texts_of(req: CohereEmbedRequest) -> list[str]:
    if req.images:
        raise InvalidInput("images are not supported: this service embeds text.", param="images")
    if (req.texts is None) == (req.inputs is None):
        raise InvalidInput("Give exactly one of texts or inputs.", param="texts")
    if req.texts is not None:
        return list(req.texts)
    texts = []
    for i, item in enumerate(req.inputs):
        parts = []
        for part in item.content:
            if part.type != "text" or part.text is None:
                raise InvalidInput(
                    f"inputs[{i}]: only text content is supported (type 'text' with a 'text').", param="inputs"
                )
            parts.append(part.text)
        if not parts:
            raise InvalidInput(f"inputs[{i}] has no content.", param="inputs")
        texts.append("\n".join(parts))
    return texts


def formats_of(req: CohereEmbedRequest) -> list[EncodingFormat]:
    names = ["float"] if req.embedding_types is None else req.embedding_types
    if not names:
        raise InvalidOption("embedding_types must not be empty.", param="embedding_types")
    formats = []
    for name in names:
        fmt = EMBEDDING_TYPES.get(name)
        if fmt is None:
            raise InvalidOption(
                f"'{name[:50]}' is not an embedding type. Use any of: {', '.join(EMBEDDING_TYPES)}.",
                param="embedding_types",
            )
        formats.append(fmt)
    return formats


def truncate_of(req: CohereEmbedRequest) -> Truncate:
    truncate = TRUNCATE.get(req.truncate)
    if truncate is None:
        raise InvalidOption(
            f"'{req.truncate[:50]}' is not a valid truncate. Use NONE, START, END or WINDOW.", param="truncate"
        )
    return truncate


def job_from_cohere(req: CohereEmbedRequest) -> EmbedJob:
    texts = texts_of(req)
    formats = formats_of(req)
    opts = OutputOptions(req.output_dimension, formats[0], normalize=True)
    return EmbedJob(req.model, texts, None, opts, truncate_of(req), req.input_type, tuple(formats[1:]), req.max_tokens)


def render(outcome: EmbedOutcome, texts: list[str]) -> bytes:
    """Cohere's response, serialized once straight from numpy."""
    body = {
        "id": str(uuid.uuid4()),
        "embeddings": {fmt.value: vectors for fmt, vectors in outcome.outputs.items()},
        "texts": texts,
        "meta": {"api_version": {"version": API_VERSION}, "billed_units": {"input_tokens": outcome.prompt_tokens}},
        "response_type": "embeddings_by_type",
    }
    if outcome.windows is not None:
        body["windows"] = outcome.windows
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def add_cohere_routes(app: FastAPI, frontend: Callable[[], Frontend]) -> None:
    """Mount the route on `app` itself (not an included router: FastAPI resolves those lazily,
    in the replica, where Ray's pickled copy of this closure lacks the module's names)."""

    async def embed(request: Request) -> Response:
        fe = frontend()
        fe.authenticate(request.headers.get("authorization"))
        req = parse_body(CohereEmbedRequest, await read_json(request, fe.max_payload_bytes))
        job = job_from_cohere(req)
        outcome = await fe.embed(fe.admit(job, "cohere"), "cohere")
        return Response(render(outcome, job.texts), media_type="application/json", headers=timing_headers(outcome))

    app.router.add_api_route(
        "/v2/embed",
        embed,
        methods=["POST"],
        response_model=CohereEmbedResponse,
        responses=ERRORS,
        openapi_extra=openapi_body(CohereEmbedRequest),
        summary="Embed (Cohere-compatible)",
        route_class_override=CohereRoute,
    )
