"""Rerank through the same pipeline as embeddings: admission, the served model's runtime, and
the encoders reached by `Pipeline.encode_missing` (length-sorted chunks into the continuous
batcher: a pair is one sequence, models.rerank). Scores get the model's own activation here.
Not cached. Knows nothing of HTTP, gRPC or Ray."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from models.errors import InvalidOption
from models.rerank import PairTokenizer, activate, check_pairs, rank
from serving.pipeline import ModelRuntime, Pipeline, _Ticket
from serving.tasks import require_task


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
    cache_hits: int = 0  # never cached (for the metrics and timing headers the embed routes share)


_PAIR_TOKENIZERS: dict[tuple[str, str], PairTokenizer] = {}


def pair_tokenizer(rt: ModelRuntime) -> PairTokenizer:
    """One per served model (and tokenizer file), made on first use."""
    key = (rt.spec.key, str(rt.artifacts.tokenizer_path))
    tok = _PAIR_TOKENIZERS.get(key)
    if tok is None:
        tok = _PAIR_TOKENIZERS[key] = PairTokenizer(rt.artifacts.tokenizer_path, rt.spec)
    return tok


def check_job(job: RerankJob, max_documents: int) -> None:
    check_pairs(job.query, job.documents, max_documents)
    if job.top_n is not None and job.top_n < 1:
        raise InvalidOption("top_n must be at least 1.", param="top_n")


async def rerank(pipeline: Pipeline, job: RerankJob) -> RerankOutcome:
    with pipeline.admission:
        pipeline.on_the_way += 1
        ticket = _Ticket(pipeline)
        try:
            return await _rerank(pipeline, job, ticket)
        finally:
            ticket.arrive()


async def _rerank(pipeline: Pipeline, job: RerankJob, ticket: _Ticket) -> RerankOutcome:
    t0 = time.perf_counter()
    rt = pipeline.runtime(job.model)
    require_task(rt.spec, "rerank")
    check_job(job, pipeline.max_inputs)
    tok = pair_tokenizer(rt)
    if len(job.documents) <= 8 and sum(len(d) for d in job.documents) <= 64 * 1024:
        pairs = tok.encode(job.query, job.documents, job.max_tokens_per_doc)
    else:  # a big request is tokenized off the event loop
        pairs = await asyncio.to_thread(tok.encode, job.query, job.documents, job.max_tokens_per_doc)
    t1 = time.perf_counter()
    logits, queue_s, infer_s, batch, _ = await pipeline.encode_missing(rt, [[s] for s in pairs.seqs], ticket)
    t2 = time.perf_counter()
    scores = activate(rt.spec, logits)
    order = rank(scores, job.top_n)
    t3 = time.perf_counter()
    timings = {"tokenize": t1 - t0, "cache": 0.0, "queue": queue_s, "inference": infer_s,
               "postprocess": t3 - t2, "total": t3 - t0}
    return RerankOutcome(rt.spec.id, scores, order, pairs.tokens, timings, batch)
