"""The bulk job with a sparse (SPLADE) model: `embedserve batch --model <sparse model>` writes
Parquet rows of `id`, `indices` (list<uint32>, ascending), `values` (list<float32>) and `tokens`,
equal to what the online POST /v1/embeddings/sparse answers for the same texts (the same indices,
values within 1e-6; prompts per input type and top_k too); the same rows give the same bytes,
a finished job run again does nothing and a damaged shard is redone to the same bytes. What does
not apply to a sparse model (dimensions, encoding formats, windows, an OpenAI batch file), --top-k
with a dense model, and any rerank model are refused with one line and exit 2, before any work."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.settings import Settings
from tests.support.batch import corpus_texts, manifests, run_in_process, write_jsonl, write_parquet
from tests.support.service import deploy, undeploy

MODEL = "splade-st"  # SPLADE-tiny saved as a SparseEncoder folder, with query / document prompts
N = 40
TOLERANCE = 1e-6


def texts() -> list[str]:
    """Corpus texts, a few of them over the model's maximum (cut at the end, as online)."""
    out = corpus_texts(N - 3, offset=200)
    return out + [" ".join(out[:12]), "zymurgy and rare terms " * 200, "ok"]


def job_settings(sparse_models) -> Settings:
    return Settings(artifact_dir=sparse_models.artifact_dir, models=[MODEL], variant="fp32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_parquet(tmp_path_factory.mktemp("sparse-batch") / "corpus.parquet",
                         [f"doc-{i}" for i in range(N)], texts())


@pytest.fixture(scope="module")
def online(ray_serve, sparse_models):
    entries = [f"{n}={p}" for n, p in sparse_models.folders.items()]
    app = deploy(ray_serve, "sparse-batch", "/sparse-batch", models=entries, artifact_dir=sparse_models.artifact_dir,
                 variant="fp32", cache="off", encoder_num_cpus=0.5)
    yield app
    undeploy("sparse-batch")


def online_vectors(app, **options) -> list[tuple[list[int], list[float]]]:
    status, _, body = app.post("/v1/embeddings/sparse", {"model": MODEL, "input": texts(), **options})
    assert status == 200, body
    return [(d["indices"], d["values"]) for d in body["data"]], body["usage"]["prompt_tokens"]


def read_sparse(output) -> pa.Table:
    return pq.read_table(output / "vectors")


def assert_equal_to_online(table: pa.Table, want: list[tuple[list[int], list[float]]]) -> None:
    assert table.column("id").to_pylist() == [f"doc-{i}" for i in range(N)]
    for row, (indices, values) in zip(range(N), want):
        got_i = table.column("indices")[row].as_py()
        got_v = np.asarray(table.column("values")[row].as_py(), dtype=np.float32)
        assert got_i == indices, f"row {row}: other non-zero indices"
        assert np.abs(got_v - np.asarray(values, dtype=np.float32)).max() <= TOLERANCE, row
        assert got_i == sorted(got_i) and (got_v > 0).all()


@pytest.mark.integration
def test_a_sparse_job_writes_indices_and_values_equal_to_the_online_vectors(online, sparse_models, corpus, tmp_path):
    summary = run_in_process(corpus, tmp_path / "out", model=MODEL, s=job_settings(sparse_models), shard_rows=16)
    assert (summary.rows_in, summary.ok, summary.errors, summary.shards) == (N, N, 0, 3)
    table = read_sparse(tmp_path / "out")
    assert table.schema.field("indices").type == pa.list_(pa.uint32())
    assert table.schema.field("values").type == pa.list_(pa.float32())
    assert table.column_names == ["id", "indices", "values", "tokens"]
    want, prompt_tokens = online_vectors(online)
    assert_equal_to_online(table, want)
    assert sum(table.column("tokens").to_pylist()) == summary.tokens == prompt_tokens
    assert [m["engine"]["variant"] for m in manifests(tmp_path / "out")] == ["fp32"] * 3


