"""Hostile input beyond tests/test_http_errors.py's table: broken Unicode, control characters,
integers past int64, huge and deep bodies, oversize headers, the limits on /tokenize and gRPC.
Each gets a clear 4xx (or, where the text is merely odd, a normal answer), never a 5xx, and
the service keeps answering."""

from __future__ import annotations

import http.client
import json
import threading
import time

import grpc
import pytest

from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
EMB = "/v1/embeddings"
OPENAI_ERROR = {"message", "type", "param", "code"}

# (name, path, raw body or JSON-able body, expected status)
CASES = [
    # A JSON escape that decodes to half a UTF-16 pair: not Unicode, cannot be UTF-8 encoded.
    ("lone surrogate", EMB, b'{"model": "%s", "input": "bad \\ud800 text"}' % M.encode(), 400),
    ("lone low surrogate in a list", EMB, b'{"model": "%s", "input": ["fine", "\\udfff"]}' % M.encode(), 400),
    ("lone surrogate in the model", EMB, b'{"model": "\\ud800", "input": "x"}', 400),
    ("lone surrogate to /tokenize", "/tokenize", b'{"model": "%s", "input": "\\udbff"}' % M.encode(), 400),
    ("invalid UTF-8 inside a string", EMB, b'{"model": "%s", "input": "\xc3\x28 \xff"}' % M.encode(), 400),
    ("overlong UTF-8 encoding", EMB, b'{"model": "%s", "input": "\xc0\xaf"}' % M.encode(), 400),
    ("raw control character in a string", EMB, b'{"model": "%s", "input": "a\x07b"}' % M.encode(), 400),
    ("token id 2**63", EMB, {"model": M, "input": [101, 2**63, 102]}, 400),
    ("token id 2**64", EMB, {"model": M, "input": [[101, 2**64 + 5, 102]]}, 400),
    ("token id -2**63-1", EMB, {"model": M, "input": [101, -(2**63) - 1, 102]}, 400),
    ("token id out of vocabulary in a list of lists", EMB, {"model": M, "input": [[101, 102], [101, 30522, 102]]}, 400),
    ("token id a bool", EMB, {"model": M, "input": [101, True, 102]}, 400),
    ("2049 token lists", EMB, {"model": M, "input": [[101, 102]] * 2049}, 400),
    ("2049 inputs to /tokenize", "/tokenize", {"model": M, "input": ["x"] * 2049}, 400),
    ("integer of 5000 digits", EMB, b'{"model": "%s", "input": [%s]}' % (M.encode(), b"9" * 5000), 400),
    ("dimensions 1e400", EMB, b'{"model": "%s", "input": "x", "dimensions": 1e400}' % M.encode(), 400),
    ("dimensions NaN", EMB, b'{"model": "%s", "input": "x", "dimensions": NaN}' % M.encode(), 400),
    ("dimensions 2**70", EMB, {"model": M, "input": "x", "dimensions": 2**70}, 400),
    ("deeply nested object", EMB, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    ("nested arrays as input", EMB, b'{"model": "%s", "input": %s}' % (M.encode(), b"[" * 900 + b"1" + b"]" * 900), 400),
    ("10 MB string", EMB, json.dumps({"model": M, "input": "a" * 10_000_000}).encode(), 413),
    ("10 MB to /tokenize", "/tokenize", json.dumps({"model": M, "input": "a" * 10_000_000}).encode(), 413),
    ("model name of 1 MB", EMB, {"model": "m" * 1_000_000, "input": "x"}, 404),
    ("empty body", EMB, b"", 400),
    ("JSON null body", EMB, b"null", 400),
    ("JSON string body", EMB, b'"input"', 400),
]


def check_error(status, body, expected):
    assert status == expected, body
    assert set(body) == {"error"} and set(body["error"]) == OPENAI_ERROR, body
    assert isinstance(body["error"]["message"], str) and len(body["error"]["message"]) > 10
    assert len(body["error"]["message"]) < 2000, "the error echoes too much of the input"


@pytest.mark.parametrize("name,path,body,status", CASES, ids=[c[0] for c in CASES])
def test_hostile_body_gets_a_clear_4xx(service, name, path, body, status):
    got, _, err = service.post(path, body)
    check_error(got, err, status)


@pytest.mark.parametrize(
    "text",
    ["\u0000", "nul\u0000inside", "\u001b[31mred\u001b[0m", "\u0007\u0008\u007f", "\u202eevil\u202c", "\ufeff\u200b\u200d", " \t\r\n "],
    ids=["NUL", "NUL inside", "ANSI escapes", "BEL BS DEL", "bidi override", "BOM and zero-width", "whitespace only"],
)
def test_odd_but_valid_text_is_embedded(service, text):
    """Control and format characters are valid Unicode text: embedded like any other (the
    tokenizer drops what it has no token for), on /tokenize too."""
    status, _, body = service.post(EMB, {"model": M, "input": [text, "plain"]})
    assert status == 200, body
    assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 384
    status, _, body = service.post("/tokenize", {"model": M, "input": text})
    assert status == 200, body


def test_chunked_body_over_the_limit_is_a_413(service):
    """No Content-Length to check up front: the limit holds while the body streams in."""
    host, port = service.http_url.split("//")[1].split("/")[0].split(":")
    prefix = service.http_url.split(f":{port}", 1)[1]
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunk = b'{"model": "%s", "input": "' % M.encode() + b"a" * (1 << 20)

    def body():
        yield chunk
        for _ in range(9):
            yield b"a" * (1 << 20)
        yield b'"}'

    try:
        conn.request("POST", prefix + EMB, body=body(), headers={"content-type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
    except (BrokenPipeError, ConnectionResetError):
        status, data = 413, b'{"error": {"message": "connection closed while sending", "type": "", "param": null, "code": null}}'
    finally:
        conn.close()
    check_error(status, json.loads(data), 413)


def test_oversize_headers_are_no_5xx(service):
    for headers in ({"x-junk": "h" * 100_000}, {"authorization": "Bearer " + "k" * 60_000}):
        status, _, body = service.post(EMB, {"model": M, "input": "x"}, headers=headers)
        assert status < 500, (status, body)
    assert service.post(EMB, {"model": M, "input": "x"})[0] == 200


def test_big_text_does_not_stall_the_ingress(service):
    """A single text just under the payload limit takes seconds to tokenize; meanwhile other
    callers (and the probes) are still answered promptly."""
    big = {"model": M, "input": "word " * 1_500_000}  # 7.5 MB, under the 8 MiB limit
    done = {}

    def send_big():
        done["status"] = service.post(EMB, big, timeout=120)[0]

    t = threading.Thread(target=send_big)
    t.start()
    time.sleep(0.5)  # let it arrive and start tokenizing
    latencies = []
    while t.is_alive() and len(latencies) < 10:
        t0 = time.monotonic()
        status, _, _ = service.get("/health", timeout=30)
        latencies.append(time.monotonic() - t0)
        assert status == 200
        time.sleep(0.2)
    t.join(120)
    assert done.get("status") == 200
    print(f"/health latencies while a 7.5 MB text was embedded: {[round(x, 2) for x in latencies]}")
    assert max(latencies, default=0) < 1.0, latencies


# ---- gRPC ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stub(service):
    with service.grpc_channel() as channel:
        yield pbg.EmbeddingServiceStub(channel), service.grpc_metadata


@pytest.mark.parametrize(
    "name,request_,code",
    [
        ("2049 texts", pb.EmbedRequest(model=M, texts=["x"] * 2049), grpc.StatusCode.INVALID_ARGUMENT),
        ("no texts", pb.EmbedRequest(model=M), grpc.StatusCode.INVALID_ARGUMENT),
        ("an empty text", pb.EmbedRequest(model=M, texts=["ok", ""]), grpc.StatusCode.INVALID_ARGUMENT),
        ("dimensions 2**32-1", pb.EmbedRequest(model=M, texts=["x"], dimensions=2**32 - 1), grpc.StatusCode.INVALID_ARGUMENT),
        ("dimensions 0", pb.EmbedRequest(model=M, texts=["x"], dimensions=0), grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown encoding_format", pb.EmbedRequest(model=M, texts=["x"], encoding_format=99), grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown truncate", pb.EmbedRequest(model=M, texts=["x"], truncate=-7), grpc.StatusCode.INVALID_ARGUMENT),
        ("too long, truncate none", pb.EmbedRequest(model=M, texts=["word " * 400], truncate=pb.TRUNCATE_NONE), grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown model", pb.EmbedRequest(model="m" * 100_000, texts=["x"]), grpc.StatusCode.NOT_FOUND),
        # HTTP's max_payload_bytes (8 MiB) holds on gRPC too (Ray's gRPC proxy itself takes up to 2 GiB).
        ("message over max_payload_bytes", pb.EmbedRequest(model=M, texts=["a" * (9 << 20)]), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_grpc_hostile_request_gets_a_clear_code(stub, name, request_, code):
    s, md = stub
    with pytest.raises(grpc.RpcError) as info:
        s.Embed(request_, metadata=md, timeout=60)
    assert info.value.code() == code, info.value.details()
    assert info.value.details() and len(info.value.details()) < 2000


def test_grpc_still_answers_after_the_hostile_requests(stub):
    s, md = stub
    resp = s.Embed(pb.EmbedRequest(model=M, texts=["\u0000 still fine \u202e"]), metadata=md, timeout=60)
    assert len(resp.data) == 1 and len(resp.data[0].values) == 384
