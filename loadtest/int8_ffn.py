"""AMX-INT8 on the feed-forward layers, measured before it is built (issue 25; loadtest/FINDINGS.md,
"INT8 feed-forward layers"). The engine's OpenVINO bf16 session against the same `model.onnx`
with the feed-forward MatMuls (the two whose weights have the intermediate width) rewritten:

- `w8`: weights only, per output channel symmetric int8 (i8 -> Convert -> Multiply, OpenVINO's
  compressed-weight pattern), activations left in bf16: what int8 weights alone cost in fidelity;
- `w8a8`: FakeQuantize on both inputs (weights per output channel, 255 levels; activations per
  tensor, 256 levels, min / max over the calibration texts), so the CPU plugin runs them in int8;
- `w8a8-sq-up`: the same on the up-projection only, SmoothQuant first (alpha 0.5: each input
  channel divided by max|x|^a / max|w|^(1-a), the weights multiplied by it).

Fidelity against fp32 on the corpus texts (min / mean cosine, top-10 neighbours kept, as the
variants' fidelity is measured); texts/s in length-sorted runs of 16, the variants alternating.

    python -m loadtest.int8_ffn ARTIFACT_DIR [--model all-MiniLM-L6-v2] [--texts 1200] [--passes 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

from loadtest.workload import Corpus
from models.artifacts import ModelArtifacts
from models.corpus import calibration_texts
from models.encoder import Encoder
from models.pooling import pool
from models.specs import resolve_model
from models.variant_fidelity import cosines, top10_kept

BF16 = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


def ffn_matmuls(model: ov.Model, width: int) -> list:
    """MatMuls with a constant 2-D weight of the intermediate width, in graph order (up, down, ...)."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and op.input_value(1).get_node().get_type_name() == "Constant":
            shape = op.input_value(1).get_node().get_data().shape
            if len(shape) == 2 and width in shape:
                found.append(op)
    return found


def feeds(seqs: list[np.ndarray], names: set[str], run: int = 16) -> list[tuple[list[int], dict]]:
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = []
    for k in range(0, len(order), run):
        rows = order[k: k + run]
        ids = np.zeros((len(rows), max(len(seqs[i]) for i in rows)), np.int64)
        mask = np.zeros_like(ids)
        for j, i in enumerate(rows):
            ids[j, : len(seqs[i])], mask[j, : len(seqs[i])] = seqs[i], 1
        f = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            f["token_type_ids"] = np.zeros_like(ids)
        out.append((rows, f))
    return out


def activation_ranges(core: ov.Core, path: Path, width: int, seqs: list[np.ndarray]) -> list[tuple[float, float, np.ndarray]]:
    """(min, max, per-channel max |x|) of each feed-forward MatMul's input, fp32, real tokens only."""
    model = core.read_model(str(path))
    mms = ffn_matmuls(model, width)
    model.add_outputs([op.input_value(0) for op in mms])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = {p.get_any_name() for p in compiled.inputs}
    req = compiled.create_infer_request()
    lo, hi, cmax = [np.inf] * len(mms), [-np.inf] * len(mms), [0.0] * len(mms)
    for _, f in feeds(seqs, names):
        res = req.infer(f)
        real = f["attention_mask"].astype(bool)
        for k in range(len(mms)):
            a = res[k + 1][real]
            lo[k], hi[k] = min(lo[k], float(a.min())), max(hi[k], float(a.max()))
            cmax[k] = np.maximum(cmax[k], np.abs(a).max(0))
    return list(zip(lo, hi, cmax))


def _fq(x, low: np.ndarray | float, high: np.ndarray | float, levels: int):
    low, high = ops.constant(np.asarray(low, np.float32)), ops.constant(np.asarray(high, np.float32))
    return ops.fake_quantize(x, low, high, low, high, levels)


