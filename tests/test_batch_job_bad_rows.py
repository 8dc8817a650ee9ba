"""Bad rows never stop the bulk job and are never dropped silently: each becomes a row of
errors.jsonl (file, row, line for JSONL, id, code, message) and every good row still gets
its vector. Rows in = vectors out + errors, in every input format."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.batch import read_jsonl_lines, read_vectors, run_in_process, write_jsonl

pytestmark = pytest.mark.integration

TOO_LONG = "word " * 400  # over all-MiniLM-L6-v2's 256 tokens


def errors_by(output, key: str) -> dict:
    return {e[key]: e for e in read_jsonl_lines(output / "errors.jsonl")}


def check_accounting(summary, output, good_ids: list) -> None:
    ids, vectors, tokens = read_vectors(output)
    assert ids == good_ids
    assert len(vectors) == len(tokens) == summary.ok
    assert summary.rows_in == summary.ok + summary.errors
    assert summary.errors == len(read_jsonl_lines(output / "errors.jsonl"))


def test_every_bad_jsonl_record_is_an_error_row_with_its_reason(ray_serve, tmp_path):
    records = [
        {"id": "g0", "text": "a good text"},
        {"id": "missing"},
        {"id": "null", "text": None},
        {"id": "empty", "text": ""},
        {"id": "number", "text": 42},
        {"id": "array", "text": ["a list"]},
        {"id": "object", "text": {"a": 1}},
        {"id": "boolean", "text": True},
        '{"id": "surrogate", "text": "half a pair \\ud800 here"}',
        {"id": "long", "text": TOO_LONG},
        '{"id": "broken", "text": "unterminated',
        "[1, 2, 3]",
        "",
        b"\xff\xfe not UTF-8",
        {"text": "a text without its id"},
        {"id": 3.5, "text": "an id that is a float"},
        {"id": 7, "text": "an integer id"},
        {"id": "g1", "text": "another good text"},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    summary = run_in_process(path, tmp_path / "out", shard_rows=5, truncate="none")

    expected = {  # line -> (id, code, words of the message)
        2: ("missing", "missing_text", "no 'text'"),
        3: ("null", "missing_text", "no 'text'"),
        4: ("empty", "empty_text", "empty string"),
        5: ("number", "not_a_string", "a number"),
        6: ("array", "not_a_string", "an array"),
        7: ("object", "not_a_string", "an object"),
        8: ("boolean", "not_a_string", "a boolean"),
        9: ("surrogate", "invalid_text", "not valid Unicode"),
        10: ("long", "context_length_exceeded", "256 tokens"),
        11: (None, "invalid_json", "not valid JSON"),
        12: (None, "invalid_json", "not a JSON object"),
        13: (None, "invalid_json", "blank"),
        14: (None, "invalid_json", "not UTF-8"),
        15: (None, "missing_id", "no 'id'"),
        16: (None, "invalid_id", "not a string or an integer"),
    }
    errors = errors_by(tmp_path / "out", "line")
    assert sorted(errors) == sorted(expected)
    for line, (rid, code, words) in expected.items():
        e = errors[line]
        assert (e["id"], e["code"], e["row"], e["file"]) == (rid, code, line - 1, str(path)), e
        assert words in e["message"], e
    check_accounting(summary, tmp_path / "out", ["g0", "7", "g1"])
    assert (summary.rows_in, summary.ok, summary.errors) == (18, 3, 15)


def test_bad_csv_records_are_error_rows(ray_serve, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(
        b'id,text\n'
        b'c0,"a good, quoted text"\n'
        b'c1,"a text over\ntwo lines"\n'
        b'c2,\n'
        b'c3\n'
        b',a text without its id\n'
        b'c5,bytes \xff\xfe that are not UTF-8\n'
        b'c6,plain text\n'
    )
    summary = run_in_process(path, tmp_path / "out", shard_rows=3)

    errors = errors_by(tmp_path / "out", "row")
    assert {row: (e["id"], e["code"]) for row, e in errors.items()} == {
        2: ("c2", "empty_text"),
        3: ("c3", "missing_text"),
        4: (None, "missing_id"),
        5: ("c5", "invalid_text"),
    }
    check_accounting(summary, tmp_path / "out", ["c0", "c1", "c6"])
    assert summary.rows_in == 7


def test_bad_parquet_rows_and_a_text_column_of_numbers_are_error_rows(ray_serve, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["p0", "p1", None, "p3", "p4"], "text": ["ok", None, "no id", "", "fine"]}),
                   folder / "a.parquet")
    pq.write_table(pa.table({"id": ["n0", "n1"], "text": pa.array([1, 2], pa.int64())}), folder / "b.parquet")
    summary = run_in_process(folder, tmp_path / "out", shard_rows=4)

    errors = read_jsonl_lines(tmp_path / "out" / "errors.jsonl")
    assert [(e["file"].rsplit("/", 1)[-1], e["row"], e["id"], e["code"]) for e in errors] == [
        ("a.parquet", 1, "p1", "missing_text"),
        ("a.parquet", 2, None, "missing_id"),
        ("a.parquet", 3, "p3", "empty_text"),
        ("b.parquet", 0, "n0", "not_a_string"),
        ("b.parquet", 1, "n1", "not_a_string"),
    ]
    check_accounting(summary, tmp_path / "out", ["p0", "p4"])


def test_without_an_id_column_rows_are_keyed_by_their_row_number_across_files(ray_serve, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"text": "first"}, {"text": ""}, {"text": "third"}])
    write_jsonl(folder / "b.jsonl", [{"text": "fourth"}, "{oops", {"text": "sixth"}])
    summary = run_in_process(str(folder / "*.jsonl"), tmp_path / "out", shard_rows=2)

    errors = read_jsonl_lines(tmp_path / "out" / "errors.jsonl")
    assert [(e["id"], e["file"].rsplit("/", 1)[-1], e["line"], e["code"]) for e in errors] == [
        (1, "a.jsonl", 2, "empty_text"),
        (4, "b.jsonl", 2, "invalid_json"),
    ]
    check_accounting(summary, tmp_path / "out", [0, 2, 3, 5])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["errors"] == 2
