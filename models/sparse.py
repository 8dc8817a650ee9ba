"""Sparse (SPLADE-style) embeddings: a masked-language model's logits pooled into one weight per
vocabulary token, as sentence-transformers' `SparseEncoder` (MLMTransformer + SpladePooling) does.

    weight[v] = max over the text's tokens t of log(1 + relu(logits[t, v]))      (pooling "max")
              = sum over the text's tokens t of log(1 + relu(logits[t, v]))      (pooling "sum")
    activation "log1p_relu": log(1 + .) once more on each token's weight, before pooling
    (OpenSearch's models).

Padding never counts (SpladePooling masks it to 0 before relu, which is what leaving it out gives:
every weight is >= 0). For "max", log1p is monotone, so the max is taken over the raw logits and
log1p applied once per vocabulary entry, not once per (token, entry): no temporary the size of the
logits [batch, tokens, vocab] is made.

A text's vector is its non-zero entries (`SparseVector`): `indices` ascending (the order of a
coalesced torch sparse tensor, which `SparseEncoder.encode` gives, and the order
text-embeddings-inference answers in), `values` beside them. `top_k` keeps only the k largest
weights (sentence-transformers' `max_active_dims`), still in index order.

Tokenize -> run -> pool, like models.encoder, with the same batching and sessions; knows nothing
of Ray, HTTP or caches. A run's logits take tokens x vocab x 4 bytes (250 MB at the default budget
of 2048 padded tokens and BERT's 30522 entries): they are pooled in place, row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from models.artifacts import ModelArtifacts
from models.backends import open_session
from models.run_planner import DEFAULT_COST, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, plan_batches
from models.encoder import EncodeStats, RunDone, run_planned
from models.errors import ArtifactsMissing, InvalidOption
from models.specs import ModelSpec
from models.tokenizer import TextTokenizer, Truncate
from models.variants import VARIANTS

TASK = "sparse"
STRATEGIES = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")
# What a sparse model runs: ONNX Runtime's graphs only (the MLM logits are [batch, tokens, 30522]:
# OpenVINO's variants are not measured for them). `auto` takes the fused graph when it was built.
SPARSE_VARIANTS = ("optimized", "fp32")


@dataclass(frozen=True)
class SpladeConfig:
    strategy: str = "max"
    activation: str = "relu"

    @classmethod
    def of(cls, spec: ModelSpec) -> "SpladeConfig":
        d = spec.extra.get("splade") or {}
        return cls(d.get("strategy", "max"), d.get("activation", "relu"))


@dataclass(frozen=True)
class SparseVector:
    indices: np.ndarray  # int64, ascending: vocabulary ids with a weight > 0
    values: np.ndarray  # float32, beside them

    def as_pairs(self) -> list[dict]:
        """text-embeddings-inference's shape: [{index, value}, ...]."""
        return [{"index": int(i), "value": float(v)} for i, v in zip(self.indices, self.values)]


def splade_pool(logits: np.ndarray, mask: np.ndarray, cfg: SpladeConfig = SpladeConfig()) -> np.ndarray:
    """logits (b, t, vocab) and mask (b, t), right-padded -> weights (b, vocab), float32."""
    b, _, vocab = logits.shape
    lengths = mask.sum(axis=1).astype(int)
    out = np.empty((b, vocab), dtype=np.float32)
    for row in range(b):
        real = logits[row, : lengths[row]]  # a view: right padding is the tail
        if cfg.strategy == "max":
            if len(real):
                np.max(real, axis=0, out=out[row])
                np.maximum(out[row], 0, out=out[row])
            else:
                out[row] = 0
            np.log1p(out[row], out=out[row])
            if cfg.activation == "log1p_relu":  # monotone: after the max as before it
                np.log1p(out[row], out=out[row])
        else:  # per token, then summed: one temporary of the row's real tokens
            act = np.log1p(np.maximum(real, 0))
            if cfg.activation == "log1p_relu":
                np.log1p(act, out=act)
            out[row] = act.sum(axis=0)
    return out


def sparsify(weights: np.ndarray, top_k: int | None = None) -> SparseVector:
    """One row of weights -> its non-zero entries in index order, the `top_k` largest only if given
    (ties at the cut: the lower index is kept, as a stable sort keeps it)."""
    idx = np.flatnonzero(weights > 0)
    if top_k is not None and len(idx) > top_k:
        keep = np.argsort(-weights[idx], kind="stable")[:top_k]
        idx = np.sort(idx[keep])
    return SparseVector(idx.astype(np.int64), weights[idx].astype(np.float32))


