"""`embedserve eval --input-types on,off`: with prompts (EMBEDSERVE_PROMPTS), queries are embedded
as search_query and documents as search_document, exactly as the service prompts them (the
prompt before the text), and "off" embeds the plain texts: two sets of figures. A model without
prompts embeds the same either way and is measured once, as `on=off`."""

from __future__ import annotations

import numpy as np

from serving.eval import runner
from serving.eval.command import DEMO
from serving.eval.data import load
from serving.eval.embed import LocalEmbedder
from serving.settings import Settings
from tests.support.eval import MODEL, local_embedder
from tests.support.service import artifact_dir

PROMPTS = {MODEL: {"search_query": "query: ", "search_document": "passage: "}}


def small_demo():
    """The demo set's first 10 queries and the documents judged for them."""
    ds = load(DEMO)
    ds.query_ids, ds.query_texts = ds.query_ids[:10], ds.query_texts[:10]
    ds.qrels = {q: ds.qrels[q] for q in ds.query_ids}
    ds.query_fields = {f: v[:10] for f, v in ds.query_fields.items()}
    judged = [i for i, d in enumerate(ds.doc_ids) if any(d in j for j in ds.qrels.values())]
    ds.doc_ids, ds.doc_texts = [ds.doc_ids[i] for i in judged], [ds.doc_texts[i] for i in judged]
    return ds


def test_prompted_and_plain_are_two_configs_with_the_services_prompts():
    prompted = LocalEmbedder.load(MODEL, "fp32", Settings(artifact_dir=artifact_dir(), prompts=PROMPTS))
    ds = small_demo()
    opts = runner.Options(dimensions=("full",), encodings=("float",), input_types=("on", "off"), ks=(1, 10),
                          long_documents=False)
    result = runner.run(ds, [prompted], opts)
    assert sorted(r["input_types"] for r in result.rows) == ["off", "on"]
    on = prompted.embed("queries", ds.query_texts, "search_query", "end")
    off = prompted.embed("queries", ds.query_texts, None, "end")
    by_hand = local_embedder().embed("by-hand", ["query: " + t for t in ds.query_texts], None, "end")
    assert np.min(np.sum(on * by_hand, axis=1)) >= 0.9999
    assert np.max(np.sum(on * off, axis=1)) < 0.999  # the prompt changes every query's vector
    docs_on = prompted.embed("corpus", ds.doc_texts[:5], "search_document", "end")
    docs_by_hand = local_embedder().embed("by-hand", ["passage: " + t for t in ds.doc_texts[:5]], None, "end")
    assert np.min(np.sum(docs_on * docs_by_hand, axis=1)) >= 0.9999


def test_a_model_without_prompts_is_measured_once():
    result = runner.run(small_demo(), [local_embedder()], runner.Options(
        dimensions=("full",), encodings=("float",), input_types=("on", "off"), ks=(1,), long_documents=False))
    assert [r["input_types"] for r in result.rows] == ["on=off"]
