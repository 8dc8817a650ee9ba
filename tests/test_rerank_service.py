"""Rerank served by the real service on loopback: Cohere's `POST /v2/rerank` (through the
unmodified `cohere` client too) and vLLM / Jina's `POST /v1/rerank` give CrossEncoder.predict's
scores, best first, with top_n, return_documents and max_tokens_per_doc; auth as on every route;
an embedding model asked to rerank and a rerank model asked to embed are clean 4xx; bad inputs
(the table) are clean 4xx in each route's error shape, never a 5xx, and the service answers
after."""

from __future__ import annotations

import uuid

import cohere
import numpy as np
import pytest

from tests.support.cross_encoders import reference
from tests.support.service import artifact_dir, deploy, undeploy

pytestmark = pytest.mark.integration

KEY = "rerank-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
MAX_DOCS = 16
EMBEDDER = "all-MiniLM-L6-v2"
QUERY = "how do cats sleep"
DOCS = ["Cats sleep most of the day.", "The stock market fell.", "A kitten naps in the sun.",
        "Dogs bark at night. " * 40, "Quarterly earnings beat expectations."]


@pytest.fixture(scope="module")
def rerank_service(ray_serve, cross_encoders):
    # The shipped embedding model beside the cross-encoders (its export linked, not redone).
    link = cross_encoders.artifact_dir / "all-minilm-l6-v2"
    if not link.exists():
        link.symlink_to(artifact_dir() / "all-minilm-l6-v2")
    app = deploy(ray_serve, "rerank", "/rerank", models=["tiny-rerank", "tiny-rerank-3", EMBEDDER],
                 artifact_dir=cross_encoders.artifact_dir, variant="fp32", cache="memory", encoder_num_cpus=0.5,
                 max_inputs=MAX_DOCS, api_keys=KEY)
    yield app
    undeploy("rerank")


def ref_scores(cross_encoders, name, docs=DOCS, query=QUERY):
    return np.asarray(reference(cross_encoders.folders[name], [(query, d) for d in docs]))


def test_cohere_v2_rerank_gives_cross_encoder_scores_best_first(rerank_service, cross_encoders):
    status, headers, body = rerank_service.post(
        "/v2/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCS}, AUTH)
    assert status == 200, body
    ref = ref_scores(cross_encoders, "tiny-rerank")
    got = [r["index"] for r in body["results"]]
    assert got == list(np.argsort(-ref, kind="stable"))
    for r in body["results"]:
        assert abs(r["relevance_score"] - ref[r["index"]]) <= 1e-4
        assert "document" not in r
    assert body["meta"]["billed_units"]["search_units"] == 1 and body["meta"]["billed_units"]["input_tokens"] > 0
    assert body["id"] and float(headers["x-inference-time"]) > 0


def test_top_n_and_return_documents(rerank_service):
    status, _, body = rerank_service.post("/v2/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCS,
                                                        "top_n": 2, "return_documents": True}, AUTH)
    assert status == 200, body
    assert len(body["results"]) == 2
    assert all(r["document"]["text"] == DOCS[r["index"]] for r in body["results"])
    _, _, whole = rerank_service.post("/v2/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCS}, AUTH)
    assert body["results"] == [{**r, "document": {"text": DOCS[r["index"]]}} for r in whole["results"][:2]]


def test_a_repeated_rerank_is_answered_from_the_cache(rerank_service):
    docs = [f"{d} ({uuid.uuid4().hex[:8]})" for d in DOCS]  # pairs no other test has scored
    req = {"model": "tiny-rerank", "query": QUERY, "documents": docs}
    _, first_headers, first = rerank_service.post("/v2/rerank", req, AUTH)
    status, headers, again = rerank_service.post("/v2/rerank", req, AUTH)
    assert status == 200, again
    first_headers, headers = ({k.lower(): v for k, v in h.items()} for h in (first_headers, headers))
    assert (first_headers["x-cache-hits"], headers["x-cache-hits"]) == ("0", str(len(docs)))
    assert again["results"] == first["results"]  # the same floats, bit for bit
    assert again["meta"]["billed_units"] == first["meta"]["billed_units"]
    _, cut_headers, _ = rerank_service.post("/v2/rerank", {**req, "max_tokens_per_doc": 4}, AUTH)
    assert {k.lower(): v for k, v in cut_headers.items()}["x-cache-hits"] == "0", "max_tokens_per_doc changes the score: its own entries"


def test_max_tokens_per_doc_cuts_the_documents(rerank_service, cross_encoders):
    from models.model_folder import exported_spec
    from models.rerank import PairTokenizer

    spec = exported_spec(cross_encoders.artifact_dir, "tiny-rerank")
    cut = PairTokenizer(cross_encoders.artifact_dir / "tiny-rerank" / "tokenizer.json", spec).cut(DOCS, 4)
    status, _, body = rerank_service.post("/v2/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCS,
                                                        "max_tokens_per_doc": 4}, AUTH)
    assert status == 200, body
    ref = ref_scores(cross_encoders, "tiny-rerank", cut)
    assert max(abs(r["relevance_score"] - ref[r["index"]]) for r in body["results"]) <= 1e-4