@pytest.mark.integration
def test_top_k_and_the_input_types_prompt_as_online(online, sparse_models, corpus, tmp_path):
    run_in_process(corpus, tmp_path / "out", model=MODEL, s=job_settings(sparse_models), top_k=8, input_type="query")
    table = read_sparse(tmp_path / "out")
    want, prompt_tokens = online_vectors(online, top_k=8, input_type="query")
    assert_equal_to_online(table, want)
    assert max(len(i) for i in table.column("indices").to_pylist()) == 8
    assert sum(table.column("tokens").to_pylist()) == prompt_tokens  # the prompt's tokens counted, as online


def digests(out) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "vectors").glob("*.parquet"))}


@pytest.mark.integration
def test_the_same_rows_give_the_same_bytes_and_a_rerun_resumes(ray_serve, sparse_models, corpus, tmp_path):
    s = job_settings(sparse_models)
    first = run_in_process(corpus, tmp_path / "a", model=MODEL, s=s, shard_rows=16)
    run_in_process(corpus, tmp_path / "b", model=MODEL, s=s, shard_rows=16)
    assert digests(tmp_path / "a") == digests(tmp_path / "b") and len(digests(tmp_path / "a")) == 3
    again = run_in_process(corpus, tmp_path / "a", model=MODEL, s=s, shard_rows=16)
    assert (again.shards, again.shards_resumed, again.texts_this_run) == (3, 3, 0)
    before = digests(tmp_path / "a")
    (tmp_path / "a" / "vectors" / "part-00001.parquet").write_bytes(b"damaged")
    redone = run_in_process(corpus, tmp_path / "a", model=MODEL, s=s, shard_rows=16)
    assert (redone.shards_resumed, redone.texts_this_run) == (2, 16)
    assert digests(tmp_path / "a") == before and redone.tokens == first.tokens
    job = json.loads((tmp_path / "a" / "_job.json").read_text())
    assert job["identity"]["options"] == {"truncate": "end", "input_type": None, "top_k": None}


def test_what_does_not_apply_is_refused_with_one_line_and_exit_2(sparse_models, cross_encoders, tmp_path, capsys):
    from serving.cli import main
    from tests.support.service import artifact_dir

    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": "x"}])
    requests = write_jsonl(tmp_path / "requests.jsonl", [{"custom_id": "1", "method": "POST", "url": "/v1/embeddings",
                                                          "body": {"model": MODEL, "input": "x"}}])

    def batch(source, where, *args: str) -> tuple[int, str]:
        code = main(["batch", str(source), str(tmp_path / "out"), "--artifact-dir", str(where), "--no-progress", *args])
        return code, capsys.readouterr().err

    sparse = sparse_models.artifact_dir
    cases = [
        (data, cross_encoders.artifact_dir, ["--model", "tiny-rerank"],
         "tiny-rerank is a rerank model (a cross-encoder): the bulk job embeds texts with a dense or sparse model; "
         "serve it and use POST /v2/rerank"),
        (data, sparse, ["--model", MODEL, "--dimensions", "64"], "--dimensions: splade-st is a sparse model"),
        (data, sparse, ["--model", MODEL, "--encoding-format", "int8"], "--encoding-format: splade-st is a sparse model"),
        (data, sparse, ["--model", MODEL, "--truncate", "window"], "--truncate window is for dense vectors"),
        (data, sparse, ["--model", MODEL, "--top-k", "0"], "--top-k must be a positive whole number"),
        (requests, sparse, ["--model", MODEL], "splade-st is a sparse (SPLADE) model: the bulk job embeds texts with "
         "a dense or sparse model (an OpenAI batch file: a dense one)"),
        (data, artifact_dir(), ["--model", "all-MiniLM-L6-v2", "--top-k", "8"],
         "--top-k is for sparse models; sentence-transformers/all-MiniLM-L6-v2 gives dense vectors"),
    ]
    for source, where, args, words in cases:
        code, err = batch(source, where, *args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "out").exists()  # nothing was started
