"""`embedserve export` works offline, records what it measured, and a second run reuses it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from models.artifacts import MANIFEST_VERSION


@pytest.fixture(scope="module")
def fresh_export(tmp_path_factory):
    """A full export into an empty directory, with the hub unreachable by configuration."""
    target = tmp_path_factory.mktemp("artifacts")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "EMBEDSERVE_ARTIFACT_DIR": str(target)}
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "serving.cli", "export", "all-MiniLM-L6-v2"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    root = target / "all-minilm-l6-v2"
    mtimes = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    second = run()
    assert second.returncode == 0, second.stderr[-3000:]
    return root, first.stdout + first.stderr, second.stdout + second.stderr, mtimes


def test_export_runs_offline_and_shows_progress(fresh_export):
    root, first, _, _ = fresh_export
    steps = re.findall(r"\[(\d+)/(\d+)\]", first)
    assert steps and [int(a) for a, _ in steps] == list(range(1, int(steps[0][1]) + 1))
    assert (root / "model.onnx").is_file() and (root / "model_optimized.onnx").is_file()


def test_manifest_records_source_checksums_versions_and_fidelity(fresh_export):
    root = fresh_export[0]
    m = json.loads((root / "manifest.json").read_text())
    assert m["manifest_version"] == MANIFEST_VERSION
    assert m["model_id"] == "sentence-transformers/all-MiniLM-L6-v2" and m["revision"]
    assert m["max_seq_length"] == 256 and m["opset"] >= 11
    assert {"onnxruntime", "optimum", "transformers"} <= set(m["versions"])
    for name in ("fp32", "optimized"):
        v = m["variants"][name]
        assert len(v["sha256"]) == 64 and v["fidelity"]["min_cos"] >= 0.9999
    assert len(m["int8_scales"]) == 384
    assert m["prompts"] == {}  # the prompts its sentence-transformers config declares: none


def test_exported_tokenizer_truncates_at_the_model_max_length_without_fixed_padding(fresh_export):
    tok = json.loads((fresh_export[0] / "tokenizer.json").read_text())
    assert tok["truncation"]["max_length"] == 256
    assert tok["padding"] is None


def test_a_second_export_reuses_the_artifacts(fresh_export):
    root, _, second, mtimes = fresh_export
    assert "reusing" in second
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == mtimes
