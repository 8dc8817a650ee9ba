"""A user's model served by the real service: `EMBEDSERVE_MODELS` entries NAME=PATH are exported
on first start (with progress), listed by /v1/models and gRPC ListModels with their spec, and
answer /v1/embeddings and Cohere's /v2/embed with sentence-transformers' vectors (fp32), prompts
per input type included. The decoder (Qwen3, last-token pooling, left padding) and BERT with a
Dense layer and no Normalize, side by side in one application."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from models.variant_fidelity import cosines
from serving.cli import ensure_exported
from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from serving.settings import Settings
from tests.support.batch import read_vectors, run_in_process, write_jsonl
from tests.support.service import deploy, undeploy
from tests.support.user_models import TINY_MODELS, reference

pytestmark = pytest.mark.integration

EXACT = 0.9999
SERVED = {"my-qwen": "tiny-qwen3", "my-bert": "tiny-bert"}
TEXTS = ["Hello, world", "A cat sat on the mat.", "How do I serve my own embedding model?" * 20]


@pytest.fixture(scope="module")
def first_start(user_models, tmp_path_factory):
    """The folders under new names in an empty artifact folder: the start exports them (what it
    prints is kept for the progress test)."""
    entries = [f"{name}={user_models.folders[tiny]}" for name, tiny in SERVED.items()]
    s = Settings(models=entries, artifact_dir=tmp_path_factory.mktemp("first-start"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ensure_exported(s)
    return s, out.getvalue()


@pytest.fixture(scope="module")
def user_service(ray_serve, first_start):
    s, _ = first_start
    # fp32 by name: auto may pick bf16 on a CPU with bf16 units (its fidelity is in /v1/models).
    app = deploy(ray_serve, "user-models", "/user-models", models=list(s.models), artifact_dir=s.artifact_dir,
                 variant="fp32", cache="memory", encoder_num_cpus=0.5)
    yield app
    undeploy("user-models")


def test_a_path_model_is_exported_on_first_start_with_progress(first_start):
    s, out = first_start
    assert list(s.models) == list(SERVED)
    for name in SERVED:
        assert f"{name} is not exported yet: exporting it" in out
        assert f"{name}: exported to {s.artifact_dir / name}" in out
    assert "[2/7] exporting fp32 ONNX with optimum" in out


@pytest.mark.parametrize("name", list(SERVED))
def test_v1_embeddings_answers_with_sentence_transformers_vectors(user_service, user_models, name):
    folder = user_models.folders[SERVED[name]]
    status, _, body = user_service.post("/v1/embeddings", {"model": name, "input": TEXTS})
    assert status == 200, body
    got = np.array([d["embedding"] for d in body["data"]])
    assert cosines(got, reference(folder, TEXTS)).min() >= EXACT


@pytest.mark.parametrize("name", list(SERVED))
def test_input_types_put_the_models_own_prompt_before_the_text(user_service, user_models, name):
    tiny = next(m for m in TINY_MODELS if m.name == SERVED[name])
    folder = user_models.folders[tiny.name]
    status, _, body = user_service.post("/v2/embed", {"model": name, "texts": TEXTS, "input_type": "search_query",
                                                       "embedding_types": ["float"]})
    assert status == 200, body
    got = np.array(body["embeddings"]["float"])
    assert cosines(got, reference(folder, TEXTS, tiny.prompts["query"])).min() >= EXACT


def test_v1_models_lists_each_user_model_with_its_spec(user_service):
    status, _, body = user_service.get("/v1/models")
    assert status == 200, body
    listed = {m["id"]: m for m in body["data"]}
    qwen, bert = listed["my-qwen"], listed["my-bert"]
    assert (qwen["pooling"], qwen["architecture"], qwen["dimension"], qwen["max_input_tokens"]) == ("last", "qwen3", 32, 64)
    assert (bert["pooling"], bert["dense_layers"], bert["normalized_by_model"]) == ("cls", ["32->24 Tanh"], False)
    assert bert["dimension"] == 24 and "search_query" in bert["input_types"]
    assert qwen["user_model"] and qwen["engine"]["precision"] == "fp32"
    assert all("min_cos" in v["fidelity"] for v in qwen["variants"])


def test_grpc_list_models_lists_them(user_service):
    with user_service.grpc_channel() as channel:
        listed = pbg.EmbeddingServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=user_service.grpc_metadata)
    by_id = {m.id: m for m in listed.models}
    assert by_id["my-bert"].dimension == 24 and by_id["my-qwen"].max_input_tokens == 64
    assert "search_query" in by_id["my-qwen"].prompts


def test_the_bulk_job_embeds_with_a_user_model(ray_serve, first_start, user_models, tmp_path):
    """`embedserve batch --model my-bert`: the job's settings name the model, so its workers find it."""
    s, _ = first_start
    texts = TEXTS * 4
    job = Settings(models=["my-bert"], artifact_dir=s.artifact_dir, variant="fp32")
    run_in_process(write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)]),
                   tmp_path / "out", s=job, model="my-bert")
    ids, vectors, _ = read_vectors(tmp_path / "out")
    order = np.argsort([int(i) for i in ids])  # ids come back as strings
    assert cosines(vectors[order], reference(user_models.folders["tiny-bert"], texts)).min() >= EXACT
