"""During a rolling update, encoder replicas of two model versions answer at once. A request
split into several encoder calls, or answered partly from the cache, must still get vectors of
one model version only, and the cache must never file one version's vectors under another's
keys. (Unit test of that one path, with encoders that say which version they are; the cluster
test tests/test_cluster_rolling_update.py shows it on a real rollout.)"""

from __future__ import annotations

import asyncio

import numpy as np

from models.artifacts import ModelArtifacts
from models.continuous_batcher import RoundInfo
from models.specs import resolve_model
from serving.api.admission import Served, admit
from serving.pipeline.cache import MemoryCache
from serving.pipeline.embed import EmbedJob, Pipeline
from serving.pipeline.runtime import Encoded, ModelRuntime
from tests.support.service import artifact_dir

M = resolve_model("all-MiniLM-L6-v2")
OLD = "the-version-being-replaced"


def runtime() -> ModelRuntime:
    return ModelRuntime.load(M, ModelArtifacts.load(artifact_dir(), M), "optimized")


class TwoVersions:
    """Encoders mid-rollout: calls are answered by the listed revisions in turn. Each vector
    holds the number of its version, so an answer shows where its rows came from."""

    def __init__(self, revisions: list[str]):
        self.revisions = revisions
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, key: str, seqs: list[np.ndarray]) -> Encoded:
        revision = self.revisions[min(len(self.calls), len(self.revisions) - 1)]
        self.calls.append((len(seqs), revision))
        mark = float(self.revisions.index(revision) + 1)
        return Encoded(np.full((len(seqs), M.dimension), mark, np.float32), RoundInfo(len(seqs), 1, 0.001, 0.0), revision)


def texts(n: int, tag: str) -> list[str]:
    return [f"{tag} text number {i}" for i in range(n)]


def embed(pipeline: Pipeline, inputs: list[str]):
    from models.postprocess import OutputOptions

    job = EmbedJob(M.id, texts=inputs, options=OutputOptions(normalize=False))
    return asyncio.run(pipeline.embed(admit(Served(pipeline.runtimes, max_inputs=pipeline.max_inputs), job)))


def test_chunks_answered_by_two_versions_are_embedded_again_in_one_call():
    rt = runtime()
    encoders = TwoVersions([rt.keyspace(EmbedJob(M.id).truncate).revision, OLD, OLD])
    cache = MemoryCache(1 << 24)
    pipeline = Pipeline({M.key: rt}, encoders, cache, chunk_size=4)
    out = embed(pipeline, texts(10, "mixed"))
    # three chunks (two versions answered them), then all ten texts in one call, one version
    assert sorted(n for n, _ in encoders.calls[:3]) == [2, 4, 4]
    assert encoders.calls[3:] == [(10, OLD)]
    assert np.unique(np.asarray(out.vectors)).tolist() == [2.0]  # every row from that version
    # the old version's vectors are not cached under this version's keys
    assert asyncio.run(cache.get_many([rt.keyspace(EmbedJob(M.id).truncate).key(t) for t in texts(10, "mixed")])) == [None] * 10


def test_cache_hits_of_this_version_are_not_mixed_with_another_versions_vectors():
    rt = runtime()
    own = rt.keyspace(EmbedJob(M.id).truncate).revision
    cache = MemoryCache(1 << 24)
    warm = Pipeline({M.key: rt}, TwoVersions([own]), cache, chunk_size=64)
    embed(warm, texts(3, "seen"))  # cached, by this version
    encoders = TwoVersions([OLD])  # only the other version answers now
    pipeline = Pipeline({M.key: rt}, encoders, cache, chunk_size=64)
    out = embed(pipeline, texts(3, "seen") + texts(2, "new"))
    assert out.cache_hits == 0  # the hits were embedded again, with the new texts, in one call
    assert encoders.calls[-1] == (5, OLD)
    assert np.all(np.asarray(out.vectors) == 1.0)


def test_one_version_answering_is_the_ordinary_path():
    rt = runtime()
    own = rt.keyspace(EmbedJob(M.id).truncate).revision
    encoders = TwoVersions([own])
    cache = MemoryCache(1 << 24)
    out = embed(Pipeline({M.key: rt}, encoders, cache, chunk_size=4), texts(10, "plain"))
    assert [n for n, _ in encoders.calls] and sum(n for n, _ in encoders.calls) == 10  # no call again
    again = embed(Pipeline({M.key: rt}, encoders, cache, chunk_size=4), texts(10, "plain"))
    assert again.cache_hits == 10 and np.array_equal(np.asarray(again.vectors), np.asarray(out.vectors))
