"""The engine's one error hierarchy. Ingress layers map these once to HTTP and gRPC codes."""

from __future__ import annotations


class EmbedError(Exception):
    """Base class: a request the engine cannot serve, with a message fit for the caller."""

    kind = "invalid_request_error"  # OpenAI error `type`
    code: str | None = None  # OpenAI error `code`

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidInput(EmbedError):
    """The input itself is wrong: empty, wrong type, token ids out of the vocabulary."""

    code = "invalid_input"


class InvalidOption(EmbedError):
    """An option is wrong: dimensions, encoding_format, truncate."""

    code = "invalid_value"


class InputTooLong(EmbedError):
    """An input exceeds the model's maximum length and truncation was turned off."""

    code = "context_length_exceeded"


class TooManyInputs(EmbedError):
    code = "too_many_inputs"


class PayloadTooLarge(EmbedError):
    code = "payload_too_large"


class ModelNotFound(EmbedError):
    code = "model_not_found"


class Unauthenticated(EmbedError):
    kind = "authentication_error"
    code = "invalid_api_key"


class Overloaded(EmbedError):
    """Refused at the door: too much work in flight. The caller should retry later."""

    kind = "rate_limit_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class NotReady(EmbedError):
    """The model is not loaded (yet) or a replica went away mid-request: a passing state, so
    the caller should retry (after `retry_after_s`)."""

    kind = "server_error"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class InternalError(EmbedError):
    """Something failed inside the server; the message says nothing more (the log does)."""

    kind = "server_error"
    code = "internal_error"


class ArtifactsMissing(EmbedError):
    """The ONNX artifacts for a model have not been exported."""

    kind = "server_error"
    code = "artifacts_missing"
