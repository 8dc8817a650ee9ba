"""A dataset whose answers are known by construction gives the known figures, through the real
engine: a query that is its relevant document's own text finds it first under every option; a
query whose judged document has an identical twin with a larger id finds the twin first (trec_eval's
tie rule), so its relevant document is second. The slices hold the queries they should."""

from __future__ import annotations

import math

import pytest

from serving.eval import runner
from serving.eval.data import load
from tests.support.eval import local_embedder, write_pairs

TOPICS = [
    "Nightly backups of the family photo archive to an external disk.",
    "A recipe for sourdough bread with a long cold fermentation.",
    "Tide tables for the harbour, published on 2024-06-11 for the summer season.",
    "Über die Geschichte der Eisenbahn in den Alpen.",
    "Training schedule for a first marathon, week by week.",
]
TWIN = "Repairing a bicycle puncture without taking the wheel off."
LONG = " ".join(f"Paragraph {i} of a very long manual on configuring network routers and firewalls." for i in range(60))


def rows() -> list[dict]:
    out = [{"query": t, "document": t, "query_id": f"q{i}", "document_id": f"d{i}", "grade": 2, "kind": "copy"}
           for i, t in enumerate(TOPICS)]
    # "twin-b" sorts after "twin-a": at equal scores trec_eval ranks twin-b first.
    out.append({"query": TWIN, "document": TWIN, "query_id": "q-twin", "document_id": "twin-a", "grade": 1, "kind": "twin"})
    out.append({"query": LONG, "document": LONG, "query_id": "q-long", "document_id": "d-long", "grade": 2, "kind": "copy"})
    return out


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("known")
    paths = write_pairs(folder, rows())
    beir = paths["beir"]
    corpus = (beir / "corpus.jsonl").read_text(encoding="utf-8")
    (beir / "corpus.jsonl").write_text(corpus + f'{{"_id": "twin-b", "title": "", "text": "{TWIN}"}}\n', encoding="utf-8")
    ds = load(beir)
    assert len(ds.doc_ids) == 8 and len(ds.query_ids) == 7
    opts = runner.Options(dimensions=("128", "full"), input_types=("on",), ks=(1, 5))
    return runner.run(ds, [local_embedder()], opts)


def test_every_option_finds_copies_first_and_the_twin_second(result):
    n = 7  # queries: six find their document first, the twin query finds it second
    want = {"recall@1": 6 / n, "recall@5": 1.0, "mrr@10": (6 + 1 / 2) / n,
            "ndcg@10": (6 + 1 / math.log2(3)) / n}
    for row in result.rows:
        for metric, value in want.items():
            assert row["metrics"][metric] == pytest.approx(value, abs=1e-9), (row["encoding"], row["dims_label"], metric)
        assert row["run"]["q-twin"].keys() >= {"twin-a", "twin-b"}
        assert list(row["run"]["q-twin"])[:2] == ["twin-b", "twin-a"]


def test_every_option_ran_including_the_whole_document_pass(result):
    options = {(r["encoding"], r["dims_label"], r["truncate"]) for r in result.rows}
    assert options == {(e, d, "end") for e in runner.search.ENCODINGS for d in ("128", "full")} | {("float", "full", "window")}
    assert result.not_run == []
    sizes = {(r["encoding"], r["dims_label"]): r["bytes_per_vector"] for r in result.rows}
    assert sizes[("float", "full")] == 384 * 4 and sizes[("int8", "128")] == 128 and sizes[("binary", "full")] == 48


def test_the_slices_hold_the_queries_they_should(result):
    assert result.slices["long docs"] == 1  # only d-long is over the 256-token window
    assert result.slices["numbers"] == 2  # the tide table's date, the long manual's paragraph numbers
    assert result.slices["non-ascii"] == 1  # Über
    assert result.slices["kind=copy"] == 6 and result.slices["kind=twin"] == 1
    float_full = next(r for r in result.rows if (r["encoding"], r["dims_label"], r["truncate"]) == ("float", "full", "end"))
    assert float_full["slices"]["kind=twin"]["mrr@10"] == 0.5
    assert float_full["slices"]["kind=copy"]["recall@1"] == 1.0