def test_v1_rerank_in_vllm_and_jina_shape(rerank_service, cross_encoders):
    status, _, body = rerank_service.post("/v1/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCS,
                                                        "top_n": 3}, AUTH)
    assert status == 200, body
    assert body["model"] == "tiny-rerank" and body["usage"]["total_tokens"] > 0 and body["id"]
    ref = ref_scores(cross_encoders, "tiny-rerank")
    assert [r["index"] for r in body["results"]] == list(np.argsort(-ref, kind="stable")[:3])
    for r in body["results"]:
        assert r["document"] == {"text": DOCS[r["index"]]}
        assert abs(r["relevance_score"] - ref[r["index"]]) <= 1e-4


def test_a_three_label_model_ranks_by_its_best_label_and_reports_each(rerank_service, cross_encoders):
    status, _, body = rerank_service.post("/v1/rerank", {"model": "tiny-rerank-3", "query": QUERY, "documents": DOCS},
                                          AUTH)
    assert status == 200, body
    ref = ref_scores(cross_encoders, "tiny-rerank-3")
    for r in body["results"]:
        assert np.abs(np.array(r["scores"]) - ref[r["index"]]).max() <= 1e-4
        assert abs(r["relevance_score"] - ref[r["index"]].max()) <= 1e-4
    assert [r["index"] for r in body["results"]] == list(np.argsort(-ref.max(axis=1), kind="stable"))


def test_the_unmodified_cohere_client_reranks(rerank_service, cross_encoders):
    co = cohere.ClientV2(api_key=KEY, base_url=rerank_service.http_url, timeout=120,
                         log_warning_experimental_features=False)
    res = co.rerank(model="tiny-rerank", query=QUERY, documents=DOCS, top_n=3)
    ref = ref_scores(cross_encoders, "tiny-rerank")
    assert [r.index for r in res.results] == list(np.argsort(-ref, kind="stable")[:3])
    assert all(abs(r.relevance_score - ref[r.index]) <= 1e-4 for r in res.results)
    with pytest.raises(cohere.errors.BadRequestError) as err:
        co.rerank(model=EMBEDDER, query=QUERY, documents=DOCS)
    assert "embedding model" in str(err.value.body)


def test_models_list_says_each_task(rerank_service):
    status, _, body = rerank_service.get("/v1/models", AUTH)
    assert status == 200, body
    tasks = {m["id"]: m["task"] for m in body["data"]}
    assert tasks == {"tiny-rerank": "rerank", "tiny-rerank-3": "rerank", f"sentence-transformers/{EMBEDDER}": "embed"}


OK = {"model": "tiny-rerank", "query": QUERY, "documents": DOCS}


def body(**changes) -> dict:
    out = {**OK, **changes}
    return {k: v for k, v in out.items() if v is not ...}


