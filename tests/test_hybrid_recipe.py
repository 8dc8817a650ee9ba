"""The README's hybrid-search recipe (dense + sparse retrieval in Qdrant's local mode, fused by
reciprocal rank fusion, then reranked through the `cohere` client) runs as written against one
real service on loopback that serves all three models: all-MiniLM-L6-v2, the trained SPLADE-tiny
and a random tiny cross-encoder. Only the base URL and the model names are replaced. The dense
search finds a paraphrase, the sparse search a rare term, the fused list holds both, and the rerank
answer is ordered by its scores and points back into the fused candidates."""

from __future__ import annotations

import re

import pytest

from tests.support.service import ROOT, artifact_dir, deploy, undeploy

pytestmark = pytest.mark.integration

HEADING = "## Hybrid search: dense + sparse, fused, then reranked"
DENSE, SPARSE, RERANKER = "all-MiniLM-L6-v2", "splade-plain", "tiny-rerank"


def recipe() -> str:
    section = (ROOT / "README.md").read_text().split(HEADING, 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


@pytest.fixture(scope="module")
def hybrid_service(ray_serve, sparse_models, cross_encoders):
    """One app with a dense, a sparse and a rerank model: the exports of the other fixtures,
    linked (never copied or changed) into the sparse models' artifact folder."""
    root = sparse_models.artifact_dir
    for name, target in [(DENSE.lower(), artifact_dir() / DENSE.lower()),
                         (RERANKER, cross_encoders.artifact_dir / RERANKER)]:
        if not (root / name).exists():
            (root / name).symlink_to(target, target_is_directory=True)
    app = deploy(ray_serve, "hybrid", "/hybrid", models=[DENSE, SPARSE, RERANKER], artifact_dir=root,
                 variant="fp32", cache="memory", encoder_num_cpus=0.5)
    yield app
    undeploy("hybrid")


@pytest.fixture(scope="module")
def ns(hybrid_service) -> dict:
    code = (recipe().replace("http://localhost:8000", hybrid_service.http_url)
            .replace('"splade-tiny"', f'"{SPARSE}"').replace('"my-reranker"', f'"{RERANKER}"'))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def texts(points) -> list[str]:
    return [p.payload["text"] if p.payload else None for p in points]


def test_the_recipe_indexes_every_document_with_both_vectors(ns):
    db, docs = ns["db"], ns["documents"]
    assert db.count("docs").count == len(docs)
    points = db.retrieve("docs", ids=list(range(len(docs))), with_vectors=True)
    for p in points:
        assert len(p.vector["dense"]) == 384
        sparse = p.vector["sparse"]
        assert 0 < len(sparse.indices) == len(sparse.values) and min(sparse.values) > 0


RARE = "Error E4711 on the Zorblax router means its firmware must be reflashed."
CATS = "Cats sleep for most of the day, often twelve to sixteen hours."
DOGS = "Dogs bark at strangers to warn their owners."


def test_the_readmes_own_query_finds_the_rare_term_by_sparse_search(ns):
    docs = ns["documents"]
    assert docs[ns["sparse_hits"][0].id] == RARE, [docs[p.id] for p in ns["sparse_hits"]]
    assert RARE in texts(ns["fused"])


@pytest.mark.parametrize("query, expected, by", [
    # a made-up code, and beside its document a near twin with another code: the sparse weights tell them apart
    ("what is E4711", RARE, "sparse_hits"),
    # a paraphrase, no word in common but "day": the dense vectors find it
    ("how long do felines nap each day", CATS, "dense_hits"),
])
def test_each_search_finds_its_document_and_the_fused_list_holds_both(ns, query, expected, by):
    docs = ns["documents"]
    dense_hits, sparse_hits, fused, _ = ns["hybrid_search"](query)
    found = {"dense_hits": dense_hits, "sparse_hits": sparse_hits}[by]
    assert docs[found[0].id] == expected, [docs[p.id] for p in found]
    fused_ids = [p.id for p in fused]
    assert dense_hits[0].id in fused_ids and sparse_hits[0].id in fused_ids
    assert set(fused_ids) == {p.id for p in dense_hits} | {p.id for p in sparse_hits}


def rrf(*hit_lists, k: int = 2) -> dict:
    """Reciprocal rank fusion as the README states it: the sum of 1 / (rank + k - 1), rank 1 first."""
    scores: dict = {}
    for hits in hit_lists:
        for rank, p in enumerate(hits, start=1):
            scores[p.id] = scores.get(p.id, 0.0) + 1 / (rank + k - 1)
    return scores


def test_when_the_two_searches_disagree_the_fusion_keeps_both_tops_by_rrf(ns):
    docs = ns["documents"]
    dense_hits, sparse_hits, fused, _ = ns["hybrid_search"]("which pets doze most of the afternoon")
    # The dense vectors read "pets doze" as the cats sleeping; the sparse weights favour the dogs.
    assert docs[dense_hits[0].id] == CATS and docs[sparse_hits[0].id] == DOGS
    assert {docs[p.id] for p in fused[:2]} == {CATS, DOGS}
    want = rrf(dense_hits, sparse_hits)
    assert {p.id: round(p.score, 9) for p in fused} == {i: round(s, 9) for i, s in want.items()}
    assert [p.score for p in fused] == sorted((p.score for p in fused), reverse=True)


def test_the_rerank_answer_is_ordered_by_its_scores_and_points_into_the_fused_list(ns, hybrid_service):
    query = "what does E4711 mean on my router"
    fused, reranked = ns["fused"], ns["reranked"]
    scores = [r.relevance_score for r in reranked.results]
    assert scores == sorted(scores, reverse=True)
    assert len(reranked.results) == min(3, len(fused))
    indices = [r.index for r in reranked.results]
    assert len(set(indices)) == len(indices) and all(0 <= i < len(fused) for i in indices)
    # The same pairs through the raw route: each index's score is that fused document's own score.
    status, _, body = hybrid_service.post("/v2/rerank", {"model": RERANKER, "query": query,
                                                        "documents": texts(fused), "return_documents": True})
    assert status == 200, body
    by_text = {r["document"]["text"]: r["relevance_score"] for r in body["results"]}
    for r in reranked.results:
        assert abs(by_text[fused[r.index].payload["text"]] - r.relevance_score) <= 1e-6


def rerank_snippet(marker: str) -> str:
    """The README's Frameworks snippet that uses `marker` (one of the two Cohere rerankers)."""
    section = (ROOT / "README.md").read_text().split("### Frameworks: LangChain, LlamaIndex, Haystack", 1)[1]
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", section.split("\n### ", 1)[0], re.S)
               if marker in c]
    return code


