"""Bad input on Cohere's route gets the right status and Cohere's error JSON, {"message": ...},
and the service answers normally after."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
OK = {"model": M, "texts": ["x"], "input_type": "search_query"}
LONG = "word " * 400
HUGE = "word " * 20_000  # 20,000 tokens: more windows than the default limit of 64


def body(**changes) -> dict:
    out = {**OK, **changes}
    return {k: v for k, v in out.items() if v is not ...}


# (name, body (dict or raw bytes), status)
CASES = [
    ("texts and inputs missing", body(texts=...), 400),
    ("model missing", body(model=...), 400),
    ("texts a string", body(texts="x"), 400),
    ("texts a number", body(texts=42), 400),
    ("texts with a number", body(texts=["a", 1]), 400),
    ("texts empty", body(texts=[]), 400),
    ("empty string", body(texts=["ok", ""]), 400),
    ("too many texts", body(texts=["x"] * 2049), 400),
    ("texts and inputs both", body(inputs=[{"content": [{"type": "text", "text": "x"}]}]), 400),
    ("inputs with an image", body(texts=..., inputs=[{"content": [{"type": "image_url", "image_url": {"url": "data:"}}]}]), 400),
    ("inputs without content", body(texts=..., inputs=[{"content": []}]), 400),
    ("inputs not objects", body(texts=..., inputs=["x"]), 400),
    ("images", body(texts=..., images=["data:image/png;base64,AAAA"]), 400),
    ("unknown input_type", body(input_type="search_everything"), 400),
    ("input_type image", body(input_type="image"), 400),
    ("input_type a number", body(input_type=3), 400),
    ("unknown embedding type", body(embedding_types=["float16"]), 400),
    ("embedding types empty", body(embedding_types=[]), 400),
    ("embedding types a string", body(embedding_types="float"), 400),
    ("truncate lower case", body(truncate="end"), 400),
    ("truncate unknown", body(truncate="MIDDLE"), 400),
    ("too long with truncate NONE", body(texts=[LONG], truncate="NONE"), 400),
    ("more windows than the limit", body(texts=[HUGE], truncate="WINDOW"), 400),
    ("output_dimension zero", body(output_dimension=0), 400),
    ("output_dimension above the model's", body(output_dimension=385), 400),
    ("output_dimension a string", body(output_dimension="64"), 400),
    ("binary with output_dimension not /8", body(embedding_types=["float", "binary"], output_dimension=100), 400),
    ("max_tokens below the model's", body(max_tokens=16), 400),
    ("unknown model", body(model="embed-english-v3.0"), 404),
    ("model not a string", body(model=7), 400),
    ("malformed JSON", b'{"model": "all-MiniLM-L6-v2", "texts": ', 400),
    ("JSON array body", b"[1, 2, 3]", 400),
    ("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, 400),
    ("oversize payload", json.dumps(body(texts=["x" * (9 << 20)])).encode(), 413),
]


@pytest.mark.parametrize("name,request_body,status", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_status_and_cohere_error(service, name, request_body, status):
    got, _, err = service.post("/v2/embed", request_body)
    assert got == status, err
    assert set(err) == {"message"}, err
    assert isinstance(err["message"], str) and len(err["message"]) > 10


def test_too_many_windows_is_refused_before_any_work(service):
    before = service.get("/stats")[2]["encoded_texts"]
    status, _, err = service.post("/v2/embed", body(texts=["fine", HUGE], truncate="WINDOW"))
    assert status == 400 and "input[1]" in err["message"] and "64 windows" in err["message"]
    assert service.get("/stats")[2]["encoded_texts"] == before


def test_service_answers_normally_after_the_bad_inputs(service):
    for _, request_body, _ in CASES[:5]:
        service.post("/v2/embed", request_body)
    status, _, ok = service.post("/v2/embed", body(texts=["still fine"]))
    assert status == 200 and len(ok["embeddings"]["float"][0]) == 384