# (name, body, status, a word the message must hold)
CASES = [
    ("no query", body(query=...), 400, "query"),
    ("empty query", body(query=""), 400, "query"),
    ("blank query", body(query="   "), 400, "query"),
    ("query a number", body(query=3), 400, ""),
    ("no documents", body(documents=...), 400, "documents"),
    ("documents empty", body(documents=[]), 400, "documents"),
    ("documents a string", body(documents="x"), 400, ""),
    ("a document a number", body(documents=["a", 1]), 400, ""),
    ("an empty document", body(documents=["ok", ""]), 400, "documents[1]"),
    ("too many documents", body(documents=["x"] * (MAX_DOCS + 1)), 400, f"at most {MAX_DOCS}"),
    ("unknown model", body(model="no-such-reranker"), 404, "no-such-reranker"),
    ("no model", body(model=...), 400, ""),
    ("an embedding model asked to rerank", body(model=EMBEDDER), 400, "embedding model"),
    ("top_n zero", body(top_n=0), 400, "top_n"),
    ("max_tokens_per_doc zero", body(max_tokens_per_doc=0), 400, "max_tokens_per_doc"),
]


@pytest.mark.parametrize("route", ["/v2/rerank", "/v1/rerank"])
@pytest.mark.parametrize("name,payload,status,word", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clean_4xx_in_the_routes_shape(rerank_service, route, name, payload, status, word):
    if route == "/v1/rerank" and "max_tokens_per_doc" in payload:
        payload = {k: v for k, v in payload.items() if k != "max_tokens_per_doc"}
        status, word = 200, ""  # not a field of this route: ignored
    got, _, out = rerank_service.post(route, payload, AUTH)
    assert got == status, (name, out)
    if status != 200:
        message = out["message"] if route == "/v2/rerank" else out["error"]["message"]
        assert word in message, message


def test_no_key_is_a_401_and_bad_json_a_400(rerank_service):
    status, _, out = rerank_service.post("/v2/rerank", OK)
    assert status == 401 and out["message"]
    status, _, out = rerank_service.post("/v1/rerank", OK)
    assert status == 401 and out["error"]["message"]
    status, _, out = rerank_service.post("/v2/rerank", b"{not json", AUTH)
    assert status == 400 and out["message"]


def test_a_rerank_model_asked_to_embed_is_a_4xx(rerank_service):
    status, _, out = rerank_service.post("/v1/embeddings", {"model": "tiny-rerank", "input": ["x"]}, AUTH)
    assert status == 400 and "rerank model" in out["error"]["message"], out
    status, _, out = rerank_service.post("/v2/embed", {"model": "tiny-rerank", "texts": ["x"]}, AUTH)
    assert status == 400 and "rerank model" in out["message"], out


def test_the_service_answers_after_the_bad_inputs(rerank_service):
    status, _, out = rerank_service.post("/v2/rerank", OK, AUTH)
    assert status == 200 and len(out["results"]) == len(DOCS)


# ---- gRPC Rerank ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grpc_stub(rerank_service):
    from serving.grpc_gen import embedding_pb2_grpc as pbg

    with rerank_service.grpc_channel() as channel:
        yield pbg.EmbeddingServiceStub(channel), [*rerank_service.grpc_metadata, *AUTH.items()]


def test_grpc_rerank_gives_the_http_answer(grpc_stub, rerank_service, cross_encoders):
    from serving.grpc_gen import embedding_pb2 as pb

    stub, md = grpc_stub
    resp, call = stub.Rerank.with_call(pb.RerankRequest(model="tiny-rerank", query=QUERY, documents=DOCS, top_n=3,
                                                        return_documents=True), metadata=md)
    ref = ref_scores(cross_encoders, "tiny-rerank")
    assert resp.model == "tiny-rerank" and resp.usage.prompt_tokens > 0
    assert [r.index for r in resp.results] == list(np.argsort(-ref, kind="stable")[:3])
    assert all(abs(r.relevance_score - ref[r.index]) <= 1e-4 and r.document == DOCS[r.index] for r in resp.results)
    trailer = dict(call.trailing_metadata())
    # the HTTP tests scored these pairs already: the same cache answers gRPC, and says so
    assert trailer["x-cache-hits"] == str(len(DOCS)) and float(trailer["x-total-time"]) > 0
    three = stub.Rerank(pb.RerankRequest(model="tiny-rerank-3", query=QUERY, documents=DOCS), metadata=md)
    assert all(len(r.scores) == 3 and not r.HasField("document") for r in three.results)


@pytest.mark.parametrize("name,request_fields,code", [
    ("no query", {"documents": DOCS}, "INVALID_ARGUMENT"),
    ("no documents", {"query": QUERY}, "INVALID_ARGUMENT"),
    ("too many documents", {"query": QUERY, "documents": ["x"] * (MAX_DOCS + 1)}, "INVALID_ARGUMENT"),
    ("an empty document", {"query": QUERY, "documents": ["a", ""]}, "INVALID_ARGUMENT"),
    ("top_n zero", {"query": QUERY, "documents": DOCS, "top_n": 0}, "INVALID_ARGUMENT"),
    ("an embedding model", {"model": EMBEDDER, "query": QUERY, "documents": DOCS}, "INVALID_ARGUMENT"),
    ("unknown model", {"model": "no-such-reranker", "query": QUERY, "documents": DOCS}, "NOT_FOUND"),
])
def test_grpc_bad_input_is_a_clean_error_code(grpc_stub, name, request_fields, code):
    import grpc

    from serving.grpc_gen import embedding_pb2 as pb

    stub, md = grpc_stub
    with pytest.raises(grpc.RpcError) as err:
        stub.Rerank(pb.RerankRequest(**{"model": "tiny-rerank", **request_fields}), metadata=md)
    assert err.value.code().name == code and err.value.details(), (name, err.value.details())


def test_grpc_list_models_lists_the_rerank_models(grpc_stub):
    from serving.grpc_gen import embedding_pb2 as pb

    stub, md = grpc_stub
    models = {m.id: m for m in stub.ListModels(pb.ListModelsRequest(), metadata=md).models}
    assert models["tiny-rerank-3"].dimension == 3 and models["tiny-rerank"].dimension == 1


# ---- the README's Rerank examples, run against this service (the model renamed) ----------------
def readme_rerank() -> str:
    from tests.support.service import ROOT

    return (ROOT / "README.md").read_text().split("## Rerank\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_curl_example_gives_the_shape_it_shows(rerank_service):
    import json
    import re

    text = readme_rerank()
    route = re.search(r"curl -s localhost:8000(\S+)", text).group(1)
    payload = {**json.loads(re.search(r"-d '(.*?)'", text, re.S).group(1)), "model": "tiny-rerank"}
    shown = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    status, _, live = rerank_service.post(route, payload, AUTH)
    assert status == 200, live
    assert len(live["results"]) == payload["top_n"] == shown.count('"index"')
    assert all(set(r) == {"index", "relevance_score", "document"} for r in live["results"])
    assert [r["document"]["text"] for r in sorted(live["results"], key=lambda r: r["index"])] == payload["documents"]
    assert set(live["meta"]["billed_units"]) == {"search_units", "input_tokens"} and '"search_units":1' in shown


def test_the_readme_cohere_client_example_runs(rerank_service):
    import re

    code = re.search(r"```python\n(.*?)```", readme_rerank(), re.S).group(1)
    code = (code.replace("http://localhost:8000", rerank_service.http_url).replace('api_key="unused"', f'api_key="{KEY}"')
            .replace("my-reranker", "tiny-rerank"))
    scope: dict = {}
    exec(compile(code, "README.md (Rerank)", "exec"), scope)  # noqa: S102 (the README's own example)
    assert len(scope["best"]) == 2 and scope["best"][0][1] >= scope["best"][1][1]
