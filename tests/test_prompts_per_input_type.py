"""Input types put the model's prompt before each text on every front door, exactly as
sentence-transformers `encode(..., prompt=...)` does; the cache keeps prompted and plain vectors
apart; long documents get the prompt in every window; an input type without a prompt is a 400
unless the model declares none; /v1/models and ListModels say which."""

from __future__ import annotations

import uuid

import cohere
import grpc
import numpy as np
import pytest

from models.variant_fidelity import cosines
from models.prompts import INPUT_TYPES
from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from tests.support.engine import fidelity_texts, reference_model
from tests.support.service import deploy, undeploy
from tests.test_long_documents import by_hand, document

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
# Prompts the shipped models do not declare, set through the service setting (EMBEDSERVE_PROMPTS).
PROMPTS = {"search_query": "query: ", "search_document": "passage: "}
PROMPTED_MAX_WINDOWS = 4


@pytest.fixture(scope="module")
def prompted_service(ray_serve):
    """all-MiniLM-L6-v2 with prompts per input type and a small limit of windows per text."""
    app = deploy(
        ray_serve, "prompted", "/prompted", models=[M], prompts={M: PROMPTS},
        max_windows_per_text=PROMPTED_MAX_WINDOWS, cache="memory", encoder_num_cpus=0.5, accept_token_ids=True,
    )
    yield app
    undeploy("prompted")


@pytest.fixture(scope="module")
def texts():
    t = fidelity_texts()
    return t[:10] + t[-2:]  # the long ones are truncated after the prompt, as sentence-transformers does


def openai_route(app, texts, **extra) -> np.ndarray:
    status, _, body = app.post("/v1/embeddings", {"model": M, "input": texts, **extra})
    assert status == 200, body
    return np.array([d["embedding"] for d in body["data"]])


def grpc_route(app, texts, **fields) -> np.ndarray:
    with app.grpc_channel() as channel:
        resp = pbg.EmbeddingServiceStub(channel).Embed(
            pb.EmbedRequest(model=M, texts=texts, **fields), metadata=app.grpc_metadata, timeout=120
        )
    return np.array([list(e.values) for e in resp.data])


def cohere_route(app, texts, input_type) -> np.ndarray:
    co = cohere.ClientV2(api_key="unused", base_url=app.http_url, timeout=120, log_warning_experimental_features=False)
    return np.array(co.embed(model=M, texts=texts, input_type=input_type).embeddings.float_)


@pytest.mark.parametrize("input_type", sorted(PROMPTS))
def test_every_front_door_applies_the_prompt_like_sentence_transformers(prompted_service, texts, input_type):
    ref = reference_model(M).encode(texts, prompt=PROMPTS[input_type], normalize_embeddings=True)
    plain = reference_model(M).encode(texts, normalize_embeddings=True)
    assert cosines(ref, plain).min() < 0.99  # the prompt changes the vectors: the check below can fail
    got = {
        "cohere": cohere_route(prompted_service, texts, input_type),
        "openai": openai_route(prompted_service, texts, input_type=input_type),
        "grpc": grpc_route(prompted_service, texts, input_type=input_type),
    }
    for door, vectors in got.items():
        assert cosines(vectors, ref).min() >= 0.9999, door


def test_no_input_type_embeds_the_plain_text(prompted_service, texts):
    plain = reference_model(M).encode(texts, normalize_embeddings=True)
    assert cosines(openai_route(prompted_service, texts), plain).min() >= 0.9999


def test_every_window_of_a_long_document_carries_the_prompt(prompted_service):
    short = [t for t in fidelity_texts() if len(t) < 200]
    doc = document(1, 600, short)  # short texts joined to ~600 tokens: 3 windows, within the limit of 4
    vector, windows, tokens = by_hand(doc, PROMPTS["search_query"])
    assert 2 <= windows <= PROMPTED_MAX_WINDOWS
    status, _, err = prompted_service.post("/v1/embeddings", {"model": M, "input": doc * 3, "truncate": "window"})
    assert status == 400 and f"limit of {PROMPTED_MAX_WINDOWS} windows" in err["error"]["message"]
    status, _, body = prompted_service.post(
        "/v1/embeddings", {"model": M, "input": doc, "truncate": "window", "input_type": "search_query"}
    )
    assert status == 200, body
    assert cosines(np.array([body["data"][0]["embedding"]]), vector[None]).min() >= 0.9999
    assert body["data"][0]["windows"] == windows and body["usage"]["prompt_tokens"] == tokens


