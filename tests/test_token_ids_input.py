"""Token ids as input are refused unless the service is told to take them (accept_token_ids):
clients such as LangChain's OpenAIEmbeddings send tiktoken's ids by default, which this
model would read as other words and answer with a wrong vector and a 200. The refusal says
what to do instead. With the setting on, ids from this service's own /tokenize embed as the
text does. The OpenAI batch files of the bulk job follow the same setting; the gRPC and Cohere
routes take text only (their schemas have no token ids)."""

from __future__ import annotations

import numpy as np
import pytest

from models.artifacts import ModelArtifacts
from models.errors import InvalidInput
from models.specs import resolve_model
from serving.batch.openai_file import RequestChecker
from serving.pipeline.runtime import ModelRuntime
from tests.support.service import artifact_dir, deploy, undeploy

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
TIKTOKEN_IDS = [791, 6864, 315, 9822, 374, 12366, 13]  # cl100k_base: "The capital of France is Paris."


@pytest.fixture(scope="module")
def accepting(ray_serve):
    app = deploy(ray_serve, "token-ids", "/token-ids", models=[M], accept_token_ids=True, cache="off",
                 encoder_num_cpus=0.5)
    yield app
    undeploy("token-ids")


@pytest.mark.parametrize("ids", [TIKTOKEN_IDS, [TIKTOKEN_IDS, [101, 102]]], ids=["ids", "lists of ids"])
def test_token_ids_are_refused_by_default_with_the_way_out(service, ids):
    status, _, body = service.post("/v1/embeddings", {"model": M, "input": ids})
    assert status == 400, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == "input" and err["code"] == "token_ids_not_accepted"
    assert "check_embedding_ctx_length=False" in err["message"]
    assert "/tokenize" in err["message"] and "EMBEDSERVE_ACCEPT_TOKEN_IDS" in err["message"]


def test_accepted_ids_from_tokenize_embed_as_the_text(accepting):
    text = "The capital of France is Paris."
    ids = accepting.post("/tokenize", {"model": M, "input": text})[2]["tokens"][0]
    status, _, by_ids = accepting.post("/v1/embeddings", {"model": M, "input": [ids, ids]})
    assert status == 200, by_ids
    by_text = accepting.post("/v1/embeddings", {"model": M, "input": text})[2]
    a, b = np.array(by_ids["data"][1]["embedding"]), np.array(by_text["data"][0]["embedding"])
    assert float(a @ b) >= 0.9999
    assert by_ids["usage"]["prompt_tokens"] == 2 * len(ids)


@pytest.mark.parametrize("ids", [[101, 999999, 102], [101, -5, 102]], ids=["out of vocabulary", "negative"])
def test_accepted_ids_outside_the_vocabulary_are_a_400(accepting, ids):
    status, _, body = accepting.post("/v1/embeddings", {"model": M, "input": ids})
    assert status == 400 and body["error"]["param"] == "input", body
    assert "vocabulary" in body["error"]["message"] or "token id" in body["error"]["message"]


@pytest.mark.parametrize("accept", [False, True])
def test_openai_batch_files_follow_the_same_setting(accept):
    spec = resolve_model(M)
    rt = ModelRuntime.load(spec, ModelArtifacts.load(artifact_dir(), spec), "fp32")
    checker = RequestChecker(rt, 2048, 1 << 20, accept_token_ids=accept)
    body = {"model": M, "input": [101, 7592, 102]}
    if accept:
        job, units = checker.check(body)
        assert job.token_ids == [[101, 7592, 102]] and len(units) == 1
    else:
        with pytest.raises(InvalidInput, match="check_embedding_ctx_length=False"):
            checker.check(body)


def test_grpc_and_cohere_take_text_only(service):
    status, _, body = service.post("/v2/embed", {"model": M, "texts": [[101, 102]], "input_type": "search_query",
                                                 "embedding_types": ["float"]})
    assert status == 400 and body.get("message"), body
