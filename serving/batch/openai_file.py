"""The OpenAI Batch API format of the bulk job. A line of the input file must be a request
(`custom_id`, `"method": "POST"`, `"url": "/v1/embeddings"`, a `body`), and its body goes through
the checks of POST /v1/embeddings in the route's and admission's order, so a bad body gets
the status and error JSON the service answers. Answers and refusals are written as lines of
OpenAI batch output and error files, each body the bytes the route would have sent."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson

from models.errors import PayloadTooLarge
from models.postprocess import EncodingFormat
from models.specs import ModelSpec
from serving.batch.records import Problem, parse_json_line
from serving.api.admission import Served, admit
from serving.api.errors import as_embed_error, error_body, http_status
from serving.api.openai_route import job_from_request, render
from serving.api.http_bodies import parse_body, reject_lone_surrogates
from serving.pipeline.embed import EmbedJob, EmbedOutcome, Pipeline
from serving.pipeline.runtime import ModelRuntime
from serving.api.openai_wire import EmbeddingRequest

URL = "/v1/embeddings"


def parse_request(raw: bytes) -> tuple[str | None, dict | None, Problem | None]:
    """(custom_id, body, None) of a request line, or (custom_id if any, None, why) of a line
    that is no embeddings request at all."""
    obj, problem = parse_json_line(raw)
    if problem:
        return None, None, problem
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str):
        return None, None, Problem("invalid_request", "the line has no custom_id (a string)")
    if obj.get("method") != "POST":
        return custom_id, None, Problem("invalid_request", f"method must be POST; got {str(obj.get('method'))[:40]!r}")
    if obj.get("url") != URL:
        return custom_id, None, Problem("invalid_request", f"url must be {URL}; got {str(obj.get('url'))[:100]!r}")
    if not isinstance(obj.get("body"), dict):
        return custom_id, None, Problem("invalid_request", f"body must be a JSON object (the {URL} request)")
    return custom_id, obj["body"], None


class RequestChecker:
    """A request body through the checks of POST /v1/embeddings: the body's size and Unicode
    (read_json), its fields (parse_body, job_from_request), the model, options, inputs and prompt
    (serving.api.admission, as every door), then tokenization (too long with truncate none, too many
    windows, token ids): per input, its sequences (one, or a long text's windows)."""

    def __init__(self, runtime: ModelRuntime, max_inputs: int, max_payload_bytes: int, accept_token_ids: bool = False):
        self.served = Served({runtime.spec.key: runtime}, max_inputs=max_inputs)
        self.max_payload_bytes = max_payload_bytes
        self.accept_token_ids = accept_token_ids

    def check(self, body: dict) -> tuple[EmbedJob, list[list[np.ndarray]]]:
        reject_lone_surrogates(body)
        if len(orjson.dumps(body)) > self.max_payload_bytes:
            raise PayloadTooLarge(f"The request body is over the limit of {self.max_payload_bytes} bytes.")
        job = job_from_request(parse_body(EmbeddingRequest, body), self.accept_token_ids)
        admitted = admit(self.served, job)
        return job, Pipeline.units(admitted.runtime, job, admitted.prompt)


def line_ids(fingerprint: str, path: str, row: int) -> tuple[str, str]:
    """(line id, request id) of an input line: derived from the job and the line, so a rerun
    writes the same lines."""
    h = hashlib.sha256(f"{fingerprint}:{path}:{row}".encode()).hexdigest()
    return "batch_req_" + h[:24], "req_" + h[24:48]


def answer_line(ids: tuple[str, str], custom_id: str, spec: ModelSpec, vectors, prompt_tokens: int,
                fmt: EncodingFormat, windows: list[int] | None = None) -> bytes:
    """A 200: the body the route renders for these vectors."""
    outcome = EmbedOutcome(spec.id, vectors, prompt_tokens, 0, windows=windows)
    return _line(ids, custom_id, 200, render(outcome, fmt), None)


def refusal_line(ids: tuple[str, str], custom_id: str, exc: Exception) -> bytes:
    """What the route answers for this failure: 4xx for bad input, 500 for anything else."""
    err = as_embed_error(exc)
    return _line(ids, custom_id, http_status(err), orjson.dumps(error_body(err)), None)


def problem_line(ids: tuple[str, str], custom_id: str | None, problem: Problem, line: int) -> bytes:
    """A line that is no request: no response, an error with the reason and the line number."""
    return _line(ids, custom_id, None, None, {"code": problem.code, "message": problem.message, "line": line})


def _line(ids: tuple[str, str], custom_id: str | None, status: int | None, body: bytes | None,
          error: dict | None) -> bytes:
    line_id, request_id = ids
    head = orjson.dumps({"id": line_id, "custom_id": custom_id})[:-1]
    response = b"null" if status is None else (
        b'{"status_code":%d,"request_id":%s,"body":%s}' % (status, orjson.dumps(request_id), body))
    return head + b',"response":' + response + b',"error":' + orjson.dumps(error) + b"}\n"
