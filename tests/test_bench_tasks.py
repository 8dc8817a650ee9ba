"""`python -m loadtest.bench_tasks` end to end on a tiny input (16 pairs, 16 texts, one run): the
6-layer cross-encoder built and exported, SPLADE-tiny exported, both engines run raw and through the
service over HTTP, and the report has its four rows with positive figures, no errors, the service
reading the same tokens as the raw engine, both targets judged, in a section of its own that leaves
the rest of BENCHMARKS.md alone and that `make bench --skip-tasks` keeps. No timing is asserted:
the figures of a 16-input run on a shared machine mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loadtest.bench_tasks import BEGIN, END, LABELS
from loadtest.cluster_bench import kept_section
from tests.support.service import ROOT

pytestmark = pytest.mark.integration


def test_a_quick_run_reports_rerank_and_sparse_against_the_raw_engine(tmp_path):
    out, js = tmp_path / "BENCHMARKS.md", tmp_path / "tasks.json"
    out.write_text("# Benchmarks\n\nThe rest of the report.\n")
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_tasks", "--quick", "--texts", "16", "--runs", "1", "--bulk-size", "8",
         "--work-dir", str(tmp_path / "work"), "--output", str(out), "--json", str(js)],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-4000:]

    report = json.loads(js.read_text())
    for key in LABELS:
        s = report["summary"][key]
        assert s["texts_per_s"] > 0 and s["tokens_per_s"] > 0 and s["errors"] == 0, (key, s)
    for key in ("rerank_http", "sparse_http"):
        run = report["rows"][key]["runs"][0]
        assert run["items"] == 16 and 0 < run["p50"] <= run["p99"], run
        assert run["server_tokens_match"], f"{key}: the service read other tokens than the raw engine"
    assert [v for _, _, v in report["verdicts"]] and all(v in ("PASS", "MISS") for _, _, v in report["verdicts"])

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nThe rest of the report.\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    kept = kept_section(out, BEGIN, END)
    for label in LABELS.values():
        assert f"| {label} |" in kept
    assert "x the raw engine" in kept
