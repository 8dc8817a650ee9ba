"""The bulk job's records: reading one shard's texts and ids, and saying why a record gives no
vector (a Problem, a row of the errors file). Nothing here knows the engine or Ray."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

from serving.batch.inputs import Columns, InputError, Shard, csv_records


@dataclass
class Problem:
    """Why a record gives no vector: an error code and a message for the errors file."""

    code: str
    message: str


@dataclass
class Records:
    """One shard's records in order: ids, texts (None where the record is bad) and problems."""

    ids: list
    texts: list[str | None]
    problems: dict[int, Problem]


JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}


def check_text(value: object, column: str) -> Problem | None:
    if value is None:
        return Problem("missing_text", f"the record has no {column!r} value")
    if not isinstance(value, str):
        kind = JSON_TYPES.get(type(value), type(value).__name__)
        return Problem("not_a_string", f"{column!r} is {kind}, not a string")
    if not value:
        return Problem("empty_text", f"{column!r} is an empty string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Problem("invalid_text", f"{column!r} is not valid Unicode (a lone surrogate or bytes that are not UTF-8)")
    return None


MISSING = object()


def read_records(shard: Shard, columns: Columns) -> Records:
    ids: list = []
    texts: list[str | None] = []
    problems: dict[int, Problem] = {}
    reader = {"parquet": _parquet_shard, "csv": _csv_shard}.get(shard.format, _jsonl_shard)
    raw_records = reader(shard, columns)
    for i, (rid, text, problem) in enumerate(raw_records):
        if columns.id is None:
            rid = shard.row_base + i
        elif problem is None and rid is MISSING:
            problem = Problem("missing_id", f"the record has no {columns.id!r} value")
        problem = problem or check_text(None if text is MISSING else text, columns.text)
        ids.append(None if rid is MISSING else rid)
        texts.append(None if problem else text)
        if problem:
            problems[i] = problem
    if len(ids) != shard.rows:
        raise InputError(f"{shard.path} changed since the job was planned ({shard.name}: {len(ids)} records, planned {shard.rows})")
    return Records(ids, texts, problems)


def _jsonl_shard(shard: Shard, columns: Columns) -> Iterator[tuple[object, object, Problem | None]]:
    for line in read_lines(shard):
        obj, problem = parse_json_line(line)
        if problem:
            yield MISSING, MISSING, problem
            continue
        rid = obj.get(columns.id, MISSING) if columns.id else MISSING
        if rid is None:
            rid = MISSING
        if rid is not MISSING and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
            kind = JSON_TYPES.get(type(rid), type(rid).__name__)
            yield MISSING, MISSING, Problem("invalid_id", f"{columns.id!r} is {kind}, not a string or an integer")
            continue
        yield (str(rid) if rid is not MISSING else MISSING), obj.get(columns.text, MISSING), None


def parse_json_line(line: bytes) -> tuple[dict | None, Problem | None]:
    if not line.strip():
        return None, Problem("invalid_json", "the line is blank")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, Problem("invalid_json", "the line is not UTF-8")
    except (ValueError, RecursionError) as exc:
        return None, Problem("invalid_json", f"the line is not valid JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return None, Problem("invalid_json", f"the line is {JSON_TYPES.get(type(obj), 'a JSON value')}, not a JSON object")
    return obj, None


def _csv_shard(shard: Shard, columns: Columns) -> Iterator[tuple[object, object, Problem | None]]:
    header = columns.csv_header or ()
    t = header.index(columns.text)
    k = header.index(columns.id) if columns.id else None
    with open(shard.path, "rb") as f:
        f.seek(shard.start)
        for n, (record, end) in enumerate(csv_records(f, shard.start)):
            if n == shard.rows:
                break
            text = record[t] if t < len(record) else MISSING
            rid = record[k] if k is not None and k < len(record) and record[k] != "" else MISSING
            yield rid, text, None


def _parquet_shard(shard: Shard, columns: Columns) -> Iterator[tuple[object, object, Problem | None]]:
    import pyarrow.parquet as pq

    names = [columns.text] + ([columns.id] if columns.id else [])
    pf = pq.ParquetFile(shard.path)
    lo, hi = shard.first_row, shard.first_row + shard.rows
    parts, seen = [], 0
    for g in range(pf.metadata.num_row_groups):  # only the row groups that overlap the shard
        n = pf.metadata.row_group(g).num_rows
        if seen < hi and seen + n > lo:
            # In batches, so a row group much larger than a shard is never held whole.
            pos = seen
            for batch in pf.iter_batches(batch_size=min(shard.rows, 8192), row_groups=[g], columns=names,
                                         use_threads=False):
                a, b = max(lo, pos), min(hi, pos + batch.num_rows)
                if a < b:
                    parts.append(batch.slice(a - pos, b - a))
                pos += batch.num_rows
                if pos >= hi:
                    break
        seen += n
    import pyarrow as pa

    table = pa.Table.from_batches(parts) if parts else pf.schema_arrow.empty_table().select(names)
    values = table.column(columns.text).to_pylist()
    ids = table.column(columns.id).to_pylist() if columns.id else [MISSING] * len(values)
    for rid, value in zip(ids, values):
        yield (MISSING if rid is None else rid), value, None


def read_lines(shard: Shard) -> list[bytes]:
    """The shard's lines (JSONL, OpenAI batch), without their line ends."""
    with open(shard.path, "rb") as f:
        f.seek(shard.start)
        data = f.read(shard.end - shard.start)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    if len(lines) != shard.rows:
        raise InputError(f"{shard.path} changed since the job was planned")
    return lines


def record_location(shard: Shard, i: int) -> dict:
    """Where record `i` of a shard is, for the errors file: its file, its record index in the
    file (0-based) and, for line formats, its line number (1-based)."""
    row = shard.first_row + i
    where = {"file": shard.path, "row": row}
    if shard.format in ("jsonl", "openai"):
        where["line"] = row + 1
    return where
