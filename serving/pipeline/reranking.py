"""Rerank through the same pipeline as embeddings: the bound on requests in flight, the served
model's runtime (both the job and its runtime come admitted: serving.api.admission), and
the encoders reached by `Pipeline.encode_missing` (length-sorted chunks into the continuous
batcher: a pair is one sequence, models.rerank). Scores get the model's own activation here.

Cached like embeddings, in the same cache: one entry per (model, query, document) in a key space
that names everything else that changes the score (the model's revision and variant, its
maximum length, max_tokens_per_doc). An entry holds the pair's logits (before the activation,
as the embedding cache holds vectors before normalization) and its token count, so a hit is
neither tokenized nor run. Hits skip the model; misses are scored and stored in the background;
a failing cache (Redis down) is only a miss. Knows nothing of HTTP, gRPC or Ray."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from models.rerank import PairTokenizer, activate, rank
from serving.pipeline.cache import KeySpace
from serving.pipeline.embed import Pipeline
from serving.pipeline.in_flight import Ticket
from serving.pipeline.runtime import Admitted, ModelRuntime


@dataclass(frozen=True)
class RerankJob:
    """The internal rerank request every front door builds."""

    model: str
    query: str
    documents: list[str]
    top_n: int | None = None
    max_tokens_per_doc: int | None = None


@dataclass
class RerankOutcome:
    model_id: str
    scores: np.ndarray  # per document, in input order: (n,) for one label, (n, labels) else
    order: list[int]  # document indices, best first, top_n of them
    prompt_tokens: int  # every token the model read (the pairs, special tokens included)
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0
    cache_hits: int = 0  # documents answered from the cache (metrics and the x-cache-hits header)


_PAIR_TOKENIZERS: dict[tuple[str, str], PairTokenizer] = {}


def pair_tokenizer(rt: ModelRuntime) -> PairTokenizer:
    """One per served model (and tokenizer file), made on first use."""
    key = (rt.spec.key, str(rt.artifacts.tokenizer_path))
    tok = _PAIR_TOKENIZERS.get(key)
    if tok is None:
        tok = _PAIR_TOKENIZERS[key] = PairTokenizer(rt.artifacts.tokenizer_path, rt.spec)
    return tok


_KEY_SPACES: dict[tuple, KeySpace] = {}
PAIR_EXTRA = 1  # after a pair's logits in its cache entry: its token count


def rerank_keyspace(rt: ModelRuntime, max_tokens_per_doc: int | None) -> KeySpace:
    """The cache key space of a served cross-encoder's pairs at one max_tokens_per_doc."""
    revision = rt.artifacts.checksum(rt.variant)
    key = (rt.spec.key, rt.variant, revision, max_tokens_per_doc)
    space = _KEY_SPACES.get(key)
    if space is None:
        space = _KEY_SPACES[key] = KeySpace(
            model_id=rt.spec.id, revision=revision, variant=rt.variant,
            pooling="cross-encoder-logits",  # not a pooled vector: never an embedding's key space
            normalize=False, max_length=rt.spec.max_seq_length,
            truncation_side=f"longest_first/max_tokens_per_doc={max_tokens_per_doc}",
        )
    return space


async def rerank(pipeline: Pipeline, admitted: Admitted) -> RerankOutcome:
    """An admitted RerankJob (serving.api.admission), within the pipeline's bound on requests in flight."""
    with pipeline.in_flight:
        pipeline.on_the_way += 1
        ticket = Ticket(pipeline)
        try:
            return await _rerank(pipeline, admitted.job, admitted.runtime, ticket)
        finally:
            ticket.arrive()


async def _rerank(pipeline: Pipeline, job: RerankJob, rt: ModelRuntime, ticket: Ticket) -> RerankOutcome:
    t0 = time.perf_counter()
    space = rerank_keyspace(rt, job.max_tokens_per_doc)
    keys = [space.pair_key(job.query, d) for d in job.documents]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)  # a document given twice is scored once
    unique = list(first)
    width = rt.spec.dimension + PAIR_EXTRA
    cached = await pipeline.cache.get_many(unique)
    t1 = time.perf_counter()
    found = {k: v for k, v in zip(unique, cached) if v is not None and v.shape == (width,)}
    missing = [k for k in unique if k not in found]
    queue_s = infer_s = tokenize_s = 0.0
    batch = 0
    if missing:
        seqs = await _pairs(rt, job, [job.documents[first[k]] for k in missing])
        tokenize_s = time.perf_counter() - t1
        logits, queue_s, infer_s, batch, revisions = await pipeline.encode_missing(rt, [[s] for s in seqs], ticket)
        store = revisions == {space.revision}
        if not store:  # a rolling update: one model version for the whole answer
            missing = unique
            seqs = await _pairs(rt, job, [job.documents[first[k]] for k in unique])
            logits, q, i, batch, store = await _one_version(pipeline, rt, space, seqs)
            queue_s, infer_s = queue_s + q, infer_s + i
        new = dict(zip(missing, _entries(logits, seqs)))
        if store:
            pipeline.cache.set_many(new)
        found.update(new)
    t2 = time.perf_counter()
    rows = np.stack([found[k] for k in keys])
    scores = activate(rt.spec, np.ascontiguousarray(rows[:, : rt.spec.dimension]))
    order = rank(scores, job.top_n)
    t3 = time.perf_counter()
    missed = set(missing)
    timings = {"tokenize": tokenize_s, "cache": t1 - t0, "queue": queue_s, "inference": infer_s,
               "postprocess": t3 - t2, "total": t3 - t0}
    return RerankOutcome(rt.spec.id, scores, order, int(rows[:, -1].sum()), timings, batch,
                         sum(1 for k in keys if k not in missed))


async def _pairs(rt: ModelRuntime, job: RerankJob, documents: list[str]) -> list[np.ndarray]:
    """The pairs the model reads; a big request is tokenized off the event loop."""
    tok = pair_tokenizer(rt)
    if len(documents) <= 8 and sum(len(d) for d in documents) <= 64 * 1024:
        return tok.encode(job.query, documents, job.max_tokens_per_doc).seqs
    return (await asyncio.to_thread(tok.encode, job.query, documents, job.max_tokens_per_doc)).seqs


async def _one_version(pipeline: Pipeline, rt: ModelRuntime, space: KeySpace,
                       seqs: list[np.ndarray]) -> tuple[np.ndarray, float, float, int, bool]:
    """Encoders of another model version answered: every pair again in one call (one replica,
    one version), hits included; stored only if that version is the one the keys name."""
    t0 = time.perf_counter()
    pipeline.encoder_calls += 1
    pipeline.encoded_texts += len(seqs)
    logits, info, revision = await pipeline.encode(rt.spec.key, seqs)
    queue_s = max(time.perf_counter() - t0 - info.inference_s, 0.0)
    return logits, queue_s, info.inference_s, info.texts, revision == space.revision


def _entries(logits: np.ndarray, seqs: list[np.ndarray]) -> np.ndarray:
    """Cache entries: each pair's logits, then its token count (exact in float32 below 2**24)."""
    out = np.empty((len(seqs), logits.shape[1] + PAIR_EXTRA), dtype=np.float32)
    out[:, :-1] = logits
    out[:, -1] = [len(s) for s in seqs]
    return out
