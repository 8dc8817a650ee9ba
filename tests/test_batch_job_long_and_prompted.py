"""The bulk job embeds as the APIs do beyond plain texts: long documents whole (--truncate
window: the same windows, pooled back the same way, the same token counts as /v1/embeddings
with truncate=window), and with a model's prompt per input type (--input-type)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.batch import MODEL, corpus_texts, read_vectors, run_in_process, settings, write_parquet
from tests.support.engine import encoder

pytestmark = pytest.mark.integration


def long_documents(n: int) -> list[str]:
    """~1,000-2,500 token documents made of the corpus's own texts, and a few short ones."""
    texts = corpus_texts(200)
    docs = [" ".join(texts[i * 20 : i * 20 + 10 + 5 * i]) for i in range(n)]
    return docs + texts[-4:]


def test_long_documents_are_embedded_whole_as_the_service_embeds_them(service, tmp_path):
    docs = long_documents(4)
    ids = [f"doc-{i}" for i in range(len(docs))]
    run_in_process(write_parquet(tmp_path / "docs.parquet", ids, docs), tmp_path / "out", truncate="window")
    got_ids, vectors, tokens = read_vectors(tmp_path / "out")
    assert got_ids == ids
    status, _, body = service.post("/v1/embeddings", {"model": MODEL, "input": docs, "truncate": "window"})
    assert status == 200, body
    want = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    windows = [d["windows"] for d in body["data"]]
    assert all(w > 1 for w in windows[:4]) and windows[4:] == [1] * 4
    cos = np.sum(vectors * want, axis=1)
    print(f"bulk vs service, windowed: min cosine {cos.min():.6f}")
    assert cos.min() >= 0.9999  # the same windows; bf16 runs may pad them differently
    assert sum(tokens) == body["usage"]["prompt_tokens"]


def test_an_input_type_puts_the_models_prompt_before_each_text(tmp_path):
    texts = corpus_texts(12)
    ids = list(range(len(texts)))
    prompted = settings(prompts={MODEL: {"query": "query: "}})
    run_in_process(write_parquet(tmp_path / "q.parquet", ids, texts), tmp_path / "out", s=prompted, input_type="query")
    _, vectors, tokens = read_vectors(tmp_path / "out")
    local = encoder(MODEL, "fp32")
    want = local.embed(["query: " + t for t in texts])
    cos = np.sum(vectors * want, axis=1)
    print(f"bulk with the query prompt vs the prompt written out: min cosine {cos.min():.6f}")
    assert cos.min() >= 0.9999
    assert tokens == [len(s) for s in local.tokenize(["query: " + t for t in texts])]


def test_an_input_type_the_model_has_no_prompt_for_is_refused_before_any_work(tmp_path):
    from models.errors import EmbedError

    prompted = settings(prompts={MODEL: {"query": "query: "}})
    path = write_parquet(tmp_path / "q.parquet", [0], ["one text"])
    with pytest.raises(EmbedError, match="input_type"):
        run_in_process(path, tmp_path / "out", s=prompted, input_type="document")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
