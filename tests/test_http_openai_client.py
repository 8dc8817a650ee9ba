"""The unmodified `openai` client against the running service gets sentence-transformers' vectors."""

from __future__ import annotations

import numpy as np
import pytest
from openai import BadRequestError, OpenAI

from models.variant_fidelity import cosines
from tests.support.engine import fidelity_texts, reference_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(service):
    return OpenAI(base_url=service.http_url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def texts():
    t = fidelity_texts()
    return t[:40] + t[-40:]  # short ones and long ones


def vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float32)


@pytest.mark.parametrize("encoding_format", [None, "float"])  # None: the client's default, base64
def test_openai_client_gets_reference_vectors(client, texts, encoding_format):
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}
    resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, **kwargs)
    assert [d.index for d in resp.data] == list(range(len(texts)))
    assert resp.model == "sentence-transformers/all-MiniLM-L6-v2"
    ref = reference_model("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=True)
    assert cosines(vectors(resp), ref).min() >= 0.9999


def test_usage_counts_tokens_with_the_real_tokenizer(client, service):
    resp = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello world", "a"])
    assert resp.usage.prompt_tokens == 4 + 3 == resp.usage.total_tokens


@pytest.mark.parametrize("dims", [64, 128, 256])
def test_dimensions_give_renormalized_truncated_vectors(client, texts, dims):
    full = vectors(client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[:10], encoding_format="float"))
    cut = vectors(
        client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[:10], dimensions=dims, encoding_format="float")
    )
    assert cut.shape == (10, dims)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    expected = full[:, :dims] / np.linalg.norm(full[:, :dims], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


def test_token_ids_are_a_bad_request_that_names_the_langchain_option(client, service):
    """The service's default (tests/test_token_ids_input.py shows ids from /tokenize accepted)."""
    ids = service.post("/tokenize", {"model": "all-MiniLM-L6-v2", "input": ["the quick brown fox"]})[2]["tokens"][0]
    with pytest.raises(BadRequestError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=ids, encoding_format="float")


def test_two_models_are_served_at_once(client, texts):
    mini = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[:20])
    mpnet = client.embeddings.create(model="all-mpnet-base-v2", input=texts[:20])
    assert len(mini.data[0].embedding) == 384 and len(mpnet.data[0].embedding) == 768
    ref = reference_model("all-mpnet-base-v2").encode(texts[:20], normalize_embeddings=True)
    assert cosines(vectors(mpnet), ref).min() >= 0.9999
    listed = {m.id for m in client.models.list().data}
    assert listed == {"sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"}
