"""How the OpenVINO backend was chosen: the same model.onnx, the same texts, length-sorted batches
of 16, in-process, through each way of running it that is installed in this interpreter:

  ort            ONNX Runtime, CPU execution provider, fp32
  ort-ov-ep      ONNX Runtime's OpenVINO execution provider (package onnxruntime-openvino, which
                 replaces onnxruntime: run it from a separate venv), f32 and bf16
  ov             the OpenVINO runtime reading model.onnx, f32 and bf16, 1 and 2 streams

Standalone on purpose (numpy, tokenizers and whichever runtimes are importable), so that it runs
in the separate venv the execution provider needs:

    python -m loadtest.backend_choice ARTIFACT_DIR/all-minilm-l6-v2 [--texts 1200]
    python -m venv /tmp/ep && /tmp/ep/bin/pip install onnxruntime-openvino==1.24.1 tokenizers numpy
    /tmp/ep/bin/python loadtest/backend_choice.py ARTIFACT_DIR/all-minilm-l6-v2

Prints texts/s (best of 3 passes) and the min cosine of each to the first engine measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.jsonl"


def batches_of(model_dir: Path, n: int, size: int):
    from tokenizers import Tokenizer

    texts = [json.loads(line) for line in CORPUS.read_text().splitlines() if line][:n]
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    seqs = [np.array(e.ids, dtype=np.int64) for e in tok.encode_batch(texts)]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = []
    for i in range(0, len(order), size):
        idx = order[i : i + size]
        ids = np.zeros((len(idx), max(len(seqs[j]) for j in idx)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, j in enumerate(idx):
            ids[r, : len(seqs[j])], mask[r, : len(seqs[j])] = seqs[j], 1
        out.append((idx, ids, mask))
    return out, len(texts)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def feed(names: set[str], ids: np.ndarray, mask: np.ndarray) -> dict:
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {k: v for k, v in out.items() if k in names}


def ort_runner(path: Path, provider=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=[provider] if provider else ["CPUExecutionProvider"])
    if provider and s.get_providers()[0] != provider[0]:
        raise RuntimeError(f"{provider[0]} did not load (runs {s.get_providers()})")
    names = {i.name for i in s.get_inputs()}
    return lambda bs: [(idx, mean_pool(s.run(None, feed(names, ids, m))[0], m)) for idx, ids, m in bs]


def ov_runner(path: Path, precision: str, streams: int):
    import openvino as ov

    core = ov.Core()
    cm = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": str(streams)})
    names = {p.get_any_name() for p in cm.inputs}
    if streams == 1:
        req = cm.create_infer_request()
        return lambda bs: [(idx, mean_pool(req.infer(feed(names, ids, m))[0], m)) for idx, ids, m in bs]
    queue = ov.AsyncInferQueue(cm, streams)

    def run(bs):
        out = [None] * len(bs)

        def done(req, k):
            out[k] = (bs[k][0], mean_pool(req.get_output_tensor(0).data, bs[k][2]))

        queue.set_callback(done)
        for k, (_, ids, m) in enumerate(bs):
            queue.start_async(feed(names, ids, m), k)
        queue.wait_all()
        return out

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.backend_choice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--texts", type=int, default=1200)
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args(argv)
    bs, n = batches_of(a.model_dir, a.texts, a.batch)
    onnx = a.model_dir / "model.onnx"
    candidates = [("ort fp32", lambda: ort_runner(onnx))]
    for prec in ("f32", "bf16"):
        config = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": prec}})
        candidates.append((f"ort-ov-ep {prec}", lambda c=config: ort_runner(
            onnx, ("OpenVINOExecutionProvider", {"device_type": "CPU", "load_config": c}))))
    for prec, streams in (("f32", 1), ("bf16", 1), ("bf16", 2)):
        candidates.append((f"ov {prec} streams={streams}", lambda p_=prec, s_=streams: ov_runner(onnx, p_, s_)))
    first = None
    for name, make in candidates:
        try:
            run = make()
        except Exception as exc:  # noqa: BLE001 (a runtime not installed in this interpreter)
            print(f"{name:24s} not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
            continue
        run(bs[:4])
        best, res = 0.0, None
        for _ in range(3):
            t = time.perf_counter()
            res = run(bs)
            best = max(best, n / (time.perf_counter() - t))
        vec = np.zeros((n, res[0][1].shape[1]), dtype=np.float32)
        for idx, v in res:
            vec[idx] = v
        first = vec if first is None else first
        print(f"{name:24s} {best:7.1f} texts/s   min cosine to the first {float((vec * first).sum(1).min()):.6f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
