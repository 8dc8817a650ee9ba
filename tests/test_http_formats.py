"""Every extension encoding_format, derived from the same vector as the float output."""

from __future__ import annotations

import numpy as np
import pytest

from models.postprocess import quantize_int8

pytestmark = pytest.mark.integration

TEXTS = ["a cat sat on the mat", "quantum chromodynamics", "embedding servers batch requests"]


def embed(service, **extra):
    status, headers, body = service.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": TEXTS, **extra})
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def scales(service):
    _, _, models = service.get("/v1/models")
    card = next(m for m in models["data"] if m["id"].endswith("MiniLM-L6-v2"))
    return {s["dimensions"]: s["scale"] for s in card["int8_scales"]}


@pytest.mark.parametrize("dims", [None, 128])
def test_int8_and_uint8_follow_the_published_scale(service, scales, dims):
    extra = {} if dims is None else {"dimensions": dims}
    floats = np.array([d["embedding"] for d in embed(service, **extra)["data"]], dtype=np.float32)
    scale = scales[dims or 384]
    int8 = np.array([d["embedding"] for d in embed(service, encoding_format="int8", **extra)["data"]])
    uint8 = np.array([d["embedding"] for d in embed(service, encoding_format="uint8", **extra)["data"]])
    np.testing.assert_array_equal(int8, quantize_int8(floats, scale))
    np.testing.assert_array_equal(uint8, int8 + 128)
    assert int8.min() >= -127 and int8.max() <= 127 and uint8.min() >= 1 and uint8.max() <= 255


@pytest.mark.parametrize("fmt,offset", [("ubinary", 0), ("binary", 128)])
def test_binary_formats_are_the_packed_float_signs(service, fmt, offset):
    floats = np.array([d["embedding"] for d in embed(service)["data"]])
    packed = np.array([d["embedding"] for d in embed(service, encoding_format=fmt)["data"]]) + offset
    assert packed.shape == (3, 48)
    bits = np.unpackbits(packed.astype(np.uint8), axis=1).astype(bool)
    np.testing.assert_array_equal(bits, floats > 0)


def test_normalize_false_returns_the_raw_pooled_vector(service):
    raw = np.array([d["embedding"] for d in embed(service, normalize=False)["data"]])
    unit = np.array([d["embedding"] for d in embed(service)["data"]])
    assert np.linalg.norm(raw, axis=1).min() > 1.01  # MiniLM's pooled vectors are longer than 1
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)


def test_stage_timings_are_response_headers(service):
    status, headers, _ = service.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "timings"})
    lower = {k.lower(): v for k, v in headers.items()}
    for stage in ("tokenize", "queue", "inference", "total"):
        assert float(lower[f"x-{stage}-time"]) >= 0