def check_top_k(top_k: int | None, param: str = "top_k") -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidOption(f"{param} must be a positive whole number (the most weights kept per text).", param=param)


def pick_variant(artifacts: ModelArtifacts, asked: str = "auto") -> str:
    exported = artifacts.manifest["variants"]
    if asked == "auto":
        return next(v for v in SPARSE_VARIANTS if v in exported)
    if asked not in SPARSE_VARIANTS:
        raise ArtifactsMissing(f"{artifacts.spec.id} is a sparse model: it runs {' or '.join(SPARSE_VARIANTS)}, not {asked}.")
    artifacts.variant(asked)  # raises if not exported
    return asked


class SparseModel:
    """A sparse model ready to run: texts -> SparseVector per text."""

    def __init__(
        self,
        spec: ModelSpec,
        artifacts: ModelArtifacts,
        variant: str = "auto",
        providers: list[str] | str = "auto",
        intra_op_threads: int = 0,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ):
        self.spec, self.artifacts = spec, artifacts
        self.config = SpladeConfig.of(spec)
        self.tokenizer = TextTokenizer(artifacts.tokenizer_path, spec)
        self.variant = pick_variant(artifacts, variant)
        self.session = open_session(artifacts.onnx_path(self.variant), VARIANTS[self.variant],
                                    providers=providers, threads=intra_op_threads)
        self.max_batch_size, self.max_batch_tokens = max_batch_size, max_batch_tokens
        self.vocab = Tokenizer.from_file(str(artifacts.tokenizer_path))  # id -> token string

    @classmethod
    def from_artifact_dir(cls, spec: ModelSpec, artifact_dir, **kw) -> "SparseModel":
        return cls(spec, ModelArtifacts.load(artifact_dir, spec), **kw)

    @property
    def checksum(self) -> str:
        return self.artifacts.checksum(self.variant)

    def tokenize(self, texts: list[str], truncate: Truncate = Truncate.END, prompt: str = "") -> list[np.ndarray]:
        return self.tokenizer.encode(texts, truncate, prompt)

    def weights_ids(self, seqs: list[np.ndarray], stats: EncodeStats | None = None) -> list[np.ndarray]:
        """Per sequence, its dense weight row (float32, vocab wide), in input order."""
        return self._run(seqs, lambda w: w, stats)

    def encode_ids(self, seqs: list[np.ndarray], top_k: int | None = None,
                   stats: EncodeStats | None = None, each: RunDone | None = None) -> list[SparseVector]:
        """Per sequence, its sparse vector, in input order; `each(indices, vectors)` hears of
        each run's vectors as soon as the run is done."""
        return self._run(seqs, lambda w: sparsify(w, top_k), stats, each)

    def _run(self, seqs: list[np.ndarray], finish, stats: EncodeStats | None, each: RunDone | None = None) -> list:
        out: list = [None] * len(seqs)
        if not seqs:
            return out
        plan = plan_batches([len(s) for s in seqs], self.max_batch_size, self.max_batch_tokens, DEFAULT_COST)

        def pool(logits: np.ndarray, mask: np.ndarray) -> list:  # each run's rows finished as it ends
            return [finish(w) for w in splade_pool(logits, mask, self.config)]

        for batch, rows in run_planned(self.session, seqs, plan, self.spec.pad_token_id, pool, stats, each=each):
            for i, row in zip(batch, rows):
                out[i] = row
        return out

    def encode(self, texts: list[str], top_k: int | None = None, truncate: Truncate = Truncate.END,
               prompt: str = "") -> list[SparseVector]:
        check_top_k(top_k)
        return self.encode_ids(self.tokenize(texts, truncate, prompt), top_k)

    def tokens(self, indices: np.ndarray) -> list[str]:
        """The vocabulary's strings for these ids (the keys Elasticsearch / OpenSearch rank features take)."""
        return [self.vocab.id_to_token(int(i)) or "" for i in indices]

    def describe(self) -> dict:
        return {"variant": self.variant, **self.session.describe(), "task": TASK,
                "splade": {"strategy": self.config.strategy, "activation": self.config.activation}}
