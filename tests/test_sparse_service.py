"""Sparse (SPLADE) embeddings from the real service on loopback: POST /embed_sparse in
text-embeddings-inference's shape, POST /v1/embeddings/sparse as indices / values arrays, and gRPC
SparseService.EmbedSparse give SparseEncoder's vectors (trained SPLADE-tiny, fp32), prompts per
input type and top-k included; behind the same API key as the other routes. A dense model asked
for sparse vectors, and a sparse model asked for dense ones, are a clean 400 that says why."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from models.sparse_export import ATOL, RTOL
from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from tests.support.service import artifact_dir, deploy, undeploy
from tests.support.sparse_models import reference

pytestmark = pytest.mark.integration

KEY = "sparse-secret"
AUTH = {"authorization": f"Bearer {KEY}"}
DENSE = "all-MiniLM-L6-v2"
TEXTS = ["Hello, world", "The quick brown fox jumps over the lazy dog.", "zymurgy and rare terms " * 200]


def link_dense(sparse_models) -> None:
    """The shipped dense model beside the sparse ones: its exported artifacts, linked (never copied or changed)."""
    link = sparse_models.artifact_dir / DENSE.lower()
    if not link.exists():
        link.symlink_to(artifact_dir() / DENSE.lower(), target_is_directory=True)


@pytest.fixture(scope="module")
def sparse_service(ray_serve, sparse_models):
    link_dense(sparse_models)
    entries = [f"{n}={p}" for n, p in sparse_models.folders.items()] + [DENSE]
    app = deploy(ray_serve, "sparse", "/sparse", models=entries, artifact_dir=sparse_models.artifact_dir,
                 variant="fp32", cache="memory", encoder_num_cpus=0.5, api_keys=KEY)
    yield app
    undeploy("sparse")


def dense(rows: list[tuple[list[int], list[float]]]) -> np.ndarray:
    out = np.zeros((len(rows), 30522), dtype=np.float32)
    for r, (idx, val) in enumerate(rows):
        out[r, idx] = val
    return out


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert ((got > 0) == (want > 0)).all(), "the non-zero indices differ"
    assert (np.abs(got - want) <= RTOL * want + ATOL).all()


@pytest.mark.parametrize("name", ["splade-plain", "splade-st"])
def test_embed_sparse_answers_in_teis_shape_with_sparse_encoders_vectors(sparse_service, sparse_models, name):
    status, headers, body = sparse_service.post("/embed_sparse", {"model": name, "inputs": TEXTS}, AUTH)
    assert status == 200, body
    assert len(body) == len(TEXTS) and set(body[0][0]) == {"index", "value"}
    rows = [([e["index"] for e in item], [e["value"] for e in item]) for item in body]
    assert all(idx == sorted(idx) for idx, _ in rows)
    assert_same(dense(rows), reference(sparse_models.folders[name], TEXTS))
    assert float(headers["x-inference-time"]) > 0


def test_a_single_string_and_the_default_model(sparse_service, sparse_models):
    status, _, body = sparse_service.post("/embed_sparse", {"inputs": TEXTS[1]}, AUTH)
    assert status == 200, body
    assert len(body) == 1
    assert_same(dense([([e["index"] for e in body[0]], [e["value"] for e in body[0]])]),
                reference(sparse_models.folders["splade-plain"], TEXTS[1:2]))


def test_return_text_names_each_vocabulary_entry(sparse_service):
    status, _, body = sparse_service.post("/embed_sparse", {"inputs": ["the quick brown fox"], "return_text": True}, AUTH)
    assert status == 200, body
    assert {"quick", "brown", "fox"} <= {e["text"] for e in body[0]}


def test_v1_embeddings_sparse_gives_indices_and_values_with_prompts_top_k_and_tokens(sparse_service, sparse_models):
    req = {"model": "splade-st", "input": TEXTS, "input_type": "query", "top_k": 16, "return_tokens": True}
    status, _, body = sparse_service.post("/v1/embeddings/sparse", req, AUTH)
    assert status == 200, body
    assert body["model"] == "splade-st" and body["usage"]["prompt_tokens"] > 0
    data = body["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert all(len(d["indices"]) == len(d["values"]) == len(d["tokens"]) <= 16 for d in data)
    want = reference(sparse_models.folders["splade-st"], TEXTS, prompt_name="query", top_k=16)
    assert_same(dense([(d["indices"], d["values"]) for d in data]), want)


def test_grpc_embed_sparse_gives_the_same_vectors(sparse_service, sparse_models):
    md = [*sparse_service.grpc_metadata, ("authorization", f"Bearer {KEY}")]
    with sparse_service.grpc_channel() as channel:
        stub = pbg.SparseServiceStub(channel)
        resp = stub.EmbedSparse(pb.EmbedSparseRequest(model="splade-plain", texts=TEXTS, top_k=8, return_tokens=True),
                                metadata=md)
        assert resp.model == "splade-plain" and [d.index for d in resp.data] == [0, 1, 2]
        got = dense([(list(d.indices), list(d.values)) for d in resp.data])
        assert_same(got, reference(sparse_models.folders["splade-plain"], TEXTS, top_k=8))
        assert all(len(d.tokens) == len(d.indices) for d in resp.data)
        with pytest.raises(grpc.RpcError) as err:
            stub.EmbedSparse(pb.EmbedSparseRequest(model=DENSE, texts=["x"]), metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dense embedding model" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.EmbedSparse(pb.EmbedSparseRequest(model="splade-plain", texts=["x"]), metadata=sparse_service.grpc_metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


OK = {"model": "splade-plain", "inputs": ["x"]}
LONG = "word " * 600
# (name, route, body, status, words the message must hold)
CASES = [
    ("no inputs", "/embed_sparse", {"model": "splade-plain"}, 400, "inputs"),
    ("inputs empty", "/embed_sparse", {**OK, "inputs": []}, 400, "empty"),
    ("an empty string", "/embed_sparse", {**OK, "inputs": ["ok", ""]}, 400, "inputs[1]"),
    ("inputs a number", "/embed_sparse", {**OK, "inputs": 7}, 400, "inputs"),
    ("too many inputs", "/embed_sparse", {**OK, "inputs": ["x"] * 2049}, 400, "at most"),
    ("too long with truncate false", "/embed_sparse", {**OK, "inputs": [LONG], "truncate": False}, 400, "token"),
    ("unknown prompt name", "/embed_sparse", {**OK, "prompt_name": "search_everything"}, 400, "input_type"),
    ("top_k zero", "/embed_sparse", {**OK, "top_k": 0}, 400, "top_k"),
    ("unknown model", "/embed_sparse", {**OK, "model": "splade-huge"}, 404, "splade-plain"),
    ("a dense model", "/embed_sparse", {**OK, "model": DENSE}, 400, "dense embedding model"),
    ("a dense model, vector-DB form", "/v1/embeddings/sparse", {"model": DENSE, "input": "x"}, 400, "dense embedding model"),
    ("no input", "/v1/embeddings/sparse", {"model": "splade-plain"}, 400, "input"),
    ("truncate window", "/v1/embeddings/sparse", {"model": "splade-plain", "input": "x", "truncate": "window"}, 400, "truncate"),
    ("top_k negative", "/v1/embeddings/sparse", {"model": "splade-plain", "input": "x", "top_k": -1}, 400, "top_k"),
    ("a sparse model on the dense route", "/v1/embeddings", {"model": "splade-plain", "input": "x"}, 400, "sparse"),
    ("malformed JSON", "/embed_sparse", b'{"inputs": ', 400, "JSON"),
]


@pytest.mark.parametrize("name,route,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clean_4xx_that_says_why(sparse_service, name, route, body, status, words):
    got, _, answer = sparse_service.post(route, body, AUTH)
    assert got == status, answer
    assert words.lower() in answer["error"]["message"].lower(), answer
    if "model" in name and status == 400:  # the code every wrong-task refusal carries (serving.pipeline.tasks on main)
        assert answer["error"]["code"] == "wrong_model_task", answer


@pytest.mark.parametrize("route", ["/embed_sparse", "/v1/embeddings/sparse"])
def test_the_routes_need_the_api_key(sparse_service, route):
    status, _, body = sparse_service.post(route, {"model": "splade-plain", "inputs": ["x"], "input": "x"})
    assert status == 401, body


def test_dense_models_still_answer_beside(sparse_service):
    status, _, body = sparse_service.post("/v1/embeddings", {"model": DENSE, "input": ["x"]}, AUTH)
    assert status == 200 and len(body["data"][0]["embedding"]) == 384


def test_the_readme_examples_are_this_services_answers(sparse_service):
    """README "Sparse embeddings (SPLADE)": each curl example's answer, its model named
    splade-tiny there (the same weights as splade-plain here)."""
    import json
    import re

    from tests.support.service import ROOT

    text = (ROOT / "README.md").read_text().split("## Sparse embeddings (SPLADE)", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"curl -s localhost:8000(\S+).*?-d '(.*?)'\n```\n\n```json\n(.*?)```", text, re.S)
    assert len(examples) == 2
    for route, body, shown in examples:
        req = {**json.loads(body), "model": "splade-plain"}
        status, _, got = sparse_service.post(route, req, AUTH)
        assert status == 200, got
        want = json.loads(shown)
        if isinstance(want, dict):
            got["model"] = want["model"]
        assert json.dumps(round_floats(got)) == json.dumps(want), f"the README should show: {round_floats(got)}"


def round_floats(x):
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, list):
        return [round_floats(v) for v in x]
    if isinstance(x, dict):
        return {k: round_floats(v) for k, v in x.items()}
    return x


def test_v1_models_and_list_models_name_the_sparse_models(sparse_service):
    import json
    import urllib.request

    req = urllib.request.Request(sparse_service.http_url + "/v1/models", headers=AUTH)
    cards = {c["id"]: c for c in json.loads(urllib.request.urlopen(req, timeout=60).read())["data"]}
    assert cards["splade-plain"]["task"] == "sparse" and cards["splade-plain"]["dimension"] == 30522
    assert {"document", "query"} <= set(cards["splade-st"]["input_types"])
    assert cards[f"sentence-transformers/{DENSE}"]["task"] == "embed"
    md = [*sparse_service.grpc_metadata, ("authorization", f"Bearer {KEY}")]
    with sparse_service.grpc_channel() as channel:
        listed = pbg.EmbeddingServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=md).models
    assert {"splade-plain", "splade-st"} <= {m.id for m in listed}


def test_a_service_without_sparse_models_says_so():
    from models.errors import InvalidInput
    from serving.api.admission import Served, admit
    from serving.pipeline.sparse import SparseJob

    with pytest.raises(InvalidInput, match="No sparse") as err:
        admit(Served(dense={}), SparseJob("", ["x"]))
    assert err.value.code == "wrong_model_task"


def test_with_encoder_replicas_the_sparse_model_runs_in_the_ingress(ray_serve, sparse_models):
    """encoder_placement=replica: the dense model gets its encoder deployment, the sparse one
    answers from the ingress with the same vectors."""
    link_dense(sparse_models)
    entries = [f"splade-plain={sparse_models.folders['splade-plain']}", DENSE]
    app = deploy(ray_serve, "sparse-replica", "/sparse-replica", models=entries, artifact_dir=sparse_models.artifact_dir,
                 variant="fp32", cache="off", encoder_placement="replica", encoder_num_cpus=0.5)
    try:
        status, _, body = app.post("/v1/embeddings/sparse", {"input": TEXTS[:2]})
        assert status == 200, body
        got = dense([(d["indices"], d["values"]) for d in body["data"]])
        assert_same(got, reference(sparse_models.folders["splade-plain"], TEXTS[:2]))
        status, _, body = app.post("/v1/embeddings", {"model": DENSE, "input": ["x"]})
        assert status == 200, body
    finally:
        undeploy("sparse-replica")
