"""The bulk job's input: finding the files, telling their format and cutting them into shards.

Inputs are JSONL, CSV or Parquet files (a file, a folder or a glob) with a text column, or an
OpenAI Batch API input file. A shard is a fixed range of one file's records, planned once per
job and kept in the job file: a rerun finds the same shards and redoes only those without a
verified manifest. Nothing here knows the engine or Ray.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}
FORMATS = ("jsonl", "csv", "parquet", "openai")


class InputError(ValueError):
    """The input cannot be planned (no files, mixed formats, a missing column): the job does
    not start. Bad records are not this: they become rows of the errors file."""



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
