"""The bulk job's outputs: one shard's files written atomically (through a temporary file and
a rename, returning the checksum its manifest records), and the job's files joined at the end."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import orjson


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> str:
    """Write `data` to `path` through a temporary file and a rename; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def jsonl_bytes(rows: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def vectors_table(ids: list, vectors: np.ndarray, tokens: list[int], width: int):
    """The Parquet rows of one shard: id, embedding (a fixed-size list of the vector's dtype:
    float32, int8 or uint8, packed bits for binary formats) and the text's token count."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors).reshape(len(ids), width)
    flat = pa.array(vectors.reshape(-1))
    return pa.table({
        "id": pa.array(ids),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, width),
        "tokens": pa.array(tokens, type=pa.int32()),
    })


def sparse_table(ids: list, vectors: list, tokens: list[int]):
    """The Parquet rows of one shard of a sparse model: id, indices (list<uint32>, ascending),
    values (list<float32>, beside them) and the text's token count."""
    import pyarrow as pa

    offsets = np.zeros(len(vectors) + 1, dtype=np.int32)
    np.cumsum([len(v.indices) for v in vectors], out=offsets[1:])
    flat_idx = np.concatenate([v.indices for v in vectors]) if vectors else np.empty(0)
    flat_val = np.concatenate([v.values for v in vectors]) if vectors else np.empty(0)
    off = pa.array(offsets, type=pa.int32())
    return pa.table({
        "id": pa.array(ids),
        "indices": pa.ListArray.from_arrays(off, pa.array(flat_idx.astype(np.uint32), type=pa.uint32())),
        "values": pa.ListArray.from_arrays(off, pa.array(flat_val.astype(np.float32), type=pa.float32())),
        "tokens": pa.array(tokens, type=pa.int32()),
    })


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def ids_digest(ids: list) -> str:
    return hashlib.sha256(orjson.dumps(ids, default=str)).hexdigest()


def concat_files(parts: list[Path], dest: Path) -> str:
    """`parts` joined into `dest`, atomically; returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return h.hexdigest()
