"""The OpenAI embeddings wire format. Fields in the order of OpenAI's reference; our
extensions are fenced off below them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

EmbeddingInput = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
INPUT_SHAPES = "a string, an array of strings, or token ids (an array of integers, or of arrays of integers)"


def _kind(x: object) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, int):
        return "an integer"
    if isinstance(x, float):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list):
        return "an array"
    return "an object"


def input_shape_problem(value: object) -> str | None:
    """Why `value` is none of the shapes `input` may take, said plainly (pydantic's own message
    for a union names its first member: "Invalid 'input.str'"); None when it is one of them."""
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return f"input is {_kind(value)}; it must be {INPUT_SHAPES}."
    if not value:
        return None  # the pipeline says "must not be empty"
    first = _kind(value[0])
    if first not in ("a string", "an integer", "an array"):
        return f"input[0] is {first}; input must be {INPUT_SHAPES}."
    for i, x in enumerate(value):
        if _kind(x) != first:
            return f"input[{i}] is {_kind(x)} while input[0] is {first}; input must be {INPUT_SHAPES}."
        if first == "an array":
            bad = next((j for j, y in enumerate(x) if _kind(y) != "an integer"), None)
            if bad is not None:
                return f"input[{i}][{bad}] is {_kind(x[bad])}; an array of arrays must hold token ids (integers)."
    return None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: EmbeddingInput = Field(
        ...,
        description="Text, array of texts, array of token ids, or array of arrays of token ids (1-2048 items).",
    )
    model: StrictStr = Field(..., description="Model id or alias, as listed by GET /v1/models.")
    encoding_format: StrictStr = Field(
        "float", description="float, base64; extensions: int8, uint8, binary, ubinary (integer lists)."
    )
    dimensions: StrictInt | None = Field(None, description="Matryoshka truncation to this many dimensions.")
    user: StrictStr | None = Field(None, description="End-user id (accepted, not used).")

    # --- embedserve extensions -------------------------------------------------------
    normalize: StrictBool = Field(True, description="Return unit-length vectors.")
    truncate: Literal["end", "start", "none", "window"] = Field(
        "end",
        description="Inputs over the model's maximum length: cut the end, cut the start, fail, or embed them "
        "whole in overlapping windows pooled into one vector (see window_tokens in GET /v1/models).",
    )
    input_type: StrictStr | None = Field(
        None,
        description="search_document, search_query, classification, clustering (or another prompt name the model "
        "declares): puts the model's prompt for it before each text. None: the plain text.",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value):
        problem = input_shape_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str | list[int]
    index: int
    # --- embedserve extension --------------------------------------------------------
    windows: int | None = Field(None, description="With truncate=window: the windows this input took.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Int8Scale(BaseModel):
    dimensions: int
    scale: float


class Fidelity(BaseModel):
    """Fields an older export did not measure are absent."""

    min_cos: float | None = Field(None, description="Least cosine to sentence-transformers fp32 over the fidelity texts.")
    mean_cos: float | None = None
    top10_kept: float | None = Field(None, description="Share of the fp32 top-10 neighbours kept on held-out texts.")
    texts: int | None = None
    long_texts: int | None = Field(None, description="Fidelity texts that fill the model's window (truncated).")
    precision: str | None = Field(None, description="The precision that ran when this was measured.")
    measured_at: str | None = Field(None, description="export, or load (measured again on this CPU).")
    # --- a rerank model (a cross-encoder): its scores against CrossEncoder.predict ------------
    max_abs_diff: float | None = Field(None, description="Rerank: largest |score - CrossEncoder.predict's score|.")
    ranking_equal: bool | None = Field(None, description="Rerank: every query's documents ranked as CrossEncoder ranks them.")
    pairs: int | None = Field(None, description="Rerank: query-document pairs measured (over-long documents included).")


class CpuInfo(BaseModel):
    model: str
    cores: int
    features: list[str] = Field(description="Inference-relevant CPU flags (avx512_bf16, amx_bf16, ...).")
    bf16: bool = Field(description="Whether the CPU has bf16 matrix units.")


class EngineInfo(BaseModel):
    variant: str
    backend: Literal["onnxruntime", "openvino"]
    version: str
    device: str
    precision: str = Field(description="What actually runs: fp32, bf16 or int8.")
    threads: int | None
    streams: int
    cpu: CpuInfo
    choice: str = Field(description="Why this variant runs (the auto rule, or asked for by name).")
    fidelity: Fidelity | None


class VariantInfo(BaseModel):
    variant: str
    backend: str
    precision: str
    fidelity: Fidelity | None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "embedserve"
    # --- embedserve extensions -------------------------------------------------------
    aliases: list[str]
    task: str = Field("embed", description="What the model is for: embed (dense vectors: /v1/embeddings, /v2/embed), rerank (a cross-encoder: /v2/rerank, /v1/rerank; dimension: its labels) or sparse (SPLADE: /embed_sparse, /v1/embeddings/sparse; dimension: its vocabulary).")
    dimension: int
    max_input_tokens: int
    matryoshka_dimensions: list[int] | Literal["any"]
    matryoshka_trained: bool
    pooling: str = Field("mean", description="How token states become one vector: mean, cls, last, max, weightedmean, mean_sqrt_len_tokens.")
    dense_layers: list[str] = Field(default_factory=list, description="Dense layers after pooling (in->out activation).")
    normalized_by_model: bool = Field(True, description="Whether the model itself ends in Normalize (vectors are unit length unless normalize=false).")
    architecture: str | None = Field(None, description="The transformers architecture of a user's model.")
    similarity: str = Field("cosine", description="The model's similarity function (sentence-transformers).")
    user_model: bool = Field(False, description="Exported from a user's folder (embedserve export PATH).")
    variant: str
    int8_scale_rule: str
    int8_scales: list[Int8Scale]
    quality: dict = Field(default_factory=dict, description="Share of float top-10 neighbours each option keeps.")
    engine: EngineInfo | None = Field(None, description="What runs the model here.")
    variants: list[VariantInfo] = Field(default_factory=list, description="Every exported variant and its measured fidelity.")
    prompts: dict[str, str] = Field(default_factory=dict, description="Input type -> the prompt put before the text.")
    input_types: list[str] = Field(
        default_factory=list,
        description="What input_type may be. With no prompts declared (prompts_declared false), every type embeds the plain text.",
    )
    prompts_declared: bool = False
    window_tokens: int = Field(0, description="truncate=window: tokens in one window, special tokens and prompt included.")
    window_overlap_tokens: int = Field(0, description="truncate=window: tokens two neighbouring windows share.")
    max_windows_per_text: int = Field(0, description="truncate=window: most windows one text may take.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class TokenizeRequest(BaseModel):
    model: StrictStr
    input: StrictStr | list[StrictStr]
    input_type: StrictStr | None = Field(
        None, description="As on /v1/embeddings: the model's prompt for it comes before each text, in the tokens too."
    )


class TokenizeResponse(BaseModel):
    model: str
    tokens: list[list[int]] = Field(description="As the model reads them (truncate end): prompt and special tokens included.")
    counts: list[int] = Field(description="Tokens of each input after truncation to max_input_tokens.")
    truncated: list[bool] = Field(description="Whether an input was longer than max_input_tokens and was cut.")
    max_input_tokens: int
