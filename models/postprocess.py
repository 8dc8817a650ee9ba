"""After pooling: Matryoshka truncation, re-normalization and output encodings. Pure numpy.

The engine hands over full-dimension pooled vectors (not normalized); everything a request
can ask for is derived here, so one cached vector serves every `dimensions` and format.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, replace

import numpy as np

from models.errors import InvalidInput, InvalidOption
from models.pooling import l2_normalize
from models.specs import ModelSpec


class EncodingFormat(str, enum.Enum):
    FLOAT = "float"
    BASE64 = "base64"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"

    @property
    def is_bits(self) -> bool:
        return self in (EncodingFormat.BINARY, EncodingFormat.UBINARY)

    @property
    def is_bytes(self) -> bool:
        return self in (EncodingFormat.INT8, EncodingFormat.UINT8)


@dataclass(frozen=True)
class OutputOptions:
    dimensions: int | None = None  # None: the model's full dimension
    encoding_format: EncodingFormat = EncodingFormat.FLOAT
    normalize: bool = True


def parse_format(value: str) -> EncodingFormat:
    try:
        return EncodingFormat(value)
    except ValueError:
        allowed = ", ".join(f.value for f in EncodingFormat)
        raise InvalidOption(
            f"'{value}' is not a valid encoding_format. Use one of: {allowed}.",
            param="encoding_format",
        ) from None


def validate_options(spec: ModelSpec, opts: OutputOptions) -> int:
    """Check the options against the model; returns the output dimension count."""
    if spec.task != "embed":  # a cross-encoder's outputs are scores, not vectors (the bulk job asks here too)
        raise InvalidInput(f"The model '{spec.id}' is a {spec.task} model, not an embedding model: it makes no "
                           "embeddings.", param="model", code="wrong_model_task")
    dims = spec.dimension if opts.dimensions is None else opts.dimensions
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= spec.dimension:
        raise InvalidOption(
            f"dimensions must be an integer from 1 to {spec.dimension} for {spec.id}; got {opts.dimensions!r}.",
            param="dimensions",
        )
    if not spec.allows_dimensions(dims):
        sizes = ", ".join(map(str, spec.matryoshka_dims or ()))
        raise InvalidOption(
            f"{spec.id} supports dimensions {sizes}; got {dims}.", param="dimensions"
        )
    if opts.encoding_format.is_bits and dims % 8:
        raise InvalidOption(
            f"encoding_format '{opts.encoding_format.value}' packs 8 dimensions a byte: "
            f"dimensions must be a multiple of 8; got {dims}.",
            param="dimensions",
        )
    if opts.encoding_format.is_bytes and not opts.normalize:
        raise InvalidOption(
            f"encoding_format '{opts.encoding_format.value}' is calibrated for unit vectors: "
            "it needs normalize=true.",
            param="encoding_format",
        )
    return dims


def truncate(vectors: np.ndarray, dims: int, normalize: bool = True) -> np.ndarray:
    """The first `dims` components, re-normalized to unit length when `normalize`."""
    cut = vectors[:, :dims]
    return l2_normalize(cut) if normalize else np.array(cut, copy=True)


def quantize_int8(vectors: np.ndarray, scale: float) -> np.ndarray:
    """Symmetric int8: 0 stays 0, q = clip(round(x * 127 / scale), -127, 127)."""
    return np.clip(np.rint(vectors * (127.0 / scale)), -127, 127).astype(np.int8)


def quantize_uint8(vectors: np.ndarray, scale: float) -> np.ndarray:
    """int8 shifted by +128: compare with Euclidean distance (an offset breaks dot products)."""
    return (quantize_int8(vectors, scale).astype(np.int16) + 128).astype(np.uint8)


def dequantize_int8(q: np.ndarray, scale: float) -> np.ndarray:
    return q.astype(np.float32) * (scale / 127.0)


def pack_ubinary(vectors: np.ndarray) -> np.ndarray:
    """One bit a dimension, 1 where the component is > 0, packed big-endian into uint8."""
    return np.packbits(vectors > 0, axis=-1)


def pack_binary(vectors: np.ndarray) -> np.ndarray:
    """The ubinary bytes minus 128, as int8 (sentence-transformers' `binary` rule)."""
    return (pack_ubinary(vectors).astype(np.int16) - 128).astype(np.int8)


def to_base64(vectors: np.ndarray) -> list[str]:
    """Little-endian float32 bytes, no header: what the `openai` client decodes."""
    le = np.ascontiguousarray(vectors, dtype="<f4")
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in le]


def postprocess(
    pooled: np.ndarray, spec: ModelSpec, opts: OutputOptions, int8_scales: dict[int, float] | None = None
) -> np.ndarray | list[str]:
    """Full-dimension pooled vectors -> what the request asked for."""
    return postprocess_many(pooled, spec, opts, (opts.encoding_format,), int8_scales)[opts.encoding_format]


def postprocess_many(
    pooled: np.ndarray,
    spec: ModelSpec,
    opts: OutputOptions,
    formats: tuple[EncodingFormat, ...],
    int8_scales: dict[int, float] | None = None,
) -> dict[EncodingFormat, np.ndarray | list[str]]:
    """The same vectors in several formats: truncated and normalized once, then encoded
    once per format (`opts.encoding_format` is ignored; `formats` says which)."""
    dims = 0
    for fmt in formats:  # every format checked before any work
        dims = validate_options(spec, replace(opts, encoding_format=fmt))
    vectors = truncate(np.asarray(pooled, dtype=np.float32), dims, opts.normalize)
    return {fmt: encode_as(vectors, fmt, dims, int8_scales) for fmt in formats}


def encode_as(
    vectors: np.ndarray, fmt: EncodingFormat, dims: int, int8_scales: dict[int, float] | None = None
) -> np.ndarray | list[str]:
    """Truncated (and normalized) float vectors in one output format."""
    if fmt is EncodingFormat.FLOAT:
        return vectors
    if fmt is EncodingFormat.BASE64:
        return to_base64(vectors)
    if fmt is EncodingFormat.UBINARY:
        return pack_ubinary(vectors)
    if fmt is EncodingFormat.BINARY:
        return pack_binary(vectors)
    scale = int8_scale_for(int8_scales, dims)
    return quantize_int8(vectors, scale) if fmt is EncodingFormat.INT8 else quantize_uint8(vectors, scale)


def int8_scale_for(int8_scales: dict[int, float] | None, dims: int) -> float:
    if not int8_scales or dims not in int8_scales:
        raise InvalidOption(
            f"no int8 scale was calibrated for dimensions={dims}; re-export the model.",
            param="dimensions",
        )
    return int8_scales[dims]
