"""Helpers of the bulk-job tests: corpora written as Parquet / JSONL, the job run in-process
(on the test session's Ray) or as the `embedserve batch` CLI in a subprocess, and its
outputs read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.corpus import read_jsonl
from serving.batch.driver import Summary, run_batch
from serving.batch.plan import BatchOptions
from serving.settings import Settings
from tests.support.service import ROOT, artifact_dir

MODEL = "all-MiniLM-L6-v2"
CORPUS = ROOT / "loadtest" / "data" / "corpus.jsonl"


def corpus_texts(n: int, offset: int = 0) -> list[str]:
    texts = [t for t in read_jsonl(CORPUS) if t]
    assert len(texts) >= offset + n
    return texts[offset : offset + n]


def write_parquet(path: Path, ids: list, texts: list, row_group_size: int | None = None) -> Path:
    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, records: list) -> Path:
    """Records are dicts (written as JSON) or raw lines (bytes or str, written as they are)."""
    with open(path, "wb") as f:
        for r in records:
            line = r if isinstance(r, bytes) else r.encode() if isinstance(r, str) else json.dumps(r).encode()
            f.write(line + b"\n")
    return path


def settings(**overrides) -> Settings:
    return Settings(artifact_dir=artifact_dir(), **overrides)


def run_in_process(input: Path | str, output: Path, workers: int = 1, s: Settings | None = None, **kw) -> Summary:
    """The job on the Ray this test process is connected to (the `ray_serve` fixture's); one
    actor unless asked (each loads and calibrates the engine)."""
    opts = BatchOptions(input=str(input), output=output, model=kw.pop("model", MODEL), workers=workers,
                        progress=False, **kw)
    return run_batch(opts, s or settings())


def cli_command(input: Path | str, output: Path, *args: str, progress: bool = False) -> list[str]:
    return [sys.executable, "-m", "serving.cli", "batch", str(input), str(output), "--model", MODEL,
            "--artifact-dir", str(artifact_dir()), *([] if progress else ["--no-progress"]), *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", **extra}


def run_cli(input: Path | str, output: Path, *args: str, env: dict | None = None, timeout: float = 300,
            progress: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(cli_command(input, output, *args, progress=progress), cwd=ROOT, env=env or cli_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def session_ray_address() -> str:
    """The GCS address of the Ray this test process is connected to, for a CLI subprocess."""
    import ray

    return ray.get_runtime_context().gcs_address


def read_vectors(output: Path) -> tuple[list, np.ndarray, list[int]]:
    """ids, vectors (one row each) and token counts of a text job's Parquet output."""
    table = pq.read_table(output / "vectors")
    emb = table.column("embedding").combine_chunks()
    width = emb.type.list_size
    vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(table), width)
    return table.column("id").to_pylist(), vectors, table.column("tokens").to_pylist()


def read_jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def manifests(output: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((output / "_shards").glob("part-*[0-9].json"))]
