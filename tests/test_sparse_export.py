"""A sparse model named NAME=PATH in EMBEDSERVE_MODELS is exported on first start (optimum's
fill-mask graph, measured against SparseEncoder) and its complete export is reused after."""

from __future__ import annotations

import contextlib
import io
import json

from serving.cli import ensure_exported
from serving.settings import Settings
from tests.support.sparse_models import splade_tiny


def test_first_start_exports_a_sparse_model_and_the_next_reuses_it(tmp_path):
    s = Settings(models=[f"splade-first={splade_tiny()}"], artifact_dir=tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ensure_exported(s)
    assert "splade-first is not exported yet: exporting it" in out.getvalue()
    assert "[2/4] exporting the fp32 masked-LM ONNX graph with optimum" in out.getvalue()
    manifest = json.loads((tmp_path / "splade-first" / "manifest.json").read_text())
    assert manifest["task"] == "sparse" and set(manifest["variants"]) == {"fp32", "optimized"}
    assert manifest["model_spec"]["task"] == "sparse" and manifest["splade"] == {"strategy": "max", "activation": "relu"}
    stamp = (tmp_path / "splade-first" / "model.onnx").stat().st_mtime_ns
    again = io.StringIO()
    with contextlib.redirect_stdout(again):
        ensure_exported(Settings(models=[f"splade-first={splade_tiny()}"], artifact_dir=tmp_path))
    assert "exporting" not in again.getvalue()
    assert (tmp_path / "splade-first" / "model.onnx").stat().st_mtime_ns == stamp