def run_rerank_snippet(hybrid_service, marker: str) -> dict:
    code = rerank_snippet(marker).replace("http://localhost:8000", hybrid_service.http_url)
    namespace: dict = {}
    exec(compile(code.replace('"my-reranker"', f'"{RERANKER}"'), "README.md", "exec"), namespace)
    return namespace


def services_top_two(hybrid_service, docs: list[str]) -> list[dict]:
    status, _, body = hybrid_service.post("/v2/rerank", {"model": RERANKER, "query": "how do cats sleep",
                                                        "documents": docs, "top_n": 2})
    assert status == 200, body
    return body["results"]


def test_the_readmes_langchain_rerank_snippet_gets_the_services_ranking(hybrid_service):
    """langchain-cohere's CohereRerank (the real package) with the base URL: the service's scores and order."""
    namespace = run_rerank_snippet(hybrid_service, "from langchain_cohere import CohereRerank")
    docs, best = [d.page_content for d in namespace["docs"]], namespace["best"]
    results = services_top_two(hybrid_service, docs)
    assert [d.page_content for d in best] == [docs[r["index"]] for r in results]
    assert [d.metadata["relevance_score"] for d in best] == pytest.approx(
        [r["relevance_score"] for r in results], abs=1e-6)


def test_the_readmes_llamaindex_rerank_snippet_gets_the_services_ranking(hybrid_service):
    """llama-index-postprocessor-cohere-rerank's CohereRerank (the real package) with the base URL:
    the service's scores and order."""
    namespace = run_rerank_snippet(hybrid_service, "from llama_index.postprocessor.cohere_rerank import CohereRerank")
    docs, best = [n.node.get_content() for n in namespace["nodes"]], namespace["best"]
    results = services_top_two(hybrid_service, docs)
    assert [n.node.get_content() for n in best] == [docs[r["index"]] for r in results]
    assert [n.score for n in best] == pytest.approx([r["relevance_score"] for r in results], abs=1e-6)
