"""Bad DATA for `embedserve eval`: what cannot be measured is one clear line on stderr and exit 2
(no traceback); what can be left out is left out and counted in the report with its reason —
nothing is dropped silently."""

from __future__ import annotations

import json

import pytest

from tests.support.eval import run_cli, write_beir, write_jsonl

GOOD = [
    {"query": "how do I back up photos", "document": "Nightly backups of the photo archive to a disk.",
     "query_id": "q1", "document_id": "d1", "grade": 1},
    {"query": "sourdough bread recipe", "document": "A recipe for sourdough bread with a cold fermentation.",
     "query_id": "q2", "document_id": "d2", "grade": 1},
]


def assert_refused(code: int, out: str, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("embedserve eval: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_a_beir_folder_without_qrels(tmp_path, capsys):
    folder = write_beir(tmp_path / "b", GOOD)
    (folder / "qrels" / "test.tsv").unlink()
    assert_refused(*run_cli(capsys, str(folder)), "no qrels", "qrels/test.tsv")


def test_duplicate_ids(tmp_path, capsys):
    folder = write_beir(tmp_path / "b", GOOD)
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "one"}, {"_id": "d2", "text": "two"},
                                          {"_id": "d1", "text": "three"}])
    assert_refused(*run_cli(capsys, str(folder)), "corpus.jsonl row 3", "duplicate _id 'd1'")
    pairs = write_jsonl(tmp_path / "p.jsonl", GOOD + [{**GOOD[0], "query": "another text under q1"}])
    assert_refused(*run_cli(capsys, str(pairs)), "row 3", "duplicate query_id 'q1'")


def test_ids_that_match_nothing_everywhere(tmp_path, capsys):
    folder = write_beir(tmp_path / "b", GOOD, qrels=[("q1", "nope", 1), ("q9", "d1", 1)])
    assert_refused(*run_cli(capsys, str(folder)), "no query has a relevant document", "1 judgements: query id matches")


@pytest.mark.parametrize("name,content,fragments", [
    ("p.jsonl", '{"query": "a", "document": "b"}\n{not json\n', ("p.jsonl line 2", "not JSON")),
    ("p.jsonl", '{"question": "a", "document": "b"}\n', ("no query column",)),
    ("p.csv", "query,document,grade\na,b,high\n", ("row 1", "grade 'high' is not an integer")),
    ("p.txt", "a\tb\n", ("must end in .jsonl, .csv or .parquet",)),
    ("missing.jsonl", None, ("no such file",)),
])
def test_unreadable_data(tmp_path, capsys, name, content, fragments):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert_refused(*run_cli(capsys, str(path)), *fragments)


@pytest.mark.parametrize("args,fragment", [
    (["--encoding", "int4"], "--encoding: int4"),
    (["--dimensions", "12x"], "--dimensions: '12x'"),
    (["--k", "0"], "--k"),
    (["--input-types", "maybe"], "--input-types"),
    (["--model", "no-such-model"], "no-such-model"),
])
def test_bad_options(tmp_path, capsys, args, fragment):
    pairs = write_jsonl(tmp_path / "p.jsonl", GOOD)
    assert_refused(*run_cli(capsys, str(pairs), *args), fragment)


def test_what_can_be_left_out_is_counted_with_its_reason(tmp_path, capsys):
    """Empty texts, judgements naming nothing, a query without a relevant document: measured
    without them, each counted in the report, the terminal and eval.json."""
    folder = write_beir(tmp_path / "b", GOOD, qrels=[("q1", "d1", 1), ("q2", "d2", 1), ("q1", "ghost", 1),
                                                     ("q-unknown", "d1", 1), ("q3", "d1", 0)])
    rows = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    write_jsonl(folder / "queries.jsonl", rows + [{"_id": "q3", "text": "judged, nothing relevant"},
                                                  {"_id": "q4", "text": "   "}])
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    write_jsonl(folder / "corpus.jsonl", docs + [{"_id": "d3", "title": "", "text": ""}])
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, str(folder), "--dimensions", "full", "--encoding", "float", "--variant", "fp32",
                             "--out", str(out_dir))
    assert code == 0, err
    report = json.loads((out_dir / "eval.json").read_text())
    skipped = {(s["what"], s["reason"]): s for s in report["dataset"]["skipped"]}
    assert skipped[("queries", "empty text")]["examples"] == ["q4"]
    assert skipped[("documents", "empty text")]["examples"] == ["d3"]
    assert skipped[("judgements", "document id matches no document")]["examples"] == ["q1 -> ghost"]
    assert skipped[("judgements", "query id matches no query")]["examples"] == ["q-unknown"]
    assert skipped[("queries", "no relevant document (grade > 0) among the judged documents")]["examples"] == ["q3"]
    assert report["dataset"]["queries"] == 2 and report["dataset"]["documents"] == 2
    assert [n["reason"] for n in report["not_run"]] == ["no document is over the model's window"]
    for s in skipped.values():
        assert f"skipped {s['count']} {s['what']}: {s['reason']}" in out
