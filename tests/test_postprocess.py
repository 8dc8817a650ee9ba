"""After pooling: Matryoshka truncation, base64, int8/uint8, binary/ubinary, and typed errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from models.errors import InvalidOption
from models.pooling import l2_normalize
from models.postprocess import (
    EncodingFormat,
    OutputOptions,
    dequantize_int8,
    pack_binary,
    pack_ubinary,
    parse_format,
    postprocess,
    postprocess_many,
    quantize_int8,
    quantize_uint8,
    to_base64,
    truncate,
)
from models.specs import MINILM_L6_V2, ModelSpec, PackagedWeights

RNG = np.random.default_rng(0)
POOLED = RNG.normal(size=(20, 384)).astype(np.float32) * 3  # pooled vectors are not unit length
SCALES = {d: 0.3 for d in range(1, 385)}


def test_truncate_gives_unit_vectors_equal_to_the_first_d_dims_renormalized():
    for d in (8, 64, 128, 383):
        out = truncate(POOLED, d)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
        expected = POOLED[:, :d] / np.linalg.norm(POOLED[:, :d], axis=1, keepdims=True)
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_normalize_false_keeps_the_raw_first_d_dims():
    out = postprocess(POOLED, MINILM_L6_V2, OutputOptions(dimensions=10, normalize=False))
    np.testing.assert_array_equal(out, POOLED[:, :10])


def test_base64_decodes_with_numpy_to_the_float_output():
    floats = postprocess(POOLED, MINILM_L6_V2, OutputOptions(dimensions=100))
    b64 = postprocess(POOLED, MINILM_L6_V2, OutputOptions(dimensions=100, encoding_format=EncodingFormat.BASE64))
    decoded = np.vstack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in b64])
    np.testing.assert_array_equal(decoded, floats)


def test_int8_is_symmetric_zero_stays_zero_and_values_stay_in_range():
    unit = l2_normalize(POOLED)
    q = quantize_int8(unit, 0.2)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert quantize_int8(np.zeros((1, 4), np.float32), 0.2).tolist() == [[0, 0, 0, 0]]
    assert quantize_int8(np.array([[0.2, -0.2, 0.1]], np.float32), 0.2).tolist() == [[127, -127, 64]]


def test_uint8_is_int8_plus_128():
    unit = l2_normalize(POOLED)
    np.testing.assert_array_equal(quantize_uint8(unit, 0.2).astype(int), quantize_int8(unit, 0.2).astype(int) + 128)


def test_dequantized_int8_is_within_half_a_step_where_not_clipped():
    unit = l2_normalize(POOLED)
    scale = float(np.abs(unit).max())
    err = np.abs(dequantize_int8(quantize_int8(unit, scale), scale) - unit)
    assert err.max() <= scale / 127 / 2 + 1e-7


def test_int8_output_uses_the_scale_calibrated_for_that_dimension_count():
    scales = {384: 0.5, 64: 0.1}
    full = postprocess(POOLED, MINILM_L6_V2, OutputOptions(encoding_format=EncodingFormat.INT8), scales)
    cut = postprocess(POOLED, MINILM_L6_V2, OutputOptions(64, EncodingFormat.INT8), scales)
    np.testing.assert_array_equal(full, quantize_int8(l2_normalize(POOLED), 0.5))
    np.testing.assert_array_equal(cut, quantize_int8(truncate(POOLED, 64), 0.1))


@pytest.mark.parametrize("precision,ours", [("binary", pack_binary), ("ubinary", pack_ubinary)])
def test_binary_packing_matches_sentence_transformers(precision, ours):
    unit = l2_normalize(POOLED)
    np.testing.assert_array_equal(ours(unit), quantize_embeddings(unit, precision=precision))


def test_ubinary_bits_are_the_float_signs():
    unit = l2_normalize(POOLED)
    bits = np.unpackbits(pack_ubinary(unit), axis=1)
    np.testing.assert_array_equal(bits.astype(bool), unit > 0)


def test_base64_is_little_endian_float32_without_header():
    v = np.array([[1.0, -2.5]], np.float32)
    assert base64.b64decode(to_base64(v)[0]) == b"\x00\x00\x80?\x00\x00 \xc0"


BAD_OPTIONS = [
    (OutputOptions(dimensions=0), "dimensions"),
    (OutputOptions(dimensions=385), "dimensions"),
    (OutputOptions(dimensions=-3), "dimensions"),
    (OutputOptions(dimensions=12, encoding_format=EncodingFormat.BINARY), "dimensions"),
    (OutputOptions(dimensions=20, encoding_format=EncodingFormat.UBINARY), "dimensions"),
    (OutputOptions(encoding_format=EncodingFormat.INT8, normalize=False), "encoding_format"),
]


@pytest.mark.parametrize("opts,param", BAD_OPTIONS)
def test_bad_options_raise_the_typed_error(opts, param):
    with pytest.raises(InvalidOption) as err:
        postprocess(POOLED, MINILM_L6_V2, opts, SCALES)
    assert err.value.param == param and err.value.message


def test_unknown_format_raises_the_typed_error():
    with pytest.raises(InvalidOption, match="encoding_format"):
        parse_format("float16")


def test_a_model_with_fixed_matryoshka_sizes_refuses_others():
    spec = ModelSpec(
        id="x/mrl", aliases=("mrl",), revision="1", dimension=256, max_seq_length=128, pooling="mean",
        normalize=True, weights=PackagedWeights("x"), matryoshka_dims=(64, 128, 256), matryoshka_trained=True,
    )
    postprocess(POOLED[:, :256], spec, OutputOptions(dimensions=128))
    with pytest.raises(InvalidOption, match="64, 128, 256"):
        postprocess(POOLED[:, :256], spec, OutputOptions(dimensions=100))


def test_several_formats_from_one_pass_equal_each_format_alone():
    formats = tuple(EncodingFormat)
    opts = OutputOptions(dimensions=128)
    many = postprocess_many(POOLED, MINILM_L6_V2, opts, formats, SCALES)
    assert list(many) == list(formats)
    for fmt in formats:
        alone = postprocess(POOLED, MINILM_L6_V2, OutputOptions(128, fmt), SCALES)
        if fmt is EncodingFormat.BASE64:
            assert many[fmt] == alone
        else:
            np.testing.assert_array_equal(many[fmt], alone)


def test_several_formats_are_all_checked_before_any_work():
    with pytest.raises(InvalidOption) as info:
        postprocess_many(POOLED, MINILM_L6_V2, OutputOptions(100), (EncodingFormat.FLOAT, EncodingFormat.UBINARY), SCALES)
    assert info.value.param == "dimensions"
