"""Helpers of the `embedserve eval` tests: one set of judged pairs written in every DATA form,
the in-process engine as the eval builds it, and the CLI run in-process."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serving import cli
from serving.eval.embed import LocalEmbedder
from serving.eval.runner import Options
from serving.settings import Settings
from tests.support.service import artifact_dir

MODEL = "all-MiniLM-L6-v2"
# A quick run: two sizes, every encoding, no second (whole-document) pass unless asked.
QUICK = Options(dimensions=("128", "full"), input_types=("on",), ks=(1, 5, 10), long_documents=False)


@functools.lru_cache(maxsize=None)
def local_embedder(variant: str = "fp32") -> LocalEmbedder:
    return LocalEmbedder.load(MODEL, variant, Settings(artifact_dir=artifact_dir()))


def write_pairs(folder: Path, rows: list[dict]) -> dict[str, Path]:
    """`rows` ({query, document, query_id, document_id, grade, ...}) as JSONL, CSV, Parquet and
    a BEIR folder (the extra fields on the queries)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"jsonl": folder / "pairs.jsonl", "csv": folder / "pairs.csv", "parquet": folder / "pairs.parquet"}
    out["jsonl"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with open(out["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), out["parquet"])
    out["beir"] = write_beir(folder / "beir", rows)
    return out


def write_beir(folder: Path, rows: list[dict], qrels: list[tuple[str, str, int]] | None = None) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    known = ("query", "document", "query_id", "document_id", "grade")
    queries = {r["query_id"]: {"_id": r["query_id"], "text": r["query"], **{k: v for k, v in r.items() if k not in known}}
               for r in rows}
    docs = {r["document_id"]: {"_id": r["document_id"], "title": "", "text": r["document"]} for r in rows}
    write_jsonl(folder / "queries.jsonl", list(queries.values()))
    write_jsonl(folder / "corpus.jsonl", list(docs.values()))
    judged = qrels if qrels is not None else [(r["query_id"], r["document_id"], r["grade"]) for r in rows]
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in judged), encoding="utf-8")
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`embedserve eval ARGS` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["eval", "--artifact-dir", str(artifact_dir()), *args])
    out = capsys.readouterr()
    return code, out.out, out.err
