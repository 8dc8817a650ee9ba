"""The one request pipeline every front door calls (OpenAI and Cohere HTTP, gRPC):

validate -> prompt -> cache lookup (one MGET) -> tokenize the misses (long texts: windows) ->
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
from typing import Awaitable, Callable, NamedTuple

import numpy as np

from models.artifacts import ModelArtifacts
from models.batcher import RoundInfo
from models.batching import split_sorted
from models.errors import EmbedError, InvalidInput, InvalidOption, ModelNotFound, Overloaded, TooManyInputs
from models.postprocess import EncodingFormat, OutputOptions, postprocess_many, validate_options
from models.prompts import prompt_table, resolve_prompt
from models.specs import ModelSpec, resolve_model
from models.tokenizer import TextTokenizer, Truncate
from models.windows import DEFAULT_MAX_WINDOWS, DEFAULT_WINDOW_OVERLAP, pool_windows
from serving.cache import EmbeddingCache, KeySpace
from serving.tasks import require_task



class Encoded(NamedTuple):
    """What an encoder call gives back."""

    vectors: np.ndarray  # pooled, full-dimension, in the order of the call's sequences
    info: RoundInfo  # the round they were computed in
    revision: str  # the model version that computed them: the checksum of the ONNX file it ran


# (model key, token id arrays) -> Encoded
EncodeFn = Callable[[str, list[np.ndarray]], Awaitable[Encoded]]


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


class Admission:
    """A bounded number of requests in flight; past it, refuse at once (never queue)."""

    def __init__(self, limit: int, retry_after_s: float):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def __enter__(self):
        if self.in_flight >= self.limit:
            raise Overloaded(
                f"The server is at capacity ({self.limit} requests in flight). Retry shortly.",
                retry_after_s=self.retry_after_s,
            )
        self.in_flight += 1
        return self

    def __exit__(self, *exc):
        self.in_flight -= 1


class Pipeline:
    def __init__(
        self,
        runtimes: dict[str, ModelRuntime],
        encode: EncodeFn,
        cache: EmbeddingCache,
        *,
        max_inputs: int = 2048,
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
        self.admission = Admission(max_in_flight, retry_after_s)
        # Requests admitted that have not reached the encoders yet (nor left without them): an
        # idle encoder waits for these, and for nobody else (models.batcher; the ingress hands
        # the count with each encoder call).
        self.on_the_way = 0
        # Observed work: what reached the encoders (the cache's benefit shows here).
        self.encoder_calls = 0
        self.encoded_texts = 0

    def runtime(self, model: str) -> ModelRuntime:
        """The served model `model` names; a 404 that lists the served ones (not the registry's)."""
        try:
            rt = self.runtimes.get(resolve_model(model).key)
        except ModelNotFound:
            rt = None
        if rt is None:
            served = ", ".join(r.spec.id for r in self.runtimes.values())
            raise ModelNotFound(
                f"The model '{model[:100]}' is not served here. Served models: {served}.", param="model"
            )
        return rt

    def check_count(self, job: EmbedJob) -> None:
        if job.count == 0:
            raise InvalidInput("input must not be empty.", param="input")
        if job.count > self.max_inputs:
            raise TooManyInputs(
                f"input has {job.count} items; at most {self.max_inputs} are allowed per request.",
                param="input",
            )
        if job.texts is not None:
            for i, t in enumerate(job.texts):
                if not t:
                    raise InvalidInput(f"input[{i}] is an empty string.", param="input")

    @staticmethod
    def units(rt: ModelRuntime, job: EmbedJob, prompt: str = "") -> list[list[np.ndarray]]:
        """Per input, the sequences the model reads: one, or a long text's windows."""
        if job.texts is None:
            check_prompt(job, prompt)
            return [[s] for s in rt.tokenizer.encode_ids(job.token_ids, job.truncate)]
        return rt.units(job.texts, job.truncate, prompt)

    async def tokenize(self, rt: ModelRuntime, job: EmbedJob, prompt: str = "") -> list[list[np.ndarray]]:
        # Inline only when small: a multi-megabyte text takes seconds to tokenize and would
        # stall every other request on this replica's event loop.
        if job.texts is None or (len(job.texts) <= 8 and sum(len(t) for t in job.texts) <= 64 * 1024):
            return self.units(rt, job, prompt)
        return await asyncio.to_thread(self.units, rt, job, prompt)

    async def embed(self, job: EmbedJob) -> EmbedOutcome:
        with self.admission:
            self.on_the_way += 1
            ticket = _Ticket(self)
            try:
                return await self._embed(job, ticket)
            finally:
                ticket.arrive()

    async def _embed(self, job: EmbedJob, ticket: "_Ticket | None" = None) -> EmbedOutcome:
        t0 = time.perf_counter()
        rt = self.runtime(job.model)
        require_task(rt.spec, "embed")
        for fmt in job.formats:
            validate_options(rt.spec, replace(job.options, encoding_format=fmt))
        self.check_count(job)
        prompt = resolve_prompt(rt.prompts, job.input_type)
        check_prompt(job, prompt)

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
        self, rt: ModelRuntime, job: EmbedJob, prompt: str = "", ticket: "_Ticket | None" = None,
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
        self, rt: ModelRuntime, units: list[list[np.ndarray]], ticket: "_Ticket | None" = None
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


def check_prompt(job: EmbedJob, prompt: str) -> None:
    if prompt and job.texts is None:
        raise InvalidOption(
            f"input_type '{job.input_type}' puts a prompt before the text; token ids are embedded as given.",
            param="input_type",
        )


class _Ticket:
    """One request's place in `Pipeline.on_the_way`, given up once: when its encoder calls go
    out, or when it ends without any (cache hits, errors)."""

    __slots__ = ("pipeline",)

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def arrive(self) -> None:
        if self.pipeline is not None:
            self.pipeline.on_the_way -= 1
            self.pipeline = None
