"""The core's errors mapped once to HTTP statuses and once to gRPC codes, and the OpenAI
error body. Exceptions from Ray (backpressure, a replica gone) become core errors here."""

from __future__ import annotations

import logging
import math

import grpc

from models.errors import (
    ArtifactsMissing,
    EmbedError,
    InputTooLong,
    InternalError,
    InvalidInput,
    InvalidOption,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    TooManyInputs,
    Unauthenticated,
)

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[EmbedError], int] = {
    InvalidInput: 400,
    InvalidOption: 400,
    InputTooLong: 400,
    TooManyInputs: 400,
    Unauthenticated: 401,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    Overloaded: 429,
    NotReady: 503,
    ArtifactsMissing: 503,
    InternalError: 500,
}

GRPC_CODE: dict[type[EmbedError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidOption: grpc.StatusCode.INVALID_ARGUMENT,
    InputTooLong: grpc.StatusCode.INVALID_ARGUMENT,
    TooManyInputs: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    ArtifactsMissing: grpc.StatusCode.UNAVAILABLE,
    InternalError: grpc.StatusCode.INTERNAL,
}


def _lookup(table: dict, err: EmbedError, default):
    for cls in type(err).__mro__:
        if cls in table:
            return table[cls]
    return default


def http_status(err: EmbedError) -> int:
    return _lookup(HTTP_STATUS, err, 500)


def grpc_code(err: EmbedError) -> grpc.StatusCode:
    return _lookup(GRPC_CODE, err, grpc.StatusCode.INTERNAL)


def retry_after(err: EmbedError) -> str | None:
    """The Retry-After every transport sends (HTTP header, gRPC trailing metadata): whole
    seconds, the error's wait rounded up, at least 1; None where the error names no wait."""
    wait = getattr(err, "retry_after_s", None)
    return None if wait is None else str(max(1, math.ceil(wait)))


def error_body(err: EmbedError) -> dict:
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}}


def as_embed_error(exc: BaseException) -> EmbedError:
    """Any exception -> a core error with a message fit for the caller."""
    if isinstance(exc, EmbedError):
        return exc
    name = type(exc).__name__
    if name in ("BackPressureError",):
        return Overloaded("The encoders are at capacity. Retry shortly.")
    if name in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "DeploymentUnavailableError"):
        return NotReady("An encoder replica went away while serving this request; retry it.")
    if isinstance(exc, TimeoutError):
        return NotReady("The request did not finish within the server's deadline; retry it.")
    log.exception("unexpected error", exc_info=exc)
    return InternalError("The server had an internal error while processing the request.")
