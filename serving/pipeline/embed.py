"""The dense embedding pipeline every front door calls (OpenAI and Cohere HTTP, gRPC), on a job
the admission check passed (serving.api.admission: model, options, counts, prompt):

cache lookup (one MGET) -> tokenize the misses (long texts: windows) ->
misses to the encoders in length-sorted chunks (windows ride as ordinary sequences, pooled back
per text after) -> cache write (background) -> merge in input order -> post-process (once per
format). A cached entry holds the input's token and window counts beside its vector, so a hit
is never tokenized.

It knows nothing of HTTP, gRPC or Ray: encoders are reached through an async `EncodeFn`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import numpy as np

from models.run_planner import split_sorted
from models.errors import EmbedError
from models.postprocess import EncodingFormat, OutputOptions, postprocess_many
from models.tokenizer import Truncate
from serving.pipeline.cache import EmbeddingCache, KeySpace
from serving.pipeline.in_flight import InFlightLimit, Ticket
from serving.pipeline.runtime import Admitted, EncodeFn, ModelRuntime, pool_units


@dataclass(frozen=True)
class EmbedJob:
    """The internal request every front door builds."""

    model: str
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    options: OutputOptions = OutputOptions()
    truncate: Truncate = Truncate.END
    input_type: str | None = None  # picks the model's prompt (models.prompts); None: the plain text
    # Further output formats of the same vectors (Cohere's several embedding_types).
    more_formats: tuple[EncodingFormat, ...] = ()
    max_tokens: int | None = None  # Cohere's: at least the model's maximum, or refused

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids or [])

    @property
    def formats(self) -> tuple[EncodingFormat, ...]:
        """Every output format asked for, `options.encoding_format` first, each once."""
        return tuple(dict.fromkeys((self.options.encoding_format, *self.more_formats)))


@dataclass
class EmbedOutcome:
    model_id: str
    vectors: np.ndarray | list[str]  # in options.encoding_format
    prompt_tokens: int  # every token the model read: prompts, special tokens, every window
    cache_hits: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    batch_size: int = 0  # texts in the largest encoder batch this request rode in
    outputs: dict[EncodingFormat, np.ndarray | list[str]] = field(default_factory=dict)  # every format asked for
    windows: list[int] | None = None  # windows each input took (Truncate.WINDOW only)


class Pipeline:
    def __init__(
        self,
        runtimes: dict[str, ModelRuntime],
        encode: EncodeFn,
        cache: EmbeddingCache,
        *,
        max_inputs: int = 2048,  # per request: what serving.api.admission admits to
        chunk_size: int = 64,
        max_chunk_tokens: int = 8192,
        max_in_flight: int = 128,
        retry_after_s: float = 1.0,
    ):
        self.runtimes = runtimes
        self.encode = encode
        self.cache = cache
        self.max_inputs = max_inputs
        self.chunk_size = chunk_size
        self.max_chunk_tokens = max_chunk_tokens
        self.in_flight = InFlightLimit(max_in_flight, retry_after_s)
        # Requests admitted that have not reached the encoders yet (nor left without them): an
        # idle encoder waits for these, and for nobody else (models.continuous_batcher; the ingress hands
        # the count with each encoder call).
        self.on_the_way = 0
        # Observed work: what reached the encoders (the cache's benefit shows here).
        self.encoder_calls = 0
        self.encoded_texts = 0

    @staticmethod
    def units(rt: ModelRuntime, job: EmbedJob, prompt: str = "") -> list[list[np.ndarray]]:
        """Per input, the sequences the model reads: one, or a long text's windows."""
        if job.texts is None:
            return [[s] for s in rt.tokenizer.encode_ids(job.token_ids, job.truncate)]
        return rt.units(job.texts, job.truncate, prompt)

    async def tokenize(self, rt: ModelRuntime, job: EmbedJob, prompt: str = "") -> list[list[np.ndarray]]:
        # Inline only when small: a multi-megabyte text takes seconds to tokenize and would
        # stall every other request on this replica's event loop.
        if job.texts is None or (len(job.texts) <= 8 and sum(len(t) for t in job.texts) <= 64 * 1024):
            return self.units(rt, job, prompt)
        return await asyncio.to_thread(self.units, rt, job, prompt)

    async def embed(self, admitted: Admitted) -> EmbedOutcome:
        """An admitted EmbedJob (serving.api.admission): within the bound on requests in flight."""
        with self.in_flight:
            self.on_the_way += 1
            ticket = Ticket(self)
            try:
                return await self._embed(admitted.job, admitted.runtime, admitted.prompt, ticket)
            finally:
                ticket.arrive()

    async def _embed(self, job: EmbedJob, rt: ModelRuntime, prompt: str, ticket: Ticket | None = None) -> EmbedOutcome:
        t0 = time.perf_counter()
        pooled, counts, hits, timings, batch = await self.pooled_vectors(rt, job, prompt, ticket)
        t2 = time.perf_counter()
        outputs = postprocess_many(pooled, rt.spec, job.options, job.formats, rt.artifacts.int8_scales)
        t3 = time.perf_counter()
        timings = {**timings, "postprocess": t3 - t2, "total": t3 - t0}
        tokens = int(counts[:, 0].sum())
        windows = counts[:, 1].astype(int).tolist() if job.truncate is Truncate.WINDOW else None
        return EmbedOutcome(
            rt.spec.id, outputs[job.options.encoding_format], tokens, hits, timings, batch, outputs, windows
        )

    async def pooled_vectors(
        self, rt: ModelRuntime, job: EmbedJob, prompt: str = "", ticket: "Ticket | None" = None,
    ) -> tuple[np.ndarray, np.ndarray, int, dict[str, float], int]:
        """Full-dimension pooled vectors in input order, cache hits merged with fresh ones, and
        each input's (tokens, windows). Only the misses are tokenized; duplicate inputs within
        the request are embedded once."""
        dim = rt.spec.dimension
        # Token ids are checked (vocabulary, overflow) before anything else: cheap, no tokenizer.
        id_units = await self.tokenize(rt, job, prompt) if job.texts is None else None
        space = rt.keyspace(job.truncate, prompt)
        raw = job.texts if job.texts is not None else job.token_ids
        keys = [space.key(x) for x in raw]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        unique = list(first)

        t0 = time.perf_counter()
        cached = await self.cache.get_many(unique)
        t1 = time.perf_counter()
        # An entry is the vector and then the input's token and window counts (ENTRY_EXTRA).
        found = {k: v for k, v in zip(unique, cached) if v is not None and v.shape == (dim + ENTRY_EXTRA,)}
        missing = [k for k in unique if k not in found]
        timings = {"tokenize": 0.0, "cache": t1 - t0, "queue": 0.0, "inference": 0.0}

        async def units_of(ks: list[str]) -> list[list[np.ndarray]]:
            idx = [first[k] for k in ks]
            if id_units is not None:
                return [id_units[i] for i in idx]
            try:
                return await self.tokenize(rt, replace(job, texts=[job.texts[i] for i in idx]), prompt)
            except EmbedError:
                # A text refused (too long for truncate none, too many windows): the error
                # again over the whole request, so it names the input as the caller numbered it.
                # (Hits passed these checks when they were embedded: the first refused input
                # of the whole request is the first refused miss.)
                await self.tokenize(rt, job, prompt)
                raise

        batch = 0
        if missing:
            units = await units_of(missing)
            timings["tokenize"] = time.perf_counter() - t1
            fresh, queue_s, infer_s, batch, revisions = await self.encode_missing(rt, units, ticket)
            timings["queue"], timings["inference"] = queue_s, infer_s
            if revisions != {space.revision}:
                return await self.one_version(rt, space, keys, unique, await units_of(unique), timings)
            new = dict(zip(missing, entries(fresh, units)))
            self.cache.set_many(new)
            found.update(new)

        out = np.empty((len(keys), dim + ENTRY_EXTRA), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        missed = set(missing)
        hits = sum(1 for k in keys if k not in missed)
        return np.ascontiguousarray(out[:, :dim]), out[:, dim:], hits, timings, batch

    async def one_version(
        self, rt: ModelRuntime, space: KeySpace, keys: list[str], unique: list[str], units: list[list[np.ndarray]],
        timings: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray, int, dict[str, float], int]:
        """Encoders of another model version answered (a rolling update is under way): the
        request's chunks, or its chunks and its cache hits, came from two versions. One answer
        must hold vectors of one model only, so every text goes again in one call (one replica,
        one version); the cache keeps them only if that version is the one its keys name."""
        t0 = time.perf_counter()
        self.encoder_calls += 1
        self.encoded_texts += len(units)
        vectors, info, revision = await self.encode(rt.spec.key, [s for unit in units for s in unit])
        vectors = pool_units(vectors, units)
        timings["inference"] += info.inference_s
        timings["queue"] += max(time.perf_counter() - t0 - info.inference_s, 0.0)
        rows = entries(vectors, units)
        if revision == space.revision:
            self.cache.set_many(dict(zip(unique, rows)))
        rows = rows[[{k: i for i, k in enumerate(unique)}[k] for k in keys]]
        return np.ascontiguousarray(rows[:, : rt.spec.dimension]), rows[:, rt.spec.dimension :], 0, timings, info.texts

    async def encode_missing(
        self, rt: ModelRuntime, units: list[list[np.ndarray]], ticket: "Ticket | None" = None
    ) -> tuple[np.ndarray, float, float, int, set[str]]:
        """One pooled vector per unit (a text's sequence, or a long text's windows). Every
        sequence goes out alone in length-sorted chunks, sent concurrently, so a big request
        interleaves with small ones in the encoders' rounds instead of starving them; a long
        text's windows are pooled back together after. Also: the model versions (revisions)
        that answered."""
        seqs = [s for unit in units for s in unit]
        chunks = split_sorted([len(s) for s in seqs], self.chunk_size, self.max_chunk_tokens)
        self.encoder_calls += len(chunks)
        self.encoded_texts += len(units)
        if ticket is not None:  # this request has reached the encoders: one fewer on its way
            ticket.arrive()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self.encode(rt.spec.key, [seqs[i] for i in c]) for c in chunks))
        wall = time.perf_counter() - t0
        out = np.empty((len(seqs), rt.spec.dimension), dtype=np.float32)
        inference, batch = 0.0, 0
        for chunk, (vectors, info, _) in zip(chunks, results):
            out[chunk] = vectors
            inference = max(inference, info.inference_s)
            batch = max(batch, info.texts)
        return pool_units(out, units), max(wall - inference, 0.0), inference, batch, {r.revision for r in results}


# What a cache entry holds after the vector: the input's token count and window count.
ENTRY_EXTRA = 2


def entries(vectors: np.ndarray, units: list[list[np.ndarray]]) -> np.ndarray:
    """Cache entries: each pooled vector, then its input's token and window counts (exact in
    float32 below 2**24)."""
    out = np.empty((len(units), vectors.shape[1] + ENTRY_EXTRA), dtype=np.float32)
    out[:, : vectors.shape[1]] = vectors
    out[:, -2] = [sum(len(s) for s in u) for u in units]
    out[:, -1] = [len(u) for u in units]
    return out



