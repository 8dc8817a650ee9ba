"""`embedserve eval --url` (through a running service's HTTP API) and the in-process engine agree:
the same vectors (cosine >= 0.9999, both fp32), the same windows for long documents, and the
same figures for every option; the CLI runs against the service as it runs in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.eval import runner
from serving.eval.command import DEMO
from serving.eval.data import load
from serving.eval.embed import ServiceEmbedder
from tests.support.eval import MODEL, local_embedder, run_cli, write_jsonl
from tests.support.service import deploy, undeploy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(ray_serve):
    served = deploy(ray_serve, "evalsvc", "/evalsvc", models=[MODEL], variant="fp32", encoder_num_cpus=1)
    yield served
    undeploy("evalsvc")


@pytest.fixture(scope="module")
def demo_part():
    """Of the demo set's first 20 queries, those with a relevant document among the first 40 judged
    ones, and 20 other documents (long ones among them)."""
    ds = load(DEMO)
    judged = {d for q in ds.query_ids[:20] for d in ds.qrels[q]}
    docs = [i for i, d in enumerate(ds.doc_ids) if d in judged][:40]
    docs += [i for i, d in enumerate(ds.doc_ids) if d not in judged][:20]
    ds.doc_ids, ds.doc_texts = [ds.doc_ids[i] for i in docs], [ds.doc_texts[i] for i in docs]
    qrels = {q: {d: g for d, g in ds.qrels[q].items() if d in set(ds.doc_ids)} for q in ds.query_ids[:20]}
    keep = [i for i, q in enumerate(ds.query_ids[:20]) if qrels[q]]
    ds.query_ids, ds.query_texts = [ds.query_ids[i] for i in keep], [ds.query_texts[i] for i in keep]
    ds.qrels = {q: qrels[q] for q in ds.query_ids}
    ds.query_fields = {f: [v[i] for i in keep] for f, v in ds.query_fields.items()}
    return ds


def test_the_service_path_gives_the_engines_vectors_and_figures(app, demo_part):
    service = ServiceEmbedder.load(app.http_url, MODEL)
    local = local_embedder("fp32")
    assert (service.model_id, service.variant, service.dimension, service.window_tokens) == (
        local.model_id, local.variant, local.dimension, local.window_tokens)
    assert service.int8_scales == pytest.approx(local.int8_scales)
    opts = runner.Options(dimensions=("128", "full"), input_types=("on", "off"), ks=(1, 10, 100))
    got, want = runner.run(demo_part, [service], opts), runner.run(demo_part, [local], opts)
    for key in ("queries", "corpus"):
        texts = demo_part.query_texts if key == "queries" else demo_part.doc_texts
        a, b = service.embed(key, texts, None, "end"), local.embed(key, texts, None, "end")
        assert np.min(np.sum(a * b, axis=1)) >= 0.9999
    assert service.windows["corpus"] == local.windows["corpus"] and max(local.windows["corpus"]) > 1
    assert got.slices == want.slices
    by_option = {(r["encoding"], r["dims_label"], r["truncate"]): r["metrics"] for r in want.rows}
    assert len(by_option) == 11
    for row in got.rows:
        for metric, value in by_option[(row["encoding"], row["dims_label"], row["truncate"])].items():
            # Vectors equal to ~1e-6: a rank may swap on a near-tie, or an int8 code round otherwise.
            assert row["metrics"][metric] == pytest.approx(value, abs=0.02), (row["encoding"], metric)


def test_the_cli_runs_against_the_service(app, capsys, tmp_path, demo_part):
    texts = dict(zip(demo_part.doc_ids, demo_part.doc_texts))
    rows = [{"query": t, "document": texts[d], "query_id": q, "document_id": d, "grade": g}
            for q, t in zip(demo_part.query_ids, demo_part.query_texts) for d, g in demo_part.qrels[q].items()]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    code, out, err = run_cli(capsys, str(pairs), "--url", app.http_url, "--dimensions", "full",
                             "--encoding", "float,int8", "--no-long-docs", "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert sorted(r["encoding"] for r in report["results"]) == ["float", "int8"]
    assert {r["variant"] for r in report["results"]} == {"fp32"}
    assert report["dataset"]["queries"] == len(demo_part.query_ids) and "float · full" in out and "int8 · full" in out
    code, _, err = run_cli(capsys, str(pairs), "--url", app.http_url, "--variant", "fp32")
    assert code == 2 and "with --url the service's own runs" in err
