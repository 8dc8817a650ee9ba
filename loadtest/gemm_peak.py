"""What share of the CPU's matrix-multiply peak an engine reaches.

- The peak: one large MatMul (2,048 x 2,048 x 2,048) compiled by OpenVINO at bf16 and at f32 on
  this machine, the same threads as the engine, fastest of repeated runs (GFLOP/s).
- The work: FLOPs the encoder's graph does for the real tokens it embedded: every MatMul / Gemm
  with a constant weight [K, N] costs 2*K*N a token; attention (scores and the weighted sum of
  values) 4 * length * hidden a token a layer (length: the text's own tokens, padding not
  counted: it is waste, not work).

    python -m loadtest.gemm_peak [--threads 2]     prints the peaks

`make bench` divides each raw engine's FLOP/s by the peak of the precision it ran.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

SIZE = 2048


def matmul_peak_gflops(precision: str, threads: int = 0, seconds: float = 1.0) -> float:
    """GFLOP/s of one SIZE^3 MatMul at `precision` ("bf16" or "fp32") on OpenVINO's CPU plugin."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([SIZE, SIZE], np.float32, name="x")
    w = ops.constant(np.random.default_rng(0).standard_normal((SIZE, SIZE)).astype(np.float32))
    model = ov.Model([ops.matmul(x, w, False, False)], [x])
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    req = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    a = np.random.default_rng(1).standard_normal((SIZE, SIZE)).astype(np.float32)
    req.infer({"x": a})
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t = time.perf_counter()
        req.infer({"x": a})
        took = time.perf_counter() - t
        best, spent = min(best, took), spent + took
    return 2 * SIZE**3 / best / 1e9


@functools.lru_cache(maxsize=None)
def graph_shape(onnx_path: str) -> tuple[float, int, int]:
    """(weight FLOPs a token, attention layers, hidden size) read from the graph."""
    import onnx

    g = onnx.load(onnx_path, load_external_data=False).graph
    weights = {i.name: tuple(i.dims) for i in g.initializer}
    per_token, hidden = 0.0, 0
    for node in g.node:
        if node.op_type in ("MatMul", "Gemm"):
            for name in node.input[1:2]:
                dims = weights.get(name)
                if dims and len(dims) == 2:
                    per_token += 2.0 * dims[0] * dims[1]
                    hidden = hidden or dims[0]
    layers = sum(node.op_type == "Softmax" for node in g.node)
    return per_token, layers, hidden


def flops(onnx_path: Path, lengths: list[int]) -> float:
    """FLOPs the graph does for texts of these token counts (padding not counted)."""
    per_token, layers, hidden = graph_shape(str(onnx_path))
    n = np.asarray(lengths, dtype=np.float64)
    return float(per_token * n.sum() + 4.0 * hidden * layers * (n * n).sum())


def measure_peaks(threads: int = 0) -> dict[str, float]:
    return {p: matmul_peak_gflops(p, threads) for p in ("bf16", "fp32")}


def peak_section(engines: dict[str, tuple[str, float, str]], onnx_path: Path, tokens: list[int],
                 peaks: dict[str, float], threads: int = 0) -> list[str]:
    """Markdown lines: each engine's (label, texts/s, precision ran) as a share of this machine's
    `peaks` (measure_peaks) at that precision, the texts' FLOPs counted from the graph (`tokens`:
    each text's count)."""
    per_text = flops(onnx_path, tokens) / len(tokens)
    per_layer, layers, hidden = graph_shape(str(onnx_path))
    lines = [
        "## Share of the CPU's matrix-multiply peak (`python -m loadtest.gemm_peak`)",
        "",
        f"Peak, measured in this run (one {SIZE}x{SIZE}x{SIZE} MatMul on OpenVINO, {threads or 'default'} threads): "
        f"bf16 {peaks['bf16']:,.0f} GFLOP/s, fp32 {peaks['fp32']:,.0f}. Work: {per_layer / 1e6:.1f} MFLOP a token in the "
        f"graph's weights plus attention ({layers} layers, hidden {hidden}), {per_text / 1e9:.3f} GFLOP a text on these "
        "texts (real tokens; padding is not counted as work).",
        "",
        "| engine | precision | texts/s | GFLOP/s | share of the peak |",
        "|---|---|---:|---:|---:|",
    ]
    for label, texts_per_s, precision in engines.values():
        peak = peaks["bf16" if precision == "bf16" else "fp32"]
        rate = texts_per_s * per_text / 1e9
        lines.append(f"| {label} | {precision} | {texts_per_s:,.1f} | {rate:,.0f} | {rate / peak:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: OpenVINO's default, one per core)")
    a = p.parse_args(argv)
    for precision, gflops in measure_peaks(a.threads).items():
        print(f"{precision}: {gflops:,.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
