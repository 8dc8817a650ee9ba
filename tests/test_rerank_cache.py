"""Rerank answers are cached like embeddings, keyed by (model, query, document) in a key space
that also names the model's revision and variant and max_tokens_per_doc: a repeated request never
reaches the model and gets bit-identical scores; another query, document or max_tokens_per_doc
misses; with Redis stopped the request is still answered (the cache is only a miss).

The pipeline is the service's own (serving.pipeline.reranking over serving.pipeline.embed.Pipeline) with a real
exported cross-encoder run in this process and real caches (memory, and a real redis-server);
tests/test_rerank_service.py shows the same through HTTP (the x-cache-hits header)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from models.artifacts import ModelArtifacts
from models.continuous_batcher import RoundInfo
from models.encoder import Encoder
from models.model_folder import exported_spec
from models.specs import register_user_model
from serving.api.admission import Served, admit
from serving.pipeline.cache import MemoryCache
from serving.pipeline.embed import Pipeline
from serving.pipeline.runtime import Encoded, ModelRuntime
from serving.pipeline.reranking import RerankJob, rerank, rerank_keyspace
from tests.support.cache import redis_cache
from tests.support.cross_encoders import reference
from tests.support.redis_server import redis_server  # noqa: F401 (fixture)

QUERY = "how do cats sleep"
DOCS = ["Cats sleep most of the day.", "The stock market fell.", "A kitten naps in the sun.",
        "Dogs bark at night. " * 40]


class CountingEncoder:
    """The EncodeFn the ingress gets, served by a real Encoder here; counts what reached it."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder
        self.sequences = 0

    async def __call__(self, key: str, seqs: list[np.ndarray]) -> Encoded:
        self.sequences += len(seqs)
        vectors = self.encoder.encode_ids(seqs)
        return Encoded(vectors, RoundInfo(len(seqs), 1, 0.001, 0.0), self.encoder.checksum)


@pytest.fixture(scope="module", params=["tiny-rerank", "tiny-rerank-3"])
def model(request, cross_encoders):
    spec = exported_spec(cross_encoders.artifact_dir, request.param)
    register_user_model(spec)
    encoder = Encoder.from_artifact_dir(spec, cross_encoders.artifact_dir, variant="fp32", providers="cpu",
                                        calibrate=False)
    rt = ModelRuntime.load(spec, ModelArtifacts.load(cross_encoders.artifact_dir, spec), "fp32")
    return spec, rt, encoder, cross_encoders.folders[request.param]


def pipeline(model, cache) -> tuple[Pipeline, CountingEncoder]:
    spec, rt, encoder, _ = model
    counting = CountingEncoder(encoder)
    return Pipeline({spec.key: rt}, counting, cache, max_inputs=16, chunk_size=2), counting


async def arun(pipe: Pipeline, query: str = QUERY, docs: list[str] = DOCS, **options):
    (rt,) = pipe.runtimes.values()
    job = RerankJob(rt.spec.id, query, list(docs), **options)
    outcome = await rerank(pipe, admit(Served(pipe.runtimes, max_inputs=pipe.max_inputs), job))
    await pipe.cache.flush_pending()
    return outcome


def run(pipe: Pipeline, *args, **options):
    return asyncio.run(arun(pipe, *args, **options))


def test_a_repeated_request_is_answered_from_the_cache_bit_identical(model):
    cache = MemoryCache(1 << 24)
    pipe, counting = pipeline(model, cache)
    first = run(pipe)
    assert (first.cache_hits, counting.sequences) == (0, len(DOCS))
    ref = np.asarray(reference(model[3], [(QUERY, d) for d in DOCS]))
    assert np.abs(first.scores - ref).max() <= 1e-4
    second = run(pipe)
    assert counting.sequences == len(DOCS), "the repeated request reached the model"
    assert second.cache_hits == len(DOCS) and cache.stats()["hits"] == len(DOCS)
    assert second.scores.tobytes() == first.scores.tobytes()
    assert (second.order, second.prompt_tokens) == (first.order, first.prompt_tokens)
    assert second.timings["inference"] == 0.0


def test_partly_cached_and_repeated_documents_are_scored_once(model):
    pipe, counting = pipeline(model, MemoryCache(1 << 24))
    whole = run(pipe)
    counting.sequences = 0
    # two known documents (hits), one new, one given twice: only the new one is scored
    docs = [DOCS[2], "A new document about naps.", DOCS[0], "A new document about naps."]
    out = run(pipe, docs=docs)
    assert counting.sequences == 1 and out.cache_hits == 2
    assert out.scores[0].tobytes() == whole.scores[2].tobytes() and out.scores[2].tobytes() == whole.scores[0].tobytes()
    assert out.scores[1].tobytes() == out.scores[3].tobytes()
    ref = np.asarray(reference(model[3], [(QUERY, d) for d in docs]))
    assert np.abs(out.scores - ref).max() <= 1e-4


