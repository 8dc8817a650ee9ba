"""The encoder: tokenize -> run the ONNX graph -> pool. Knows nothing of Ray, HTTP or caches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.artifacts import ModelArtifacts
from models.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, plan_batches
from models.pooling import pool
from models.postprocess import OutputOptions, postprocess
from models.session import EncoderSession, create_session
from models.specs import ModelSpec
from models.tokenizer import TextTokenizer, Truncate


@dataclass
class EncodeStats:
    """What one `encode` call did, for metrics and timing headers."""

    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    inference_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


def pad_batch(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest row: (input_ids, attention_mask), both int64."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask


class Encoder:
    def __init__(
        self,
        spec: ModelSpec,
        artifacts: ModelArtifacts,
        variant: str = "optimized",
        providers: list[str] | str = "auto",
        intra_op_threads: int = 0,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ):
        self.spec = spec
        self.artifacts = artifacts
        self.variant = variant
        self.tokenizer = TextTokenizer(artifacts.tokenizer_path, spec)
        self.session = EncoderSession(create_session(artifacts.onnx_path(variant), providers, intra_op_threads))
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_artifact_dir(cls, spec: ModelSpec, artifact_dir: Path, **kw) -> "Encoder":
        return cls(spec, ModelArtifacts.load(artifact_dir, spec), **kw)

    @property
    def checksum(self) -> str:
        return self.artifacts.checksum(self.variant)

    def tokenize(self, texts: list[str], truncate: Truncate = Truncate.END) -> list[np.ndarray]:
        return self.tokenizer.encode(texts, truncate)

    def encode_ids(self, seqs: list[np.ndarray], stats: EncodeStats | None = None) -> np.ndarray:
        """Pooled full-dimension vectors (float32, not normalized), in input order."""
        out = np.empty((len(seqs), self.spec.dimension), dtype=np.float32)
        lengths = [len(s) for s in seqs]
        for batch in plan_batches(lengths, self.max_batch_size, self.max_batch_tokens):
            ids, mask = pad_batch([seqs[i] for i in batch], self.spec.pad_token_id)
            t0 = time.perf_counter()
            hidden = self.session.run(ids, mask)
            out[batch] = pool(self.spec.pooling, hidden, mask)
            if stats is not None:
                stats.inference_s += time.perf_counter() - t0
                stats.batches += 1
                stats.tokens += int(mask.sum())
                stats.padded_tokens += mask.size
                stats.batch_sizes.append(len(batch))
        return out

    def embed(
        self, texts: list[str], opts: OutputOptions = OutputOptions(), truncate: Truncate = Truncate.END
    ):
        """Texts -> vectors as `opts` asks (unit-length float32 by default)."""
        pooled = self.encode_ids(self.tokenize(texts, truncate))
        return postprocess(pooled, self.spec, opts, self.artifacts.int8_scales)
