"""Bad input gets the right status and OpenAI's error JSON, and the service answers normally after."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
LONG = "word " * 400

# (name, body (dict or raw bytes), status, error param or None)
CASES = [
    ("input missing", {"model": M}, 400, "input"),
    ("model missing", {"input": "x"}, 400, "model"),
    ("input a number", {"model": M, "input": 42}, 400, "input"),
    ("input null", {"model": M, "input": None}, 400, "input"),
    ("input an object", {"model": M, "input": {"text": "x"}}, 400, "input"),
    ("input mixed types", {"model": M, "input": ["a", 1]}, 400, "input"),
    ("input list of floats", {"model": M, "input": [1.5, 2.5]}, 400, "input"),
    ("input nested too deep", {"model": M, "input": [[[1]]]}, 400, "input"),
    ("empty string", {"model": M, "input": ""}, 400, "input"),
    ("empty string in list", {"model": M, "input": ["ok", ""]}, 400, "input"),
    ("empty list", {"model": M, "input": []}, 400, "input"),
    ("empty token list", {"model": M, "input": [[]]}, 400, "input"),
    ("too many inputs", {"model": M, "input": ["x"] * 2049}, 400, "input"),
    ("too long with truncate none", {"model": M, "input": LONG, "truncate": "none"}, 400, "input"),
    ("bad truncate", {"model": M, "input": "x", "truncate": "middle"}, 400, "truncate"),
    ("token ids (refused by default)", {"model": M, "input": [101, 7592, 102]}, 400, "input"),
    ("dimensions zero", {"model": M, "input": "x", "dimensions": 0}, 400, "dimensions"),
    ("dimensions negative", {"model": M, "input": "x", "dimensions": -1}, 400, "dimensions"),
    ("dimensions above the model's", {"model": M, "input": "x", "dimensions": 385}, 400, "dimensions"),
    ("dimensions a string", {"model": M, "input": "x", "dimensions": "64"}, 400, "dimensions"),
    ("dimensions a float", {"model": M, "input": "x", "dimensions": 64.5}, 400, "dimensions"),
    ("binary with dimensions not /8", {"model": M, "input": "x", "encoding_format": "binary", "dimensions": 100}, 400, "dimensions"),
    ("unknown encoding_format", {"model": M, "input": "x", "encoding_format": "float16"}, 400, "encoding_format"),
    ("int8 without normalization", {"model": M, "input": "x", "encoding_format": "int8", "normalize": False}, 400, "encoding_format"),
    ("normalize not a bool", {"model": M, "input": "x", "normalize": "yes"}, 400, "normalize"),
    ("unknown model", {"model": "text-embedding-3-small", "input": "x"}, 404, "model"),
    ("model not a string", {"model": 7, "input": "x"}, 400, "model"),
    ("malformed JSON", b'{"model": "all-MiniLM-L6-v2", "input": ', 400, None),
    ("not JSON at all", b"\xff\xfe garbage", 400, None),
    ("JSON array body", b"[1, 2, 3]", 400, None),
    ("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, 400, None),
    ("oversize payload", json.dumps({"model": M, "input": "x" * (9 << 20)}).encode(), 413, None),
]


@pytest.mark.parametrize("name,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_status_and_openai_error(service, name, body, status, param):
    got, headers, err = service.post("/v1/embeddings", body)
    assert got == status, err
    assert set(err) == {"error"}
    e = err["error"]
    assert set(e) == {"message", "type", "param", "code"}
    assert isinstance(e["message"], str) and len(e["message"]) > 10
    assert e["code"] is None or isinstance(e["code"], str)
    if param is not None:
        assert e["param"] == param


def test_unknown_route_is_a_404_in_the_same_shape(service):
    status, _, err = service.get("/v1/nothing-here")
    assert status == 404 and set(err["error"]) == {"message", "type", "param", "code"}


def test_service_answers_normally_after_the_bad_inputs(service):
    for _, body, _, _ in CASES[:5]:
        service.post("/v1/embeddings", body)
    status, _, ok = service.post("/v1/embeddings", {"model": M, "input": ["still fine"]})
    assert status == 200 and len(ok["data"][0]["embedding"]) == 384