def test_the_cache_keeps_prompted_and_plain_vectors_apart(prompted_service):
    batch = [f"cache and prompts {uuid.uuid4().hex[:8]} {i}" for i in range(3)]

    def call(**extra):
        status, headers, body = prompted_service.post("/v1/embeddings", {"model": M, "input": batch, **extra})
        assert status == 200, body
        return np.array([d["embedding"] for d in body["data"]]), {k.lower(): v for k, v in headers.items()}["x-cache-hits"]

    query, hits_query = call(input_type="search_query")
    plain, hits_plain = call()
    document, hits_document = call(input_type="search_document")
    again, hits_again = call(input_type="search_query")
    assert (hits_query, hits_plain, hits_document, hits_again) == ("0", "0", "0", "3")
    assert cosines(query, plain).max() < 0.999 and cosines(query, document).max() < 0.999
    np.testing.assert_array_equal(query, again)


def test_an_input_type_without_a_prompt_is_a_400_on_every_front_door(prompted_service):
    status, _, err = prompted_service.post("/v2/embed", {"model": M, "texts": ["x"], "input_type": "classification"})
    assert status == 400 and "search_query" in err["message"]
    status, _, err = prompted_service.post("/v1/embeddings", {"model": M, "input": "x", "input_type": "classification"})
    assert status == 400 and err["error"]["param"] == "input_type"
    with pytest.raises(grpc.RpcError) as info:
        grpc_route(prompted_service, ["x"], input_type="classification")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "classification" in info.value.details()


def test_tokenize_counts_the_prompt_of_the_input_type(prompted_service):
    plain = prompted_service.post("/tokenize", {"model": M, "input": "cats"})[2]
    query = prompted_service.post("/tokenize", {"model": M, "input": "cats", "input_type": "search_query"})[2]
    prompt_tokens = prompted_service.post("/tokenize", {"model": M, "input": PROMPTS["search_query"].strip()})[2]
    assert query["counts"][0] == plain["counts"][0] + prompt_tokens["counts"][0] - 2  # one [CLS] and [SEP]
    embedded = prompted_service.post("/v1/embeddings", {"model": M, "input": "cats", "input_type": "search_query"})[2]
    assert embedded["usage"]["prompt_tokens"] == query["counts"][0]


def test_token_ids_with_a_prompted_input_type_are_refused(prompted_service):
    status, _, err = prompted_service.post("/v1/embeddings", {"model": M, "input": [101, 7592, 102], "input_type": "search_query"})
    assert status == 400 and err["error"]["param"] == "input_type"


def test_a_model_without_prompts_embeds_every_input_type_as_plain_text(service):
    batch = ["plain for every type", "a second text"]
    plain = openai_route(service, batch)
    for input_type in INPUT_TYPES:
        np.testing.assert_array_equal(openai_route(service, batch, input_type=input_type), plain)
    status, _, err = service.post("/v1/embeddings", {"model": M, "input": batch, "input_type": "search_everything"})
    assert status == 400 and err["error"]["param"] == "input_type"


def card(app, model_id: str) -> dict:
    _, _, models = app.get("/v1/models")
    return next(m for m in models["data"] if m["id"] == model_id)


def test_models_say_which_prompts_and_input_types_each_model_has(service, prompted_service):
    bare = card(service, "sentence-transformers/all-MiniLM-L6-v2")
    assert (bare["prompts"], bare["prompts_declared"], bare["input_types"]) == ({}, False, list(INPUT_TYPES))
    prompted = card(prompted_service, "sentence-transformers/all-MiniLM-L6-v2")
    assert (prompted["prompts"], prompted["prompts_declared"]) == (PROMPTS, True)
    assert prompted["input_types"] == sorted(PROMPTS)
    assert (prompted["window_tokens"], prompted["window_overlap_tokens"], prompted["max_windows_per_text"]) == (
        256, 32, PROMPTED_MAX_WINDOWS)
    with prompted_service.grpc_channel() as channel:
        listed = pbg.EmbeddingServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=prompted_service.grpc_metadata)
    (info,) = listed.models
    assert dict(info.prompts) == PROMPTS and list(info.input_types) == sorted(PROMPTS) and info.prompts_declared
    assert (info.window_tokens, info.window_overlap_tokens, info.max_windows_per_text) == (256, 32, PROMPTED_MAX_WINDOWS)
