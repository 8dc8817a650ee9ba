"""One admission check (serving.api.admission.admit) for every door: it refuses what a request
asks wrongly, with the error every door then maps (the service tests show each door's status and
shape), and gives back the job with its runtime and prompt; the pipeline runs an admitted job
without checking it again. (Unit tests on the shipped model's real runtime and tokenizer; the
encoders are a stand-in that says how many sequences it got.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.artifacts import ModelArtifacts
from models.continuous_batcher import RoundInfo
from models.errors import InvalidInput, InvalidOption, ModelNotFound, TooManyInputs
from models.postprocess import EncodingFormat, OutputOptions
from models.specs import resolve_model
from models.tokenizer import Truncate
from serving.api.admission import Served, admit
from serving.pipeline.cache import MemoryCache
from serving.pipeline.embed import EmbedJob, Pipeline
from serving.pipeline.reranking import RerankJob
from serving.pipeline.runtime import Encoded, ModelRuntime
from serving.pipeline.sparse import SparseJob
from tests.support.service import artifact_dir

M = resolve_model("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def served() -> Served:
    rt = ModelRuntime.load(M, ModelArtifacts.load(artifact_dir(), M), "optimized")
    return Served({M.key: rt}, max_inputs=4)


@pytest.mark.parametrize(
    "job, error, param, said",
    [
        (EmbedJob("text-embedding-3-small", ["a"]), ModelNotFound, "model", "Served models: " + M.id),
        (EmbedJob(M.id, []), InvalidInput, "input", "must not be empty"),
        (EmbedJob(M.id, ["a"] * 5), TooManyInputs, "input", "at most 4"),
        (EmbedJob(M.id, ["a", ""]), InvalidInput, "input", "input[1] is an empty string"),
        (EmbedJob(M.id, ["a"], options=OutputOptions(dimensions=M.dimension + 1)), InvalidOption, "dimensions", "1 to"),
        # Cohere's several embedding_types: every one is checked, not only the first
        (EmbedJob(M.id, ["a"], options=OutputOptions(dimensions=12), more_formats=(EncodingFormat.BINARY,)),
         InvalidOption, "dimensions", "multiple of 8"),
        (EmbedJob(M.id, ["a"], max_tokens=M.max_seq_length - 1), InvalidOption, "max_tokens", "leave it out"),
        (EmbedJob(M.id, ["a"], input_type="no-such-type"), InvalidOption, "input_type", "no-such-type"),
        (RerankJob(M.id, "query", ["doc"]), InvalidInput, "model", "cannot rerank"),
        (SparseJob(M.id, ["a"]), InvalidInput, "model", "No sparse"),
    ],
    ids=["unknown model", "no input", "too many", "empty text", "dimensions", "every format", "max_tokens",
         "input_type", "rerank an embedder", "no sparse service"],
)
def test_a_bad_request_is_refused_with_what_is_wrong(served, job, error, param, said):
    with pytest.raises(error) as err:
        admit(served, job)
    assert err.value.param == param, err.value.message
    assert said in err.value.message, err.value.message


def test_an_admitted_job_carries_its_runtime_and_prompt(served):
    admitted = admit(served, EmbedJob("all-MiniLM-L6-v2", ["a", "b"], truncate=Truncate.WINDOW))
    assert admitted.runtime is served.dense[M.key]
    assert admitted.prompt == ""
    assert admitted.job.count == 2


def test_tokenize_admits_the_tokenizer_only(served):
    """/tokenize takes any model's tokenizer (any_task) but still refuses a bad count."""
    assert admit(served, EmbedJob(M.id, ["a"]), any_task=True).runtime.spec.id == M.id
    with pytest.raises(TooManyInputs):
        admit(served, EmbedJob(M.id, ["a"] * 5), any_task=True)


class Counting:
    """Encoders that give each sequence a unit vector and count what they got."""

    def __init__(self, revision: str):
        self.revision, self.sequences = revision, 0

    async def __call__(self, key: str, seqs: list[np.ndarray]) -> Encoded:
        self.sequences += len(seqs)
        vectors = np.zeros((len(seqs), M.dimension), np.float32)
        vectors[:, 0] = 1.0
        return Encoded(vectors, RoundInfo(len(seqs), 1, 0.001, 0.0), self.revision)


def test_the_pipeline_does_not_check_again_what_admission_checked(served):
    """A pipeline holding no model and a bound of one input still embeds a job admitted
    elsewhere with three: it runs the admitted runtime and trusts the admitted count."""
    rt = served.dense[M.key]
    encoders = Counting(rt.keyspace(Truncate.END).revision)
    pipeline = Pipeline({}, encoders, MemoryCache(1 << 20), max_inputs=1)
    admitted = admit(served, EmbedJob(M.id, ["one", "two", "three"]))
    outcome = asyncio.run(pipeline.embed(admitted))
    assert outcome.model_id == M.id and len(outcome.vectors) == 3
    assert encoders.sequences == 3
