"""Long documents embedded whole (truncate=window): 5,000-token documents equal the same
computation done by hand with sentence-transformers (overlapping windows of the model's size,
the mean of every window's token states, normalized); windows ride the ordinary batching
rounds; usage counts every token; all three front doors agree; too many windows is a 400.
(Windows with a prompt: tests/test_prompts_per_input_type.py.)"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from models.variant_fidelity import cosines
from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from tests.support.engine import fidelity_texts, reference_model

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
OVERLAP = 32  # the service's default, stated in /v1/models


def document(start: int, tokens: int, texts: list[str] | None = None) -> str:
    """Real texts joined until the document has at least `tokens` tokens."""
    texts = texts or fidelity_texts()
    tok = reference_model(M).tokenizer
    parts, n, i = [], 0, start
    while n < tokens:
        t = texts[i % len(texts)]
        parts.append(t)
        n += len(tok(t, add_special_tokens=False)["input_ids"])
        i += 7
    return " ".join(parts)


@functools.lru_cache(maxsize=None)
def documents() -> tuple[str, ...]:
    return document(0, 5000), document(3, 5200), document(5, 4900)


def by_hand(text: str, prompt: str = "") -> tuple[np.ndarray, int, int]:
    """sentence-transformers' tokenizer and transformer module: windows of ids, each with its
    special tokens and the prompt; the mean of all their token states, normalized. Returns
    (vector, windows, tokens)."""
    st = reference_model(M)
    tok = st.tokenizer
    ids = tok(prompt + text, add_special_tokens=False)["input_ids"]
    head = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    assert ids[: len(head)] == head
    body = ids[len(head) :]
    size = st.max_seq_length - tok.num_special_tokens_to_add() - len(head)
    windows, start = [], 0
    while True:
        windows.append(tok.build_inputs_with_special_tokens(head + body[start : start + size]))
        if start + size >= len(body):
            break
        start += size - OVERLAP
    total, count = torch.zeros(st.get_sentence_embedding_dimension(), dtype=torch.float64), 0
    with torch.no_grad():
        for w in windows:
            features = {"input_ids": torch.tensor([w]), "attention_mask": torch.ones(1, len(w), dtype=torch.long)}
            states = st[0](features)["token_embeddings"][0]
            total += states.double().sum(0)
            count += len(w)
    vector = (total / count).numpy()
    return vector / np.linalg.norm(vector), len(windows), sum(len(w) for w in windows)


@functools.lru_cache(maxsize=None)
def hand_results() -> tuple:
    return tuple(by_hand(d) for d in documents())


def test_5000_token_documents_equal_the_hand_computation(service):
    docs, short = list(documents()), "a short text rides along"
    status, headers, body = service.post("/v1/embeddings", {"model": M, "input": docs + [short], "truncate": "window"})
    assert status == 200, body
    got = np.array([d["embedding"] for d in body["data"]])
    want = hand_results()
    assert cosines(got[:3], np.array([w[0] for w in want])).min() >= 0.9999
    assert [d["windows"] for d in body["data"]] == [w[1] for w in want] + [1]
    assert all(w[1] >= 20 for w in want)  # ~5,000 tokens: 20+ windows each
    # The short text is one window: exactly its ordinary vector.
    np.testing.assert_allclose(got[3], service.post("/v1/embeddings", {"model": M, "input": short})[2]["data"][0]["embedding"], atol=1e-6)
    short_tokens = len(reference_model(M).tokenizer(short)["input_ids"])
    assert body["usage"]["prompt_tokens"] == sum(w[2] for w in want) + short_tokens  # every token, overlaps included
    # The windows rode the encoder rounds as ordinary sequences, many at a time.
    assert int({k.lower(): v for k, v in headers.items()}["x-batch-size"]) >= 20


def test_the_cohere_route_and_grpc_embed_long_documents_the_same_way(service):
    docs = list(documents())[:2]
    want = hand_results()[:2]
    status, _, body = service.post("/v2/embed", {"model": M, "texts": docs, "input_type": "search_document", "truncate": "WINDOW"})
    assert status == 200, body
    assert cosines(np.array(body["embeddings"]["float"]), np.array([w[0] for w in want])).min() >= 0.9999
    assert body["windows"] == [w[1] for w in want]
    assert body["meta"]["billed_units"]["input_tokens"] == sum(w[2] for w in want)
    with service.grpc_channel() as channel:
        resp = pbg.EmbeddingServiceStub(channel).Embed(
            pb.EmbedRequest(model=M, texts=docs, truncate=pb.TRUNCATE_WINDOW), metadata=service.grpc_metadata, timeout=300
        )
    assert cosines(np.array([list(e.values) for e in resp.data]), np.array([w[0] for w in want])).min() >= 0.9999
    assert [e.windows for e in resp.data] == [w[1] for w in want]


def test_more_windows_than_the_limit_is_a_400_before_any_work(service):
    huge = documents()[0] * 4  # ~20,000 tokens: over the default limit of 64 windows
    before = service.get("/stats")[2]["encoded_texts"]
    status, _, err = service.post("/v1/embeddings", {"model": M, "input": ["ok", huge], "truncate": "window"})
    assert status == 400 and err["error"]["param"] == "input"
    assert "input[1]" in err["error"]["message"] and "limit of 64 windows" in err["error"]["message"]
    assert service.get("/stats")[2]["encoded_texts"] == before


def test_long_documents_are_cached_whole(service):
    doc = documents()[2]
    first = service.post("/v1/embeddings", {"model": M, "input": doc, "truncate": "window"})
    before = service.get("/stats")[2]["encoded_texts"]
    status, headers, again = service.post("/v1/embeddings", {"model": M, "input": doc, "truncate": "window"})
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["x-cache-hits"] == "1"
    assert service.get("/stats")[2]["encoded_texts"] == before
    assert again["data"] == first[2]["data"]
