"""DATA for `embedserve eval`: a BEIR folder or a pairs file, read into one checked dataset.

    BEIR folder   corpus.jsonl ({"_id", "title", "text"}), queries.jsonl ({"_id", "text", ...}),
                  qrels/test.tsv (else dev.tsv, train.tsv, or the one .tsv there):
                  query-id, corpus-id, score (a header line is allowed)
    pairs file    JSONL, CSV or Parquet, one row per (query, relevant document):
                  query, document, and optionally query_id, document_id, grade (default 1)

What cannot be measured is refused with one line (DataError: exit 2): no qrels, a missing
column, a malformed line, one id given two texts. What can be left out is left out and counted
(`Dataset.skipped`, shown in the report): empty texts, judgements naming ids that match
nothing, queries with no relevant document. Any other field of the queries (BEIR) or of the
rows (pairs) with 2 to MAX_FIELD_VALUES distinct values becomes a slice of the report.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import orjson

MAX_FIELD_VALUES = 20
PAIR_COLUMNS = ("query", "document", "query_id", "document_id", "grade")
QRELS_PREFERENCE = ("test.tsv", "dev.tsv", "train.tsv")


class DataError(ValueError):
    """DATA cannot be evaluated: the message is the one line the CLI prints."""


@dataclass
class Skipped:
    what: str  # "queries", "documents", "judgements"
    reason: str
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass
class Dataset:
    name: str
    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> document id -> grade (> 0 relevant)
    query_fields: dict[str, list[str | None]] = field(default_factory=dict)  # slice field -> value per query
    skipped: list[Skipped] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "name": self.name, "queries": len(self.query_ids), "documents": len(self.doc_ids),
            "judgements": sum(len(v) for v in self.qrels.values()),
            "skipped": [vars(s) for s in self.skipped],
        }


def load(path: str | Path) -> Dataset:
    path = Path(path)
    if path.is_dir():
        return load_beir(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return load_pairs(path)


# ---- readers ---------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{path} line {n}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n}: not a JSON object")
            rows.append(row)
    return rows


def read_table(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow's errors have no common base worth naming
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    raise DataError(f"{path}: a pairs file must end in .jsonl, .csv or .parquet (or give a BEIR folder)")


def text_of(value) -> str:
    return "" if value is None else str(value).strip()


# ---- BEIR ------------------------------------------------------------------------------------


def qrels_file(folder: Path) -> Path:
    qdir = folder / "qrels"
    found = sorted(qdir.glob("*.tsv")) if qdir.is_dir() else []
    if not found:
        raise DataError(f"{folder}: no qrels (expected qrels/test.tsv: query-id, corpus-id, score)")
    for name in QRELS_PREFERENCE:
        if qdir / name in found:
            return qdir / name
    if len(found) > 1:
        raise DataError(f"{qdir}: several qrels files and none named test.tsv, dev.tsv or train.tsv")
    return found[0]


def load_beir(folder: Path) -> Dataset:
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise DataError(f"{folder}: no {name} (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/*.tsv)")
    qfile = qrels_file(folder)
    skipped: list[Skipped] = []
    docs = unique_texts(read_jsonl(folder / "corpus.jsonl"), folder / "corpus.jsonl", "documents", skipped,
                        lambda r: " ".join(t for t in (text_of(r.get("title")), text_of(r.get("text"))) if t))
    qrows = read_jsonl(folder / "queries.jsonl")
    queries = unique_texts(qrows, folder / "queries.jsonl", "queries", skipped, lambda r: text_of(r.get("text")))
    judgements = []
    with open(qfile, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if not line.strip() or (n == 1 and not cols[-1].strip().lstrip("-").isdigit()):
                continue  # blank, or the header
            if len(cols) == 4:  # TREC style: query-id, iteration, corpus-id, score
                cols = [cols[0], cols[2], cols[3]]
            if len(cols) != 3:
                raise DataError(f"{qfile} line {n}: expected query-id, corpus-id, score separated by tabs")
            judgements.append((cols[0], cols[1], parse_grade(cols[2], f"{qfile} line {n}")))
    fields = {k for r in qrows for k in r if k not in ("_id", "text", "title", "metadata")}
    by_id = {str(r.get("_id")): r for r in qrows}
    return assemble(folder.name, queries, docs, judgements, skipped,
                    {f: {q: by_id[q].get(f) for q in queries} for f in sorted(fields)})


def unique_texts(rows: list[dict], path: Path, what: str, skipped: list[Skipped], text) -> dict[str, str]:
    out: dict[str, str] = {}
    empty = []
    for n, row in enumerate(rows, 1):
        if "_id" not in row:
            raise DataError(f"{path} row {n}: no _id")
        key = str(row["_id"])
        if key in out or key in empty:
            raise DataError(f"{path} row {n}: duplicate _id {key!r}")
        t = text(row)
        if t:
            out[key] = t
        else:
            empty.append(key)
    note(skipped, what, "empty text", empty)
    return out


# ---- pairs -----------------------------------------------------------------------------------


def load_pairs(path: Path) -> Dataset:
    rows = read_table(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    missing = [c for c in ("query", "document") if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: no {' or '.join(missing)} column (a pairs file needs query and document; "
                        f"optional query_id, document_id, grade)")
    queries: dict[str, str] = {}
    docs: dict[str, str] = {}
    qid_of: dict[str, str] = {}
    did_of: dict[str, str] = {}
    judgements, empty_rows, fields = [], [], {}
    extra = [c for c in rows[0] if c not in PAIR_COLUMNS]
    for n, row in enumerate(rows, 1):
        where = f"{path} row {n}"
        q, d = text_of(row.get("query")), text_of(row.get("document"))
        if not q or not d:
            empty_rows.append(f"row {n}")
            continue
        qid = text_of(row.get("query_id")) or qid_of.setdefault(q, f"q{len(qid_of) + 1}")
        did = text_of(row.get("document_id")) or did_of.setdefault(d, f"d{len(did_of) + 1}")
        same_id(queries, qid, q, where, "query_id")
        same_id(docs, did, d, where, "document_id")
        grade = parse_grade(row.get("grade", 1), where) if text_of(row.get("grade", 1)) else 1
        judgements.append((qid, did, grade))
        for c in extra:
            fields.setdefault(c, {}).setdefault(qid, row.get(c))
    skipped: list[Skipped] = []
    note(skipped, "pairs", "empty query or document", empty_rows)
    return assemble(path.stem, queries, docs, judgements, skipped, fields)


def same_id(seen: dict[str, str], key: str, text: str, where: str, column: str) -> None:
    if seen.setdefault(key, text) != text:
        raise DataError(f"{where}: duplicate {column} {key!r} with another text")


def parse_grade(value, where: str) -> int:
    try:
        grade = int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: grade {value!r} is not an integer") from None
    if grade < 0:
        raise DataError(f"{where}: grade {grade} is negative")
    return grade


# ---- both ------------------------------------------------------------------------------------


def note(skipped: list[Skipped], what: str, reason: str, items: list[str]) -> None:
    if items:
        skipped.append(Skipped(what, reason, len(items), [str(i) for i in items[:5]]))


def assemble(name: str, queries: dict[str, str], docs: dict[str, str], judgements: list[tuple[str, str, int]],
             skipped: list[Skipped], fields: dict[str, dict[str, object]]) -> Dataset:
    if not judgements:
        raise DataError(f"{name}: no relevance judgements")
    qrels: dict[str, dict[str, int]] = {}
    unknown_q, unknown_d, repeated = [], [], []
    for q, d, g in judgements:
        if q not in queries:
            unknown_q.append(q)
        elif d not in docs:
            unknown_d.append(f"{q} -> {d}")
        elif d in qrels.setdefault(q, {}):
            repeated.append(f"{q} -> {d}")
            qrels[q][d] = max(qrels[q][d], g)
        else:
            qrels[q][d] = g
    note(skipped, "judgements", "query id matches no query", unknown_q)
    note(skipped, "judgements", "document id matches no document", unknown_d)
    note(skipped, "judgements", "repeated (query, document): the highest grade kept", repeated)
    kept = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
    note(skipped, "queries", "no relevant document (grade > 0) among the judged documents",
         [q for q in queries if q not in set(kept)])
    if not kept:
        raise DataError(f"{name}: no query has a relevant document that is in the corpus "
                        f"({'; '.join(f'{s.count} {s.what}: {s.reason}' for s in skipped) or 'check the ids'})")
    slices = {}
    for f, values in fields.items():
        per_query = [None if values.get(q) is None else str(values.get(q)) for q in kept]
        distinct = {v for v in per_query if v}
        if 2 <= len(distinct) <= MAX_FIELD_VALUES:
            slices[f] = per_query
    return Dataset(name, kept, [queries[q] for q in kept], list(docs), list(docs.values()),
                   {q: qrels[q] for q in kept}, slices, skipped)
