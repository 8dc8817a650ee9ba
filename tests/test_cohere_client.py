"""The unmodified `cohere` client (`ClientV2(base_url=...)`) against the running service: every
embedding type, several from one pass, output_dimension, the truncate modes, `inputs`, meta and
timing headers, and its errors."""

from __future__ import annotations

import base64
import uuid

import cohere
import numpy as np
import pytest

from models.variant_fidelity import cosines
from tests.support.engine import fidelity_texts, reference_model

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
TYPES = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
LONG = " ".join(sorted(fidelity_texts(), key=len)[-2:])  # ~2,000 tokens: a start and an end about different things


@pytest.fixture(scope="module")
def co(service):
    return cohere.ClientV2(api_key="unused", base_url=service.http_url, timeout=300, log_warning_experimental_features=False)


@pytest.fixture(scope="module")
def texts():
    t = fidelity_texts()
    return t[:12] + t[-4:]  # short ones and long ones


def unique(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"cohere route {tag} text {i}" for i in range(n)]


def openai_route(service, texts, **extra) -> list:
    status, _, body = service.post("/v1/embeddings", {"model": M, "input": texts, **extra})
    assert status == 200, body
    return [d["embedding"] for d in body["data"]]


def as_array(kind: str, values) -> np.ndarray:
    if kind == "base64":
        return np.array([np.frombuffer(base64.b64decode(v), dtype="<f4") for v in values])
    return np.array(values)


def test_float_embeddings_are_sentence_transformers_vectors(co, texts):
    resp = co.embed(model=M, texts=texts, input_type="search_document", embedding_types=["float"])
    ref = reference_model(M).encode(texts, normalize_embeddings=True)
    assert cosines(np.array(resp.embeddings.float_), ref).min() >= 0.9999
    assert resp.texts == texts and resp.response_type == "embeddings_by_type" and resp.id


@pytest.mark.parametrize("kind", TYPES)
def test_every_embedding_type_matches_the_openai_route(co, service, texts, kind):
    resp = co.embed(model=M, texts=texts, input_type="search_query", embedding_types=[kind])
    got = as_array(kind, getattr(resp.embeddings, "float_" if kind == "float" else kind))
    fmt = "float" if kind == "base64" else kind
    want = np.array(openai_route(service, texts, encoding_format=fmt))
    assert got.shape == want.shape
    if kind in ("float", "base64"):
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)
    others = [t for t in TYPES if t != kind]
    assert all(getattr(resp.embeddings, "float_" if t == "float" else t) is None for t in others)


def test_several_types_come_from_one_model_pass(co, service):
    batch = unique(5)
    before = service.get("/stats")[2]["encoded_texts"]
    several = co.embed(model=M, texts=batch, input_type="search_document", embedding_types=TYPES)
    assert service.get("/stats")[2]["encoded_texts"] - before == 5  # each text reached the model once
    for kind in TYPES:
        alone = co.embed(model=M, texts=batch, input_type="search_document", embedding_types=[kind])
        name = "float_" if kind == "float" else kind
        a, b = getattr(several.embeddings, name), getattr(alone.embeddings, name)
        if kind in ("float", "base64"):
            np.testing.assert_allclose(as_array(kind, a), as_array(kind, b), atol=1e-6)
        else:
            assert a == b


@pytest.mark.parametrize("dims", [64, 256])
def test_output_dimension_truncates_every_type(co, service, texts, dims):
    resp = co.embed(model=M, texts=texts[:4], input_type="clustering", embedding_types=["float", "int8", "ubinary"],
                    output_dimension=dims)
    assert np.array(resp.embeddings.float_).shape == (4, dims)
    np.testing.assert_allclose(np.array(resp.embeddings.float_), openai_route(service, texts[:4], dimensions=dims), atol=1e-6)
    assert resp.embeddings.int8 == openai_route(service, texts[:4], dimensions=dims, encoding_format="int8")
    assert np.array(resp.embeddings.ubinary).shape == (4, dims // 8)


@pytest.mark.parametrize("mode", ["END", "START"])
def test_truncate_end_and_start_cut_like_the_openai_route(co, service, mode):
    resp = co.embed(model=M, texts=[LONG, "short"], input_type="search_query", truncate=mode)
    want = openai_route(service, [LONG, "short"], truncate=mode.lower())
    np.testing.assert_allclose(np.array(resp.embeddings.float_), want, atol=1e-6)
    other = openai_route(service, [LONG], truncate="start" if mode == "END" else "end")
    assert cosines(np.array(resp.embeddings.float_[:1]), np.array(other)).max() < 0.999  # the cut side matters


def test_truncate_none_refuses_a_long_text_and_embeds_a_short_one(co):
    with pytest.raises(cohere.BadRequestError) as info:
        co.embed(model=M, texts=["short", LONG], input_type="search_query", truncate="NONE")
    assert set(info.value.body) == {"message"} and "input[1]" in info.value.body["message"]
    ok = co.embed(model=M, texts=["short"], input_type="search_query", truncate="NONE")
    assert len(ok.embeddings.float_[0]) == 384


def test_inputs_with_text_content_embed_like_texts(co):
    batch = ["first input", "second input"]
    by_inputs = co.embed(
        model=M, input_type="search_document", inputs=[{"content": [{"type": "text", "text": t}]} for t in batch]
    )
    by_texts = co.embed(model=M, input_type="search_document", texts=batch)
    np.testing.assert_allclose(np.array(by_inputs.embeddings.float_), np.array(by_texts.embeddings.float_), atol=1e-6)


def test_billed_tokens_and_timing_headers_match_the_openai_route(service):
    batch = ["hello world", "a"]
    status, headers, body = service.post("/v2/embed", {"model": M, "texts": batch, "input_type": "search_query"})
    assert status == 200, body
    assert body["meta"]["api_version"]["version"] == "2"
    assert body["meta"]["billed_units"]["input_tokens"] == 4 + 3
    names = {k.lower() for k in headers}
    for h in ("x-tokenize-time", "x-cache-time", "x-queue-time", "x-inference-time", "x-postprocess-time",
              "x-total-time", "x-cache-hits", "x-batch-size"):
        assert h in names, h


def test_the_second_model_is_served_on_the_cohere_route_too(co, texts):
    resp = co.embed(model="all-mpnet-base-v2", texts=texts[:6], input_type="search_document")
    ref = reference_model("all-mpnet-base-v2").encode(texts[:6], normalize_embeddings=True)
    assert cosines(np.array(resp.embeddings.float_), ref).min() >= 0.9999


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"model": "embed-english-v3.0"}, cohere.NotFoundError),
        ({"embedding_types": ["float16"]}, cohere.BadRequestError),
        ({"input_type": "image"}, cohere.BadRequestError),
        ({"output_dimension": 1024}, cohere.BadRequestError),
        ({"truncate": "MIDDLE"}, cohere.BadRequestError),
        ({"texts": ["ok", ""]}, cohere.BadRequestError),
        ({"images": ["data:image/png;base64,AAAA"], "texts": None}, cohere.BadRequestError),
    ],
    ids=["unknown model", "unknown type", "image input type", "dimension too big", "bad truncate", "empty text",
         "images"],
)
def test_the_client_raises_its_own_errors_with_cohere_bodies(co, kwargs, error):
    call = {"model": M, "texts": ["ok"], "input_type": "search_query", **kwargs}
    if call["texts"] is None:
        del call["texts"]
    with pytest.raises(error) as info:
        co.embed(**call)
    assert set(info.value.body) == {"message"} and len(info.value.body["message"]) > 10
