"""The bulk job's files: finding and sharding the input, reading one shard's records, and
writing one shard's outputs atomically, its manifest last, so a rerun can verify it.

Inputs are JSONL, CSV or Parquet files (a file, a folder or a glob) with a text column, or an
OpenAI Batch API input file. A shard is a fixed range of one file's records, planned once per
job and kept in the job file: a rerun finds the same shards and redoes only those without a
verified manifest. Nothing here knows the engine or Ray.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson

SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}
FORMATS = ("jsonl", "csv", "parquet", "openai")


class InputError(ValueError):
    """The input cannot be planned (no files, mixed formats, a missing column): the job does
    not start. Bad records are not this: they become rows of the errors file."""


# ---- finding and planning the input -------------------------------------------------------


def find_inputs(spec: str) -> list[Path]:
    """The input files named by a file, a folder (its data files, recursively, skipping
    names that start with '.' or '_') or a glob; sorted, so the plan is the same every time."""
    path = Path(spec).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            f for f in path.rglob("*")
            if f.is_file() and f.suffix.lower() in SUFFIXES
            and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
        )
    else:
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(spec), recursive=True) if Path(f).is_file())
    if not files:
        raise InputError(f"no input files at {spec}")
    return [f.resolve() for f in files]


def detect_format(files: list[Path], requested: str = "auto") -> str:
    """jsonl, csv, parquet or openai (a JSONL file whose first record has a custom_id)."""
    if requested != "auto":
        if requested not in FORMATS:
            raise InputError(f"unknown input format {requested!r}; use one of {', '.join(FORMATS)}")
        return requested
    kinds = {SUFFIXES.get(f.suffix.lower()) for f in files}
    if None in kinds:
        unknown = next(f for f in files if f.suffix.lower() not in SUFFIXES)
        raise InputError(f"cannot tell the format of {unknown} from its name; pass --input-format")
    if len(kinds) > 1:
        raise InputError(f"the input mixes formats ({', '.join(sorted(kinds))}); give one format at a time")
    fmt = kinds.pop()
    if fmt == "jsonl":
        first = first_json_record(files[0])
        if isinstance(first, dict) and "custom_id" in first:
            return "openai"
    return fmt


def first_json_record(path: Path, look: int = 100) -> object:
    """The first line of the first `look` that parses as JSON (a bad first line is a bad record,
    not a reason to misread the format)."""
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            if n == look:
                break
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class Shard:
    """A fixed range of one input file's records."""

    index: int
    path: str
    format: str
    first_row: int  # index of its first record within the file
    rows: int
    row_base: int  # index of its first record within the whole input (the id without an id column)
    start: int = 0  # byte range (jsonl, csv, openai)
    end: int = 0

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Columns:
    """Where a record's text and id are. `id` None: records are keyed by their row number."""

    text: str
    id: str | None
    csv_header: tuple[str, ...] | None = None


# Shards a job is cut into when --shard-rows is not given (each between a step and a most):
# enough that the actors finish together (one shard is the most an actor can be left doing
# alone at the end), few enough that each costs little beyond its texts.
TARGET_SHARDS = 64


