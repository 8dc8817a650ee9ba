"""Bounded fuzzing on loopback: the HTTP API from the committed openapi.json (schemathesis,
valid and invalid requests) and the gRPC request decoder (random and mutated bytes). No 5xx,
no INTERNAL / UNKNOWN, and the service answers normally afterwards.

EMBEDSERVE_FUZZ_EXAMPLES raises the number of cases (`make soak` does)."""

from __future__ import annotations

import os
import random
from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from serving.grpc_gen import embedding_pb2 as pb
from tests.support.service import ROOT

pytestmark = pytest.mark.integration

import schemathesis  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

M = "all-MiniLM-L6-v2"
EXAMPLES = int(os.environ.get("EMBEDSERVE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # wall time on a shared 2-core machine says nothing; timeouts bound each call
    derandomize=True,  # the same cases every run (CI), widened by EMBEDSERVE_FUZZ_EXAMPLES
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

SCHEMA = schemathesis.openapi.from_path(str(ROOT / "openapi.json"))


def http_fuzz(service, mode: GenerationMode, seen: Counter):
    @FUZZ
    @given(case=SCHEMA.as_strategy(generation_mode=mode), served=st.booleans())
    def run(case, served):
        if served and isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
            case.body["model"] = M  # half the valid cases reach the encoders, not just a 404
        resp = case.call(base_url=service.http_url, timeout=30)
        seen[(case.method, case.path, resp.status_code)] += 1
        assert resp.status_code < 500, f"{case.method} {case.path} -> {resp.status_code}: {resp.text[:300]}\n{case.as_curl_command()}"
        if resp.status_code >= 400:
            body = resp.json()
            if case.path in ("/v2/embed", "/v2/rerank"):  # Cohere's routes answer in Cohere's shape
                assert set(body) == {"message"} and isinstance(body["message"], str), body
            else:
                assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_http_api_fuzzed_from_openapi_has_no_5xx(service, mode):
    seen: Counter = Counter()
    http_fuzz(service, mode, seen)
    print(f"schemathesis {schemathesis.__version__} {mode.value}: {sum(seen.values())} requests;",
          dict(Counter(f"{m} {p} {s}" for (m, p, s), n in seen.items() for _ in range(n))))
    assert sum(seen.values()) >= min(EXAMPLES, 50)
    assert service.post("/v1/embeddings", {"model": M, "input": "after fuzzing"})[0] == 200


# ---- gRPC request decoder ------------------------------------------------------------------

SEEDS = [
    pb.EmbedRequest(model=M, texts=["hello", "world"]).SerializeToString(),
    pb.EmbedRequest(model=M, texts=["x"], dimensions=64, encoding_format=pb.ENCODING_FORMAT_INT8,
                    normalize=True, truncate=pb.TRUNCATE_START, chunk_size=3).SerializeToString(),
    pb.EmbedRequest(model="all-mpnet-base-v2", texts=["a somewhat longer text " * 5]).SerializeToString(),
]
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "tag", "varint"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "tag":  # a field number / wire type the message does not have
            data[pos:pos] = bytes([draw(st.integers(0, 255)), draw(st.integers(0, 255))])
        else:  # a length or varint that runs past the end
            data[pos:pos] = b"\x12\xff\xff\xff\xff\x0f"
    return bytes(data)


@st.composite
def bad_utf8(draw) -> bytes:
    """texts (field 2) holding bytes that are not UTF-8."""
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"]))
    return pb.EmbedRequest(model=M).SerializeToString() + b"\x12" + bytes([len(junk)]) + junk


def grpc_fuzz(service, strategy, seen: Counter):
    with service.grpc_channel() as channel:
        raw = channel.unary_unary(
            "/embedserve.v1.EmbeddingService/Embed", request_serializer=None, response_deserializer=None
        )

        @FUZZ
        @given(data=strategy)
        def run(data: bytes):
            try:
                raw(data, metadata=service.grpc_metadata, timeout=30)
                seen["OK"] += 1
            except grpc.RpcError as err:
                seen[err.code().name] += 1
                assert err.code() not in BAD_CODES, f"{err.code()} {err.details()!r} for {data[:80]!r}"

        run()
        good = raw(SEEDS[0], metadata=service.grpc_metadata, timeout=30)
        assert pb.EmbedResponse.FromString(good).data[1].index == 1


@pytest.mark.parametrize(
    "strategy",
    [st.binary(max_size=512), mutated(), bad_utf8()],
    ids=["random bytes", "mutated EmbedRequest", "invalid UTF-8 text"],
)
def test_grpc_decoder_fuzzed_is_never_internal_or_unknown(service, strategy):
    seen: Counter = Counter()
    grpc_fuzz(service, strategy, seen)
    print(f"gRPC fuzz: {sum(seen.values())} messages: {dict(seen)}")


def test_service_is_healthy_after_fuzzing(service):
    status, _, body = service.get("/ready")
    assert status == 200, body
    rnd = random.Random(7)
    text = "".join(chr(rnd.randrange(32, 0x2FFF)) for _ in range(200))
    assert service.post("/v1/embeddings", {"model": M, "input": text})[0] == 200
