"""An OpenAI Batch API input file through `embedserve batch` (the CLI, on the local Ray it
starts itself) comes back as OpenAI batch output and error files: one line per request, in
input order, keyed by custom_id; each body is what POST /v1/embeddings answers for the same
body (the same vectors, usage and error JSON), and lines that are no request at all are
error lines with the reason."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.support.batch import MODEL, manifests, read_jsonl_lines, run_cli, write_jsonl
from tests.support.service import deploy, undeploy

pytestmark = pytest.mark.integration

LONG = "embedding " * 400  # over the model's 256 tokens


def request(custom_id: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, **body}}


REQUESTS = [
    request("texts", input=["Hello, world", "Vectors, fast", "A third text, a little longer than the others."]),
    request("base64", input="one text, in base64 and 64 dimensions", dimensions=64, encoding_format="base64"),
    request("token-ids", input=[101, 7592, 1010, 2088, 102], encoding_format="int8"),
    request("token-id-lists", input=[[101, 7592, 102], [101, 2088, 102]], encoding_format="ubinary", dimensions=128),
    request("raw", input=["not normalized"], normalize=False),
    request("long-cut", input=[LONG]),
    request("long-refused", input=["short", LONG], truncate="none"),
    request("empty", input=["fine", ""]),
    request("unknown-model", input="hi", model="no-such-model"),
    request("bad-dimensions", input="hi", dimensions=1000),
    request("bad-format", input="hi", encoding_format="hex"),
    {"custom_id": "no-model", "method": "POST", "url": "/v1/embeddings", "body": {"input": "hi"}},
    '{"custom_id": "broken", "method": "POST", ',
    {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL}},
    {"method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "no custom_id"}},
    request("last", input="the last request"),
]
ANSWERED = ["texts", "base64", "token-ids", "token-id-lists", "raw", "long-cut", "last"]
REFUSED = ["long-refused", "empty", "unknown-model", "bad-dimensions", "bad-format", "no-model"]  # 4xx bodies
NOT_REQUESTS = {13: (None, "invalid_json"), 14: ("chat", "invalid_request"), 15: (None, "invalid_request")}  # line: ...


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openai")
    path = write_jsonl(folder / "requests.jsonl", REQUESTS)
    out = folder / "results"
    proc = run_cli(path, out, "--shard-rows", "5", "--workers", "1", "--object-store-mb", "100",
                   "--accept-token-ids", "true",  # the token-ids lines; refused by default (test_token_ids_input)
                   progress=True)
    return out, proc


@pytest.fixture(scope="module")
def route(ray_serve):
    """POST /v1/embeddings with the job's settings: token ids accepted (the service's default
    refuses them, tests/test_token_ids_input.py)."""
    app = deploy(ray_serve, "batch-route", "/batch-route", models=[MODEL], accept_token_ids=True, cache="off",
                 encoder_num_cpus=0.5)
    yield app
    undeploy("batch-route")


def as_array(embedding, encoding_format: str) -> np.ndarray:
    if encoding_format == "base64":
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.array(embedding, dtype=np.float64)


def assert_same_answer(got: dict, want: dict, encoding_format: str) -> None:
    """Everything equal but the vectors' last float bits (batches of other shapes)."""
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if k != "data"} == {k: v for k, v in want.items() if k != "data"}
    assert [(d["object"], d["index"]) for d in got["data"]] == [(d["object"], d["index"]) for d in want["data"]]
    for g, w in zip(got["data"], want["data"]):
        a, b = as_array(g["embedding"], encoding_format), as_array(w["embedding"], encoding_format)
        assert a.shape == b.shape
        if encoding_format in ("float", "base64"):
            np.testing.assert_allclose(a, b, atol=2e-6)
        elif encoding_format == "ubinary":  # a bit may flip where a component is float noise from 0
            bits = lambda v: np.unpackbits(v.astype(np.uint8))  # noqa: E731
            assert (bits(a) != bits(b)).sum() <= 1
        else:
            assert np.abs(a - b).max() <= 1


def test_each_answer_is_what_the_route_answers_for_the_same_body(job, route):
    out, _ = job
    lines = {line["custom_id"]: line for line in read_jsonl_lines(out / "output.jsonl")}
    assert list(lines) == ANSWERED  # the 200s, in input order
    bodies = {r["custom_id"]: r["body"] for r in REQUESTS if isinstance(r, dict) and "custom_id" in r}
    for custom_id, line in lines.items():
        assert line.keys() == {"id", "custom_id", "response", "error"} and line["error"] is None
        assert line["response"].keys() == {"status_code", "request_id", "body"}
        assert line["response"]["status_code"] == 200
        status, _, want = route.post("/v1/embeddings", bodies[custom_id])
        assert status == 200, want
        assert_same_answer(line["response"]["body"], want, bodies[custom_id].get("encoding_format", "float"))


def test_a_bad_body_gets_the_routes_status_and_error_json(job, route):
    out, _ = job
    errors = read_jsonl_lines(out / "errors.jsonl")
    refused = [e for e in errors if e["response"] is not None]
    assert [e["custom_id"] for e in refused] == REFUSED
    bodies = {r["custom_id"]: r["body"] for r in REQUESTS if isinstance(r, dict) and "custom_id" in r}
    for line in refused:
        status, _, want = route.post("/v1/embeddings", bodies[line["custom_id"]])
        assert 400 <= status < 500
        assert (line["response"]["status_code"], line["response"]["body"]) == (status, want)
        assert line["error"] is None


def test_lines_that_are_no_request_are_error_lines_with_the_reason(job):
    out, _ = job
    errors = [e for e in read_jsonl_lines(out / "errors.jsonl") if e["response"] is None]
    assert {e["error"]["line"]: (e["custom_id"], e["error"]["code"]) for e in errors} == NOT_REQUESTS
    assert all(e["error"]["message"] for e in errors)


def test_the_progress_bar_says_the_workers_load_the_model_before_the_first_answers(job):
    _, proc = job
    bar = proc.stderr.replace("\r", "\n")
    first = bar.index("loading the model (1 worker)")
    assert "0/16" in bar[first:].splitlines()[0]
    assert "16/16" in bar[first:], bar[-2000:]


def test_every_line_is_accounted_for_once(job, ray_serve):
    import ray

    out, proc = job
    lines = read_jsonl_lines(out / "output.jsonl") + read_jsonl_lines(out / "errors.jsonl")
    assert len(lines) == len(REQUESTS)
    assert len({line["id"] for line in lines}) == len(REQUESTS)
    assert len({line["response"]["request_id"] for line in lines if line["response"]}) == len(REQUESTS) - len(NOT_REQUESTS)
    assert f"{len(REQUESTS)} requests in, {len(ANSWERED)} answered" in proc.stdout
    assert f"{len(REQUESTS) - len(ANSWERED)} errors" in proc.stdout
    # The CLI ran on a Ray of its own (none was given), not on this test session's.
    assert {m["node_id"] for m in manifests(out)}.isdisjoint({ray.get_runtime_context().get_node_id()})