@pytest.mark.parametrize("change", ["query", "document", "max_tokens_per_doc"])
def test_another_query_document_or_max_tokens_per_doc_misses(model, change):
    pipe, counting = pipeline(model, MemoryCache(1 << 24))
    run(pipe)
    before = counting.sequences
    if change == "query":
        out = run(pipe, query="where do dogs sleep")
    elif change == "document":
        out = run(pipe, docs=[d + " Indeed." for d in DOCS])
    else:
        out = run(pipe, max_tokens_per_doc=3)
    assert out.cache_hits == 0 and counting.sequences - before == len(DOCS)
    if change == "max_tokens_per_doc":  # and the cut documents' scores are not the whole ones'
        again = run(pipe, max_tokens_per_doc=3)
        assert again.cache_hits == len(DOCS) and again.scores.tobytes() == out.scores.tobytes()
        assert out.scores.tobytes() != run(pipe).scores.tobytes()


def test_the_key_space_names_the_revision_variant_and_max_tokens_per_doc(model):
    rt = model[1]
    base = rerank_keyspace(rt, None)
    assert base.revision == rt.artifacts.checksum("fp32") and base.variant == "fp32"
    keys = {base.pair_key(QUERY, DOCS[0]), rerank_keyspace(rt, 3).pair_key(QUERY, DOCS[0]),
            dataclasses.replace(base, revision="sha256:another").pair_key(QUERY, DOCS[0]),
            dataclasses.replace(base, variant="optimized").pair_key(QUERY, DOCS[0]),
            base.pair_key(QUERY + DOCS[0][:4], DOCS[0][4:]),  # the same characters split elsewhere
            base.key(QUERY + DOCS[0])}
    assert len(keys) == 6


def test_with_redis_stopped_the_request_still_succeeds(model, redis_server):  # noqa: F811
    async def go():  # one event loop: the Redis client's connections belong to it
        cache = redis_cache(redis_server.url)
        pipe, _ = pipeline(model, cache)
        first = await arun(pipe)
        assert cache.stats()["writes"] == len(DOCS)
        assert (await arun(pipe)).cache_hits == len(DOCS), "Redis answers the repeat"
        redis_server.stop()
        try:
            down = await arun(pipe)
            assert down.cache_hits == 0 and down.scores.tobytes() == first.scores.tobytes()
            assert cache.stats()["errors"] >= 1
            other = await arun(pipe, query="a query while Redis is down")
            assert other.scores.shape == first.scores.shape and other.cache_hits == 0
        finally:
            redis_server.start()
            await cache.close()

    asyncio.run(go())


class AnotherVersion(CountingEncoder):
    """Mid-rollout: the calls numbered in `old` are answered by a replica of another model version."""

    def __init__(self, encoder: Encoder, old: set[int]):
        super().__init__(encoder)
        self.old, self.calls = old, 0

    async def __call__(self, key: str, seqs: list[np.ndarray]) -> Encoded:
        answer = await super().__call__(key, seqs)
        self.calls += 1
        return answer._replace(revision="the-version-being-replaced") if self.calls in self.old else answer


@pytest.mark.parametrize("old_calls,stored", [({1}, True), ({1, 2, 3}, False)])
def test_pairs_answered_by_two_model_versions_are_scored_again_in_one_call(model, old_calls, stored):
    spec, rt, encoder, _ = model
    cache = MemoryCache(1 << 24)
    warm, _ = pipeline(model, cache)
    run(warm, docs=DOCS[:1])  # one hit of this version
    mixed = AnotherVersion(encoder, old_calls)
    out = run(Pipeline({spec.key: rt}, mixed, cache, max_inputs=16, chunk_size=2))
    # the three misses in two chunks (the first from the other version), then all four pairs in one call
    assert (mixed.calls, mixed.sequences, out.cache_hits) == (3, 3 + len(DOCS), 0)
    # stored only when that one call's version is the one the keys name
    assert cache.stats()["writes"] == 1 + (len(DOCS) if stored else 0)
    assert out.scores.tobytes() == run(warm).scores.tobytes()  # (the same weights here: the same scores)
