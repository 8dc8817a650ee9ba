"""Sparse (SPLADE) embeddings for every front door (HTTP /embed_sparse and /v1/embeddings/sparse,
gRPC SparseService.EmbedSparse), on a job the admission check passed (serving.api.admission:
model, inputs, top_k, prompt): tokenize -> the model's continuous batcher
(by tokens, length-sorted runs; models.sparse) -> prune to top_k -> token strings on request.

Sparse models run in the ingress replica (whatever `encoder_placement` says) and are not cached: a
vector is a few hundred (index, value) pairs, not a fixed-size row. Knows nothing of HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from models.artifacts import ModelArtifacts
from models.continuous_batcher import ContinuousBatcher
from models.run_planner import round_tokens
from models.encoder import EncodeStats
from models.prompts import accepted_input_types, prompt_table
from models.sparse import SPARSE_VARIANTS, SparseModel, SparseVector, sparsify
from models.specs import ModelSpec
from models.tokenizer import Truncate
from serving.pipeline.runtime import Admitted


@dataclass(frozen=True)
class SparseJob:
    """The internal sparse request every front door builds."""

    model: str
    texts: list[str]
    truncate: Truncate = Truncate.END
    input_type: str | None = None  # picks the model's prompt (models.prompts); None: the plain text
    top_k: int | None = None  # keep the k largest weights per text (None: all)
    return_tokens: bool = False  # the vocabulary strings beside the indices


@dataclass
class SparseOutcome:
    model_id: str
    vectors: list[SparseVector]  # indices ascending
    tokens: list[list[str]] | None
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0
    cache_hits: int = 0  # sparse vectors are not cached


class LocalSparse:
    """One sparse model in this process, behind a continuous batcher."""

    def __init__(self, spec: ModelSpec, artifacts: ModelArtifacts, *, variant: str = "auto", prompts: dict | None = None,
                 max_batch_tokens: int = 2048, batch_wait_s: float = 0.0, **engine):
        self.model = SparseModel(spec, artifacts, variant=variant if variant in SPARSE_VARIANTS else "auto",
                                 max_batch_tokens=max_batch_tokens, **engine)
        self.prompts = prompt_table(spec.prompts, artifacts.prompts, prompts)
        self.batcher = ContinuousBatcher(self._round, round_tokens(max_batch_tokens), batch_wait_s)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def _round(self, seqs: list[np.ndarray], each=None) -> tuple[list[SparseVector], EncodeStats]:
        stats = EncodeStats()
        return self.model.encode_ids(seqs, stats=stats, each=each), stats


def describe_sparse(local: LocalSparse) -> dict:
    """A sparse model's /v1/models card (and gRPC ListModels entry): dimension is the vocabulary."""
    spec, cfg = local.spec, local.model.config
    return {
        "id": spec.id, "aliases": list(spec.aliases), "task": "sparse", "dimension": spec.dimension,
        "max_input_tokens": spec.max_seq_length, "matryoshka_dimensions": [], "matryoshka_trained": False,
        "pooling": f"splade {cfg.strategy} {cfg.activation}", "dense_layers": [], "normalized_by_model": False,
        "architecture": spec.architecture or None, "similarity": "dot", "user_model": spec.user,
        "variant": local.model.variant, "int8_scale_rule": "", "int8_scales": [], "quality": {}, "engine": None,
        "variants": [{"variant": name, "backend": info.get("backend", "onnxruntime"), "precision": info.get("precision", "fp32"),
                      "fidelity": None} for name, info in local.model.artifacts.manifest["variants"].items()],
        "prompts": dict(local.prompts), "input_types": accepted_input_types(local.prompts),
        "prompts_declared": bool(local.prompts), "window_tokens": 0, "window_overlap_tokens": 0, "max_windows_per_text": 0,
    }


class SparseService:
    def __init__(self, models: dict[str, LocalSparse], in_flight):
        self.models = models
        self.in_flight = in_flight  # shared with the dense pipeline: one bound on requests in flight

    async def embed(self, admitted: Admitted) -> SparseOutcome:
        """An admitted SparseJob (serving.api.admission), within the service's bound on requests in flight."""
        job, local, prompt = admitted.job, admitted.runtime, admitted.prompt
        with self.in_flight:
            t0 = time.perf_counter()
            if len(job.texts) <= 8 and sum(len(t) for t in job.texts) <= 64 * 1024:
                seqs = local.model.tokenize(job.texts, job.truncate, prompt)
            else:  # a big request is tokenized off the event loop, as the dense pipeline does
                seqs = await asyncio.to_thread(local.model.tokenize, job.texts, job.truncate, prompt)
            t1 = time.perf_counter()
            vectors, info = await local.batcher.submit(seqs)
            t2 = time.perf_counter()
            if job.top_k is not None:
                vectors = [v if len(v.indices) <= job.top_k else sparsify(dense_row(v, local.spec.dimension), job.top_k)
                           for v in vectors]
            tokens = [local.model.tokens(v.indices) for v in vectors] if job.return_tokens else None
            t3 = time.perf_counter()
            timings = {"tokenize": t1 - t0, "queue": max(t2 - t1 - info.inference_s, 0.0),
                       "inference": info.inference_s, "postprocess": t3 - t2, "total": t3 - t0}
            return SparseOutcome(local.spec.id, vectors, tokens, sum(len(s) for s in seqs), timings, info.texts)


def dense_row(v: SparseVector, width: int) -> np.ndarray:
    row = np.zeros(width, dtype=np.float32)
    row[v.indices] = v.values
    return row
