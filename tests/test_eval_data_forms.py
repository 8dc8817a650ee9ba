"""Every DATA form of `embedserve eval` reads the same judged pairs into the same dataset and
gives the same figures: JSONL, CSV and Parquet pairs files, and a BEIR folder. A pairs file
without ids or grades works too (ids by text, grade 1)."""

from __future__ import annotations

import json

import pytest

from models.corpus import read_jsonl
from serving.eval import runner
from serving.eval.data import load
from tests.support.eval import QUICK, local_embedder, write_pairs
from tests.support.service import ROOT

FORMS = ("jsonl", "csv", "parquet", "beir")


def judged_pairs() -> list[dict]:
    """Real texts: each query a PyPI summary of the demo set, its documents that package's README
    runs (grade 2 the opening, 1 the next), as the demo set judges them; a `topic` field."""
    demo = ROOT / "serving" / "eval" / "data" / "demo"
    queries = [json.loads(line) for line in (demo / "queries.jsonl").read_text().splitlines()][:12]
    docs = {d["_id"]: d["text"] for d in map(json.loads, (demo / "corpus.jsonl").read_text().splitlines())}
    rows = []
    for line in (demo / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        query = next((x for x in queries if x["_id"] == q), None)
        if query:
            rows.append({"query": query["text"], "document": docs[d], "query_id": q, "document_id": d,
                         "grade": int(g), "topic": query["topic"]})
    return rows


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("forms"), judged_pairs())


def test_every_form_reads_the_same_dataset(forms):
    loaded = {form: load(path) for form, path in forms.items()}
    first = loaded["jsonl"]
    assert len(first.query_ids) == 12 and len(first.doc_ids) > 12 and set(first.query_fields) == {"topic"}
    assert any(g == 2 for q in first.qrels.values() for g in q.values())
    for form in FORMS:
        ds = loaded[form]
        assert (ds.query_ids, ds.query_texts, ds.doc_ids, ds.doc_texts, ds.qrels, ds.query_fields, ds.skipped) == (
            first.query_ids, first.query_texts, first.doc_ids, first.doc_texts, first.qrels, first.query_fields,
            first.skipped), form


def test_every_form_gives_the_same_figures(forms):
    results = {form: runner.run(load(path), [local_embedder()], QUICK) for form, path in forms.items()}
    want = {(r["encoding"], r["dims_label"]): r["metrics"] for r in results["jsonl"].rows}
    assert len(want) == 10
    for form in FORMS:
        assert {(r["encoding"], r["dims_label"]): r["metrics"] for r in results[form].rows} == want, form


def test_a_pairs_file_needs_no_ids_nor_grades(tmp_path, forms):
    plain = [{"query": r["query"], "document": r["document"]} for r in read_jsonl(forms["jsonl"]) if r]
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in plain), encoding="utf-8")
    ds, full = load(path), load(forms["jsonl"])
    assert ds.query_texts == full.query_texts and ds.doc_texts == full.doc_texts
    assert ds.query_ids[:2] == ["q1", "q2"] and ds.doc_ids[:2] == ["d1", "d2"]
    assert sorted(len(v) for v in ds.qrels.values()) == sorted(len(v) for v in full.qrels.values())
    assert {g for v in ds.qrels.values() for g in v.values()} == {1}
