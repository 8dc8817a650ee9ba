"""What the pipeline holds per served model (`ModelRuntime`: spec, tokenizer, prompts, windows, cache
key spaces), what it takes (`Admitted`: a job that passed serving.api.admission, with what serves
it) and how it reaches the encoders (`EncodeFn`, giving back `Encoded`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, NamedTuple

import numpy as np

from models.artifacts import ModelArtifacts
from models.continuous_batcher import RoundInfo
from models.prompts import prompt_table
from models.specs import ModelSpec
from models.tokenizer import TextTokenizer, Truncate
from models.windows import DEFAULT_MAX_WINDOWS, DEFAULT_WINDOW_OVERLAP, pool_windows
from serving.pipeline.cache import KeySpace


class Encoded(NamedTuple):
    """What an encoder call gives back."""

    vectors: np.ndarray  # pooled, full-dimension, in the order of the call's sequences
    info: RoundInfo  # the round they were computed in
    revision: str  # the model version that computed them: the checksum of the ONNX file it ran


# (model key, token id arrays) -> Encoded
EncodeFn = Callable[[str, list[np.ndarray]], Awaitable[Encoded]]


@dataclass
class ModelRuntime:
    """What the ingress holds per served model: spec, tokenizer, prompts, scales, long-text
    windows and cache key space."""

    spec: ModelSpec
    artifacts: ModelArtifacts
    variant: str
    tokenizer: TextTokenizer
    prompts: dict[str, str] = field(default_factory=dict)  # input type -> prompt (models.prompts)
    window_overlap: int = DEFAULT_WINDOW_OVERLAP
    max_windows: int = DEFAULT_MAX_WINDOWS
    _spaces: dict = field(default_factory=dict, repr=False, compare=False)  # (truncate, prompt) -> KeySpace

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        artifacts: ModelArtifacts,
        variant: str,
        prompts: dict[str, str] | None = None,
        window_overlap: int = DEFAULT_WINDOW_OVERLAP,
        max_windows: int = DEFAULT_MAX_WINDOWS,
    ) -> "ModelRuntime":
        """`prompts` (the service setting) add to and override the spec's and the manifest's."""
        artifacts.variant(variant)  # raises if that variant was not exported
        tokenizer = TextTokenizer(artifacts.tokenizer_path, spec)
        if tokenizer.content_size() <= window_overlap:
            raise ValueError(f"window overlap {window_overlap} leaves no room in {spec.id}'s window")
        table = prompt_table(spec.prompts, artifacts.prompts, prompts)
        return cls(spec, artifacts, variant, tokenizer, table, window_overlap, max_windows)

    def units(self, texts: list[str], truncate: Truncate, prompt: str = "") -> list[list[np.ndarray]]:
        """Per text, the sequences the model reads: one, or a long text's windows."""
        if truncate is Truncate.WINDOW:
            return self.tokenizer.windows(texts, self.window_overlap, self.max_windows, prompt)
        return [[s] for s in self.tokenizer.encode(texts, truncate, prompt)]

    def keyspace(self, truncate: Truncate, prompt: str = "") -> KeySpace:
        """Made once per (truncation, prompt): its prefix is a hash of its fields."""
        space = self._spaces.get((truncate, prompt))
        if space is None:
            # "none" apart from "end": a hit is not tokenized again, so a text too long for
            # truncate none must never find the vector its truncated self left under "end".
            side = {Truncate.START: "start", Truncate.NONE: "none",
                    Truncate.WINDOW: f"window/{self.window_overlap}/{self.max_windows}"}.get(truncate, "end")
            space = self._spaces[(truncate, prompt)] = KeySpace(
                model_id=self.spec.id,
                revision=self.artifacts.checksum(self.variant),
                variant=self.variant,
                pooling=self.spec.pooling,
                normalize=False,  # the cache holds pooled vectors; normalization comes after
                max_length=self.spec.max_seq_length,
                truncation_side=side,
                prompt=prompt,
            )
        return space


def pool_units(vectors: np.ndarray, units: list[list[np.ndarray]]) -> np.ndarray:
    """One vector per unit from one per sequence: a long text's windows pooled back together."""
    if sum(len(u) for u in units) == len(units):
        return vectors
    return pool_windows(vectors, [len(s) for u in units for s in u], [len(u) for u in units])


@dataclass(frozen=True)
class Admitted:
    """A job that passed the admission check (serving.api.admission.admit), with what serves it:
    the pipeline runs it without checking it again."""

    job: Any  # EmbedJob, RerankJob or SparseJob
    runtime: Any  # a ModelRuntime (dense, rerank), or a sparse model's serving.pipeline.sparse.LocalSparse
    prompt: str = ""  # the input_type's prompt, put before each text
