"""The bulk job's plan (serving/batch/inputs.py, records.py; no Ray, no model): shards cover every input record
exactly once, in order, whatever the layout (several files, Parquet row groups that do not
line up with shards, CSV fields over several lines, a last line without its newline), and the
automatic shard size keeps shards between their bounds."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch import inputs
from serving.batch.inputs import InputError
from serving.batch.records import read_records

BOUNDS = (256, 4096)


def read_all(files, fmt, shard_rows, bounds=BOUNDS):
    shards, columns = inputs.plan(files, fmt, shard_rows, bounds, "text", "id", False)
    ids, texts = [], []
    for shard in shards:
        records = read_records(shard, columns)
        ids += records.ids
        texts += records.texts
    return shards, ids, texts


@pytest.mark.parametrize("row_group_size", [7, 1000, None])
def test_parquet_shards_cover_every_row_once_across_files_and_row_groups(tmp_path, row_group_size):
    files = []
    for f, n in enumerate([23, 1, 40]):
        ids = [f"{f}-{i}" for i in range(n)]
        pq.write_table(pa.table({"id": ids, "text": [f"text {x}" for x in ids]}), tmp_path / f"{f}.parquet",
                       row_group_size=row_group_size)
        files.append(tmp_path / f"{f}.parquet")
    shards, ids, texts = read_all(files, "parquet", 10)
    assert ids == [f"{f}-{i}" for f, n in enumerate([23, 1, 40]) for i in range(n)]
    assert texts == [f"text {x}" for x in ids]
    assert [s.rows for s in shards] == [10, 10, 3, 1, 10, 10, 10, 10]
    assert [s.row_base for s in shards] == [0, 10, 20, 23, 24, 34, 44, 54]


def test_jsonl_and_csv_shards_cover_every_record_once(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"id": str(i), "text": f"t{i}"}) + "\n" for i in range(9))
                     + json.dumps({"id": "9", "text": "no newline at the end"}))
    _, ids, texts = read_all([jsonl], "jsonl", 3)
    assert ids == [str(i) for i in range(10)] and texts[-1] == "no newline at the end"

    csv = tmp_path / "a.csv"
    csv.write_bytes(b"\xef\xbb\xbfid,text\r\n1,one\r\n2,\"two\nlines, and a comma\"\r\n3,\"a \"\"quote\"\"\"\r\n4,four")
    _, ids, texts = read_all([csv], "csv", 2)
    assert ids == ["1", "2", "3", "4"]
    assert texts == ["one", "two\nlines, and a comma", 'a "quote"', "four"]


def test_the_automatic_shard_size_is_a_multiple_of_the_step_within_bounds(tmp_path):
    for n, want_shards, want_rows in [(100, 1, {100}), (20_000, 79, {256, 32}), (1_000_000, 245, {4096, 576})]:
        path = tmp_path / f"{n}.parquet"
        pq.write_table(pa.table({"text": pa.array(["x"] * n)}), path)
        shards, _ = inputs.plan([path], "parquet", None, BOUNDS, "text", "id", False)
        assert (len(shards), {s.rows for s in shards}) == (want_shards, want_rows)
        assert sum(s.rows for s in shards) == n


def test_inputs_that_cannot_be_planned_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="no input files"):
        inputs.find_inputs(str(tmp_path / "nothing-*.parquet"))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="no column 'text'"):
        inputs.plan([tmp_path / "a.parquet"], "parquet", None, BOUNDS, "text", "id", False)
    with pytest.raises(InputError, match="no column 'key'"):
        inputs.plan([tmp_path / "a.parquet"], "parquet", None, BOUNDS, "body", "key", True)
    (tmp_path / "b.csv").write_text("id,text\n1,x\n")
    with pytest.raises(InputError, match="mixes formats"):
        inputs.detect_format([tmp_path / "a.parquet", tmp_path / "b.csv"])
    (tmp_path / "c.jsonl").write_text(json.dumps({"custom_id": "1", "method": "POST"}) + "\n")
    assert inputs.detect_format([tmp_path / "c.jsonl"]) == "openai"
    (tmp_path / "d.jsonl").write_text("a broken first line\n" + json.dumps({"custom_id": "1"}) + "\n")
    assert inputs.detect_format([tmp_path / "d.jsonl"]) == "openai"  # a bad line is a bad record


def test_the_cli_refuses_what_it_cannot_run_with_a_message_and_exit_2(tmp_path, capsys):
    from serving.cli import main
    from tests.support.service import artifact_dir

    def batch(*args: str) -> tuple[int, str]:
        code = main(["batch", *args, str(tmp_path / "out"), "--artifact-dir", str(artifact_dir()), "--no-progress"])
        return code, capsys.readouterr().err

    code, err = batch(str(tmp_path / "none.parquet"))
    assert code == 2 and "no input files" in err
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": {}}) + "\n")
    code, err = batch(str(requests), "--dimensions", "64")
    assert code == 2 and "--dimensions: an OpenAI batch file carries its options in each request's body" in err
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    code, err = batch(str(tmp_path / "texts.jsonl"), "--model", "no-such-model")
    assert code == 2 and "the model 'no-such-model' is neither shipped nor exported" in err and len(err.splitlines()) == 1
    code, err = batch(str(tmp_path / "texts.jsonl"), "--dimensions", "1000")
    assert code == 2 and "dimensions must be an integer from 1 to 384" in err
    assert not (tmp_path / "out").exists()  # nothing was started