def rewrite(model: ov.Model, width: int, kind: str, ranges: list) -> int:
    """Rewrites the feed-forward MatMuls of `model` for `kind`; how many it rewrote."""
    done = 0
    for k, op in enumerate(ffn_matmuls(model, width)):
        if kind == "w8a8-sq-up" and k % 2:
            continue
        w = op.input_value(1).get_node().get_data().astype(np.float32)
        tb = bool(op.get_attributes().get("transpose_b", False))
        reduce_axis = 1 if tb else 0  # over the input channels: one scale per output channel
        x, (lo, hi, cmax) = op.input_value(0), ranges[k]
        if kind == "w8-weights":
            scale = np.maximum(np.abs(w).max(axis=reduce_axis, keepdims=True), 1e-12) / 127.0
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            deq = ops.multiply(ops.convert(ops.constant(q), ov.Type.f32), ops.constant(scale.astype(np.float32)))
            op.input(1).replace_source_output(deq.output(0))
            done += 1
            continue
        if kind == "w8a8-sq-up":
            w_in = np.maximum(np.abs(w).max(axis=0 if tb else 1), 1e-5)  # per input channel
            s = np.maximum(cmax, 1e-5) ** 0.5 / w_in**0.5
            x = ops.multiply(x, ops.constant((1 / s).astype(np.float32))).output(0)
            w = w * (s[None, :] if tb else s[:, None])
            bound = float((cmax / s).max())
            lo, hi = -bound, bound
        wmax = np.abs(w).max(axis=reduce_axis, keepdims=True)
        op.input(1).replace_source_output(_fq(ops.constant(w), -wmax, wmax, 255).output(0))
        op.input(0).replace_source_output(_fq(x, lo, hi, 256).output(0))
        done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.int8_ffn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact_dir")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--texts", type=int, default=1200)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--intermediate", type=int, default=0, help="feed-forward width (default: 4x the dimension)")
    a = p.parse_args(argv)
    spec = resolve_model(a.model)
    artifacts = ModelArtifacts.load(Path(a.artifact_dir), spec)
    exact = Encoder(spec, artifacts, variant="openvino-fp32", calibrate=False)
    seqs = exact.tokenize(Corpus.load(spec.id, Path(a.artifact_dir)).texts[: a.texts])
    ref = exact.encode_ids(seqs)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    path = artifacts.root / artifacts.variant("openvino-bf16")["file"]
    core = ov.Core()
    width = a.intermediate or 4 * spec.dimension  # BERT's intermediate size, without Dense layers
    ranges = activation_ranges(core, path, width, exact.tokenize(calibration_texts()[:256]))

    sessions = {}
    for kind in ("bf16", "w8-weights", "w8a8", "w8a8-sq-up"):
        model = core.read_model(str(path))
        n = 0 if kind == "bf16" else rewrite(model, width, kind, ranges)
        sessions[kind] = (core.compile_model(model, "CPU", BF16), n)

    def run(compiled) -> np.ndarray:
        req, out = compiled.create_infer_request(), np.empty((len(seqs), spec.dimension), np.float32)
        for rows, f in feeds(seqs, {p.get_any_name() for p in compiled.inputs}):
            out[rows] = pool(spec.pooling, req.infer(f)[0], f["attention_mask"])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    speed: dict[str, list[float]] = {k: [] for k in sessions}
    for kind, (compiled, n) in sessions.items():
        v = run(compiled)
        cos = cosines(v, ref)
        print(f"{kind:11s} MatMuls rewritten {n:2d}: min cos {cos.min():.5f}, mean {cos.mean():.6f}, "
              f"top-10 kept {top10_kept(v, ref):.4f}", flush=True)
    for _ in range(a.passes):
        for kind, (compiled, _) in sessions.items():
            t0 = time.perf_counter()
            run(compiled)
            speed[kind].append(len(seqs) / (time.perf_counter() - t0))
    base = statistics.median(speed["bf16"])
    for kind, xs in speed.items():
        med = statistics.median(xs)
        print(f"{kind:11s} {med:6.1f} texts/s (median of {len(xs)}: {', '.join(f'{x:.0f}' for x in xs)}), "
              f"{med / base:.2f}x bf16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
