"""The bulk job resumes: after the CLI is killed mid-way, the same command again keeps the
shards that verify (manifest and checksums), redoes the rest and a damaged one, and the output
holds every input id exactly once. A finished job run again does nothing; an OUTPUT that holds
another job is refused rather than mixed."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from serving.batch.plan import JobConflict
from tests.support.batch import (
    ROOT, cli_command, cli_env, corpus_texts, manifests, read_vectors, run_cli, run_in_process,
    session_ray_address, write_parquet,
)

pytestmark = pytest.mark.integration

N, SHARD_ROWS = 600, 20
SHARDS = N // SHARD_ROWS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    ids = [f"r-{i:04d}" for i in range(N)]
    return write_parquet(tmp_path_factory.mktemp("resume") / "corpus.parquet", ids, corpus_texts(N)), ids


def wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def settled_manifests(out) -> list[dict]:
    """The manifests once none has appeared for twice the longest a shard took (a killed
    driver's actor may finish the shard it holds before Ray reaps it)."""
    seen, since = None, time.monotonic()
    while True:
        now = manifests(out)
        if [m["shard"] for m in now] != seen:
            seen, since = [m["shard"] for m in now], time.monotonic()
        if time.monotonic() - since > max(3.0, 2 * max(m["seconds"] for m in now)):
            return now
        time.sleep(0.2)


def test_a_killed_job_resumes_with_every_id_exactly_once(ray_serve, corpus, tmp_path):
    path, ids = corpus
    out = tmp_path / "out"
    args = ("--shard-rows", str(SHARD_ROWS), "--workers", "1", "--ray-address", session_ray_address())
    proc = subprocess.Popen(cli_command(path, out, *args), cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: len(manifests(out)) >= 3 or proc.poll() is not None, 240, "3 shards to be written")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    first = settled_manifests(out)
    assert 3 <= len(first) < SHARDS, "the job was not killed mid-way"

    damaged = first[0]
    part = out / "vectors" / f"part-{damaged['shard']:05d}.parquet"
    part.write_bytes(part.read_bytes()[:-100])  # a truncated file: its checksum fails

    rerun = run_cli(path, out, *args)
    assert f"{len(first) - 1} of {SHARDS} shards verified from an earlier run" in rerun.stdout

    got, vectors, _ = read_vectors(out)
    assert sorted(got) == ids and len(got) == N  # no duplicates, no gaps
    assert len(vectors) == N
    final = {m["shard"]: m for m in manifests(out)}
    assert sorted(final) == list(range(SHARDS))
    for m in first[1:]:  # kept as they were, not redone
        assert final[m["shard"]] == m
    assert final[damaged["shard"]]["files"] == damaged["files"]  # redone: the same bytes again
    assert not list(out.rglob(".*.tmp"))


def test_a_finished_job_run_again_does_nothing(ray_serve, tmp_path):
    ids = [f"f-{i}" for i in range(40)]
    path = write_parquet(tmp_path / "in.parquet", ids, corpus_texts(40))
    first = run_in_process(path, tmp_path / "out", shard_rows=16)
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != "summary.json"}

    again = run_in_process(path, tmp_path / "out", shard_rows=16)
    assert (again.shards, again.shards_resumed, again.texts_this_run) == (3, 3, 0)
    assert (again.rows_in, again.ok, again.tokens) == (first.rows_in, first.ok, first.tokens)
    after = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != "summary.json"}
    assert after == before


def test_an_output_of_another_job_is_refused_unless_overwritten(ray_serve, tmp_path):
    path = write_parquet(tmp_path / "in.parquet", ["a", "b"], corpus_texts(2))
    out = tmp_path / "out"
    run_in_process(path, out)
    with pytest.raises(JobConflict, match="differs in: options"):
        run_in_process(path, out, dimensions=128)
    write_parquet(path, ["a", "b", "c"], corpus_texts(3))  # the input changed since
    with pytest.raises(JobConflict, match="differs in: inputs"):
        run_in_process(path, out)

    summary = run_in_process(path, out, dimensions=128, overwrite=True)
    assert (summary.rows_in, summary.ok) == (3, 3)
    assert read_vectors(out)[1].shape == (3, 128)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a job")
    with pytest.raises(JobConflict, match="not empty"):
        run_in_process(path, foreign)
