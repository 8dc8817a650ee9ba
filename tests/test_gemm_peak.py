"""The GEMM-peak share `make bench` publishes counts the work from the graph itself: the
FLOPs of a BERT-style encoder are 2 x (4h^2 + 2hi) a token a layer in its weights (Q, K, V,
output; the feed-forward's two), plus attention's 4 x length x h a token a layer."""

from __future__ import annotations

import pytest

from loadtest.gemm_peak import flops, graph_shape, matmul_peak_gflops, peak_section
from models.specs import resolve_model
from tests.support.service import artifact_dir


def onnx_of(model: str):
    return artifact_dir() / resolve_model(model).key / "model.onnx"


@pytest.mark.parametrize("model, layers, hidden, inner", [("all-MiniLM-L6-v2", 6, 384, 1536),
                                                           ("all-mpnet-base-v2", 12, 768, 3072)])
def test_the_work_is_counted_from_the_graphs_shapes(model, layers, hidden, inner):
    per_token, found_layers, found_hidden = graph_shape(str(onnx_of(model)))
    assert (found_layers, found_hidden) == (layers, hidden)
    assert per_token == layers * 2 * (4 * hidden**2 + 2 * hidden * inner)
    # Two texts of 10 and 20 tokens: the weights' work is linear, attention's quadratic.
    assert flops(onnx_of(model), [10, 20]) == per_token * 30 + 4 * hidden * layers * (100 + 400)


def test_the_peak_is_measured_and_the_share_follows_from_it():
    fp32 = matmul_peak_gflops("fp32", seconds=0.2)
    assert 1 < fp32 < 100_000
    lines = peak_section({"raw": ("raw engine", 100.0, "fp32"), "bf": ("bf16 engine", 300.0, "bf16")},
                         onnx_of("all-MiniLM-L6-v2"), [50] * 10, {"fp32": fp32, "bf16": 4 * fp32})
    work = flops(onnx_of("all-MiniLM-L6-v2"), [50]) / 1e9  # GFLOP a text
    for row, texts_per_s, peak in ((lines[-2], 100.0, fp32), (lines[-1], 300.0, 4 * fp32)):
        cells = row.split("|")
        assert float(cells[4].replace(",", "")) == pytest.approx(texts_per_s * work, abs=0.5)
        assert float(cells[5]) == pytest.approx(texts_per_s * work / peak, abs=0.005)
