"""The OpenAI embeddings wire format. Fields in the order of OpenAI's reference; our
extensions are fenced off below them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

EmbeddingInput = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


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
    truncate: Literal["end", "start", "none"] = Field(
        "end", description="Inputs over the model's maximum length: cut the end, cut the start, or fail."
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str | list[int]
    index: int


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
    min_cos: float = Field(description="Least cosine to sentence-transformers fp32 over the fidelity texts.")
    mean_cos: float
    top10_kept: float = Field(description="Share of the fp32 top-10 neighbours kept on held-out texts.")
    texts: int
    long_texts: int = Field(description="Fidelity texts that fill the model's window (truncated).")
    precision: str = Field(description="The precision that ran when this was measured.")
    measured_at: str = Field(description="export, or load (measured again on this CPU).")


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
    dimension: int
    max_input_tokens: int
    matryoshka_dimensions: list[int] | Literal["any"]
    matryoshka_trained: bool
    variant: str
    int8_scale_rule: str
    int8_scales: list[Int8Scale]
    quality: dict = Field(default_factory=dict, description="Share of float top-10 neighbours each option keeps.")
    engine: EngineInfo | None = Field(None, description="What runs the model here.")
    variants: list[VariantInfo] = Field(default_factory=list, description="Every exported variant and its measured fidelity.")


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


class TokenizeResponse(BaseModel):
    model: str
    tokens: list[list[int]]
    counts: list[int]
