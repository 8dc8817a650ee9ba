"""`embedserve eval`'s metrics are trec_eval's (pytrec_eval, the reference): recall@k, MRR@10 and
graded NDCG@10 on fixed runs full of tied scores, and on the runs its own search makes of
quantized codes, where Hamming and integer scores tie all the time. No model: pure numpy."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

from serving.eval import metrics, search

KS = (1, 5, 10, 100)
MEASURES = {"recall.1", "recall.5", "recall.10", "recall.100", "ndcg_cut.10", "recip_rank"}


def reference(qrels: dict, run: dict) -> dict[str, dict[str, float]]:
    """pytrec_eval's figures, named as ours; MRR@10 from the uncut reciprocal rank."""
    raw = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    return {q: {**{f"recall@{k}": m[f"recall_{k}"] for k in KS}, "ndcg@10": m["ndcg_cut_10"],
                "mrr@10": m["recip_rank"] if m["recip_rank"] >= 1 / 10 else 0.0} for q, m in raw.items()}


def ours(qrels: dict, run: dict) -> dict[str, dict[str, float]]:
    return metrics.evaluate({q: metrics.ranked(run[q]) for q in qrels}, qrels, KS)


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for q in want:
        for m, v in want[q].items():
            assert got[q][m] == pytest.approx(v, abs=1e-12), (q, m)


def graded_qrels(rng, queries: int, docs: list[str]) -> dict[str, dict[str, int]]:
    """Grades 0..3; some relevant documents never retrieved; every query has a relevant one."""
    qrels = {}
    for q in range(queries):
        judged = rng.choice(len(docs) + 20, size=rng.integers(1, 12), replace=False)
        grades = {(docs[j] if j < len(docs) else f"unretrieved-{j}"): int(rng.integers(0, 4)) for j in judged}
        grades[docs[int(rng.integers(len(docs)))]] = int(rng.integers(1, 4))
        qrels[f"q{q}"] = grades
    return qrels


def test_fixed_runs_with_ties_and_grades_equal_trec_eval():
    rng = np.random.default_rng(7)
    docs = [f"d{i:03d}" for i in range(150)]
    qrels = graded_qrels(rng, 40, docs)
    # Scores on a coarse grid: most ranks are ties, broken by document id as trec_eval does.
    run = {q: {d: float(s) for d, s in zip(docs, rng.integers(0, 6, size=len(docs)) / 5)} for q in qrels}
    assert_same(ours(qrels, run), reference(qrels, run))


def test_hand_checked_figures():
    qrels = {"q": {"a": 2, "b": 1, "c": 0, "z": 1}}
    run = {"q": {"a": 0.1, "b": 0.9, "c": 0.9, "x": 0.5}}  # ties: c before b (larger id first)
    got = ours(qrels, run)["q"]
    assert got["recall@1"] == 0.0 and got["recall@5"] == pytest.approx(2 / 3)
    assert got["mrr@10"] == 0.5
    dcg = 1 / np.log2(3) + 2 / np.log2(5)
    assert got["ndcg@10"] == pytest.approx(dcg / (2 + 1 / np.log2(3) + 1 / np.log2(4)))
    assert_same(ours(qrels, run), reference(qrels, run))


@pytest.mark.parametrize("encoding,dims", [("float", 32), ("int8", 32), ("uint8", 32), ("binary", 8),
                                           ("binary", 16), ("binary-rescore", 8)])
def test_the_runs_search_makes_equal_trec_eval(encoding, dims):
    rng = np.random.default_rng(dims)
    unit = rng.normal(size=(400, 32)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    docs, queries = unit[:360], unit[360:]
    doc_ids = [f"doc-{i}" for i in rng.permutation(360)]  # ids out of index order: the tie rule shows
    order = search.tie_order(doc_ids)
    enc = search.encode(docs, queries, encoding, dims, 0.5)
    found, scores = search.search(enc, 100, order)
    run = {f"q{i}": {doc_ids[j]: float(s) for j, s in zip(row, srow)}
           for i, (row, srow) in enumerate(zip(found.tolist(), scores.tolist()))}
    qrels = graded_qrels(rng, len(queries), doc_ids)
    # The order search returned is trec_eval's order of its own scores.
    assert all([doc_ids[j] for j in row] == metrics.ranked(run[f"q{i}"]) for i, row in enumerate(found.tolist()))
    if encoding == "binary" and dims == 8:
        assert len({s for r in scores.tolist() for s in r}) <= 9  # 8 bits: nine distances, ties everywhere
    assert_same(ours(qrels, run), reference(qrels, run))


def test_chunked_search_equals_one_pass(monkeypatch):
    """The top k over chunks of documents equals the top k of all scores at once (ties included)."""
    rng = np.random.default_rng(3)
    unit = rng.normal(size=(3000, 16)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    order = search.tie_order([f"{i:05d}" for i in range(2990)])
    enc = search.encode(unit[:2990], unit[2990:], "binary", 16, None)
    whole = search.search(enc, 50, order)
    monkeypatch.setattr(search, "CHUNK_CELLS", 1)  # the smallest chunk: 1,024 documents
    chunked = search.search(enc, 50, order)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])
