"""`embedserve export` works offline, records what it measured, and a second run reuses it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from models import cpu as cpuinfo
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
    assert {"onnxruntime", "openvino"} <= set(m["versions"])
    for name in ("fp32", "optimized", "openvino-fp32"):
        v = m["variants"][name]
        assert len(v["sha256"]) == 64 and v["fidelity"]["min_cos"] >= 0.9999 and v["fidelity"]["top10_kept"] == 1.0
    # OpenVINO reads model.onnx itself: no second file.
    assert m["variants"]["openvino-bf16"]["file"] == m["variants"]["openvino-fp32"]["file"] == "model.onnx"
    assert len(m["int8_scales"]) == 384
    assert m["prompts"] == {}  # the prompts its sentence-transformers config declares: none


def test_every_variant_is_measured_on_long_texts_with_the_cpu_and_precision_that_ran(fresh_export):
    m = json.loads((fresh_export[0] / "manifest.json").read_text())
    here = cpuinfo.detect()
    assert m["export_cpu"]["features"] == here.features
    for name, v in m["variants"].items():
        fid = v["fidelity"]
        assert fid["texts"] == 300 and fid["long_texts"] >= 80, name  # 89 of the longest third fill the 256-token window
        assert fid["measured_at"] == "export" and fid["cpu"]["features"] == here.features
        assert 0 < fid["top10_kept"] <= 1 and fid["min_cos"] <= fid["mean_cos"] <= 1
    bf16 = m["variants"]["openvino-bf16"]["fidelity"]
    assert bf16["precision"] == ("bf16" if here.bf16 else "fp32")
    assert bf16["min_cos"] >= 0.9999 and bf16["top10_kept"] >= 0.99
    # The references the variants were measured against stay beside the graphs.
    assert (fresh_export[0] / "fidelity_reference.npy").is_file() and (fresh_export[0] / "neighbour_reference.npy").is_file()


def test_exported_tokenizer_truncates_at_the_model_max_length_without_fixed_padding(fresh_export):
    tok = json.loads((fresh_export[0] / "tokenizer.json").read_text())
    assert tok["truncation"]["max_length"] == 256
    assert tok["padding"] is None


def test_a_second_export_reuses_the_artifacts(fresh_export):
    root, _, second, mtimes = fresh_export
    assert "reusing" in second
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == mtimes