def plan(files: list[Path], fmt: str, shard_rows: int | None, bounds: tuple[int, int], text_column: str,
         id_column: str | None, id_column_explicit: bool) -> tuple[list[Shard], Columns]:
    """Cut every file into shards and find the columns. A shard holds `shard_rows` records or,
    when that is None, about 1/TARGET_SHARDS of the input: a multiple of `bounds[0]` records, at
    most `bounds[1]`. The id column is used when the input has it (Parquet, CSV: the schema;
    JSONL: the first record); one named explicitly must be there."""
    if shard_rows is not None and shard_rows < 1:
        raise InputError("--shard-rows must be at least 1")
    columns = find_columns(files, fmt, text_column, id_column, id_column_explicit)
    step, most = bounds
    pieces = [(str(path), *r) for path in files for r in _file_ranges(path, fmt, shard_rows or step)]
    if shard_rows is None:  # join consecutive pieces of a file into shards of the chosen size
        total = sum(p[2] for p in pieces)
        per_shard = max(1, min(most // step, total // TARGET_SHARDS // step))
        joined: list[tuple] = []
        count = 0
        for p in pieces:
            if joined and joined[-1][0] == p[0] and count < per_shard:
                path, first, rows, start, _ = joined[-1]
                joined[-1] = (path, first, rows + p[2], start, p[4])
                count += 1
            else:
                joined.append(p)
                count = 1
        pieces = joined
    shards: list[Shard] = []
    row_base = 0
    for path, first_row, rows, start, end in pieces:
        shards.append(Shard(len(shards), path, fmt, first_row, rows, row_base, start, end))
        row_base += rows
    return shards, columns


def find_columns(files: list[Path], fmt: str, text: str, id_column: str | None, explicit: bool) -> Columns:
    if fmt == "openai":
        return Columns("body", "custom_id")
    header: tuple[str, ...] | None = None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for path in files:
            names = pq.ParquetFile(path).schema_arrow.names
            if text not in names:
                raise InputError(f"{path} has no column {text!r} (columns: {', '.join(names)}); pass --text-column")
            if explicit and id_column not in names:
                raise InputError(f"{path} has no column {id_column!r} (columns: {', '.join(names)})")
        has_id = id_column is not None and all(id_column in pq.ParquetFile(p).schema_arrow.names for p in files)
    elif fmt == "csv":
        headers = {csv_header(p) for p in files}
        if len(headers) > 1:
            raise InputError("the CSV files have different headers; give files of one layout at a time")
        header = headers.pop()
        if text not in header:
            raise InputError(f"the CSV header has no column {text!r} (columns: {', '.join(header)}); pass --text-column")
        if explicit and id_column not in header:
            raise InputError(f"the CSV header has no column {id_column!r} (columns: {', '.join(header)})")
        has_id = id_column in header
    else:
        first = first_json_record(files[0])
        has_id = explicit or (isinstance(first, dict) and id_column in first)
    return Columns(text, id_column if has_id else None, header)


def csv_header(path: Path) -> tuple[str, ...]:
    with open(path, "rb") as f:
        for record, _ in csv_records(f, 0):
            if record:
                record[0] = record[0].removeprefix("\ufeff")
            return tuple(record)
    raise InputError(f"{path} is empty: a CSV input needs a header line")


def csv_records(f, pos: int) -> Iterator[tuple[list[str], int]]:
    """CSV records from a binary file positioned at byte `pos`, each with the byte offset just
    after it (quoted fields may span lines). Bytes that are not UTF-8 survive as lone
    surrogates, which the text checks then refuse."""
    end = pos

    def lines():
        nonlocal end
        for raw in f:
            end += len(raw)
            yield raw.decode("utf-8", "surrogateescape")

    for record in csv.reader(lines()):
        yield record, end


def _file_ranges(path: Path, fmt: str, shard_rows: int) -> Iterator[tuple[int, int, int, int]]:
    """(first record, records, byte start, byte end) of each run of `shard_rows` records of a file."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows
        for first in range(0, total, shard_rows):
            yield first, min(shard_rows, total - first), 0, 0
        return
    with open(path, "rb") as f:
        if fmt == "csv":
            records = csv_records(f, 0)
            header = next(records, None)
            offsets = (end for _, end in records)
            start = header[1] if header else 0
        else:
            offsets = _line_ends(f)
            start = 0
        first = rows = 0
        end = start
        for end in offsets:
            rows += 1
            if rows == shard_rows:
                yield first, rows, start, end
                first, rows, start = first + rows, 0, end
        if rows:
            yield first, rows, start, end


def _line_ends(f) -> Iterator[int]:
    pos = 0
    for line in f:
        pos += len(line)
        yield pos


# ---- reading one shard --------------------------------------------------------------------


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
    if shard.format == "parquet":
        return _parquet_records(shard, columns)
    ids: list = []
    texts: list[str | None] = []
    problems: dict[int, Problem] = {}
    raw_records = _csv_shard(shard, columns) if shard.format == "csv" else _jsonl_shard(shard, columns)
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


def _parquet_records(shard: Shard, columns: Columns) -> Records:
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
    ids = table.column(columns.id).to_pylist() if columns.id else list(range(shard.row_base, shard.row_base + shard.rows))
    problems: dict[int, Problem] = {}
    texts: list[str | None] = []
    for i, (rid, value) in enumerate(zip(ids, values)):
        problem = Problem("missing_id", f"the record has no {columns.id!r} value") if rid is None else None
        problem = problem or check_text(value, columns.text)
        texts.append(None if problem else value)
        if problem:
            problems[i] = problem
    if len(ids) != shard.rows:
        raise InputError(f"{shard.path} changed since the job was planned")
    return Records(ids, texts, problems)


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


# ---- writing one shard --------------------------------------------------------------------


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
