"""What the HTTP front doors (the OpenAI and the Cohere route) share: the request body read
as bounded JSON and parsed into a pydantic model, the OpenAPI body, the timing headers."""

from __future__ import annotations

import json

from fastapi import Request
from pydantic import ValidationError

from models.errors import InvalidInput, PayloadTooLarge
from serving.pipeline.embed import EmbedOutcome


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
        if first["type"] == "value_error":  # our own validators' messages, whole
            raise InvalidInput(str(first["ctx"]["error"]), param=param) from None
        raise InvalidInput(f"Invalid '{loc or 'body'}': {first['msg']}.", param=param) from None


def openapi_body(model) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


ERROR_STATUSES = {
    400: "Invalid input or option",
    401: "Missing or wrong API key",
    404: "Unknown model",
    413: "Payload too large",
    429: "Overloaded: retry after Retry-After seconds",
    503: "Not ready",
}


def error_responses(model) -> dict:
    """The OpenAPI `responses` of a route whose errors have the body `model`."""
    return {status: {"model": model, "description": text} for status, text in ERROR_STATUSES.items()}
