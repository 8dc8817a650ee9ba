"""Retrieval metrics with trec_eval's definitions (what `pytrec_eval` and `ranx` compute).

A run is each query's ranked documents, best first (serving.eval.search orders ties as
trec_eval does). With grades from the qrels (relevant: grade > 0):

    recall@k    |relevant in the top k| / |relevant|
    MRR@10      1 / rank of the first relevant document in the top 10 (0 if none)
    NDCG@10     sum over the top 10 of grade / log2(rank + 1), divided by the same sum for the
                ideal ranking of all judged documents (trec_eval's ndcg_cut_10: linear gain)
    kept@k      |top k ∩ float top k| / k: the share of the full-size float neighbours an
                option still returns (relevance-free: the cost of the option itself)

Each is averaged over the queries (every query counts once).
"""

from __future__ import annotations

import math

import numpy as np

MRR_AT = 10
NDCG_AT = 10


def ranked(run: dict[str, float]) -> list[str]:
    """A query's run (document id -> score) in trec_eval's order: score, then id, descending."""
    return [d for d, _ in sorted(run.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def recall_at(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    relevant = {d for d, g in qrels.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def reciprocal_rank(ranked: list[str], qrels: dict[str, int], k: int = MRR_AT) -> float:
    for rank, d in enumerate(ranked[:k], 1):
        if qrels.get(d, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: list[str], qrels: dict[str, int], k: int = NDCG_AT) -> float:
    dcg = sum(max(qrels.get(d, 0), 0) / math.log2(rank + 1) for rank, d in enumerate(ranked[:k], 1))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    return dcg / idcg if idcg else 0.0


def per_query(ranked: list[str], qrels: dict[str, int], ks: tuple[int, ...]) -> dict[str, float]:
    out = {f"recall@{k}": recall_at(ranked, qrels, k) for k in ks}
    out[f"mrr@{MRR_AT}"] = reciprocal_rank(ranked, qrels)
    out[f"ndcg@{NDCG_AT}"] = ndcg_at(ranked, qrels)
    return out


def kept_at(found: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per query: the share of the truth's top k found in the option's top k."""
    return np.array([len(set(f[:k]) & set(t[:k])) / min(k, len(t)) for f, t in zip(found.tolist(), truth.tolist())])


def evaluate(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]], ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Per query id, every metric (averages are taken per slice by the caller)."""
    return {q: per_query(ranked[q], qrels[q], ks) for q in qrels}


def mean(per_q: dict[str, dict[str, float]], queries: list[str] | None = None) -> dict[str, float]:
    qs = list(per_q) if queries is None else queries
    if not qs:
        return {}
    names = next(iter(per_q.values())).keys()
    return {m: float(np.mean([per_q[q][m] for q in qs])) for m in names}
