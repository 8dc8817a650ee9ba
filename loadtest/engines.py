"""The no-server baselines of the benchmark, each run in a fresh child process so that its
peak memory is its own:

  raw  the engine the service uses (the same variant choice, runtime, threads, streams, batch
       limits and measured cost model), in-process, on pre-tokenized texts: the whole set
       planned at once as the engine plans it (`Encoder.runs`: packed rows where it packs,
       length-sorted runs at its width step), batches handed to the session as many at a time
       as it has streams. With another variant: that runtime's ceiling.
  raw1 the same engine, one text at a time: tokenize + run + pool + normalize of each text
       (`Encoder.embed`), timed one by one: the floor under an idle service's latency.
  st   sentence-transformers `encode` on the same texts, batched as it batches them (sorted,
       32): torch fp32, torch bf16, or its OpenVINO backend (`backend="openvino"`).

    python -m loadtest.engines raw|raw1|st --spec spec.json   (prints one JSON line)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _timed_batches(batches: list[list[int]], run_batch, runs: int) -> list[dict]:
    # Warm-up (untimed): the first and the last batch, so both shapes have been seen.
    for b in {0, len(batches) - 1}:
        run_batch(batches[b])
    out = []
    for _ in range(runs):
        lat = []
        c0 = time.process_time()  # CPU time of every thread of this process
        t0 = time.perf_counter()
        for b in batches:
            s = time.perf_counter()
            run_batch(b)
            lat.append((time.perf_counter() - s) * 1e3)
        out.append({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                    "batch_latency_ms": lat})
    return out


def measure_raw(spec_in: dict) -> dict:
    from models import cpu as cpuinfo
    from models.encoder import Encoder
    from models.specs import resolve_model

    spec = resolve_model(spec_in["model"])
    cpu = cpuinfo.detect()
    if spec_in.get("cpu_features") is not None:
        cpu = cpu.with_flags(set(spec_in["cpu_features"]))
    t0 = time.perf_counter()
    enc = Encoder.from_artifact_dir(
        spec, Path(spec_in["artifact_dir"]), variant=spec_in["variant"], providers=spec_in["providers"],
        intra_op_threads=spec_in["intra_op_threads"], max_batch_size=spec_in["max_batch_size"],
        max_batch_tokens=spec_in["max_batch_tokens"], streams=spec_in.get("streams", 1), cpu=cpu,
        pack=spec_in.get("pack", True),
    )
    load_s = time.perf_counter() - t0
    texts = spec_in["texts"]
    t0 = time.perf_counter()
    seqs = enc.tokenize(texts)
    tokenize_s = time.perf_counter() - t0
    batches = [batch for _, batch in enc.runs(seqs)]  # planned (and packed) as the engine plans them
    engine = enc.describe()
    streams = engine.get("streams") or 1
    groups = [batches[i : i + streams] for i in range(0, len(batches), streams)]

    def run_group(group):
        return enc.session.run_reduced(group, enc.reducer)

    runs = _timed_batches(groups, run_group, spec_in["runs"])
    return {
        "engine": engine["backend"], "variant": enc.variant, "precision": engine["precision"],
        "describe": {k: engine[k] for k in ("backend", "version", "device", "precision", "threads", "streams", "cpu",
                                            "cost_model", "width_step", "packed_rows") if k in engine},
        "load_s": load_s, "tokenize_s": tokenize_s, "batches": len(batches),
        "padded_tokens": sum(mask.size for _, mask in batches),
        "runs": runs,
    }


def measure_raw_single(spec_in: dict) -> dict:
    from models import cpu as cpuinfo
    from models.encoder import Encoder
    from models.specs import resolve_model

    enc = Encoder.from_artifact_dir(
        resolve_model(spec_in["model"]), Path(spec_in["artifact_dir"]), variant=spec_in["variant"],
        providers=spec_in["providers"], intra_op_threads=spec_in["intra_op_threads"],
        max_batch_size=spec_in["max_batch_size"], max_batch_tokens=spec_in["max_batch_tokens"],
        streams=spec_in.get("streams", 1), cpu=cpuinfo.detect(), pack=spec_in.get("pack", True),
    )
    texts = spec_in["texts"]
    for t in texts:  # one untimed pass: the first run of each shape costs more (OpenVINO compiles it)
        enc.embed([t])
    runs = []
    for _ in range(spec_in["runs"]):
        lat = []
        for t in texts:
            s = time.perf_counter()
            enc.embed([t])
            lat.append((time.perf_counter() - s) * 1e3)
        runs.append({"p50_ms": float(np.median(lat)), "mean_ms": float(np.mean(lat)), "latency_ms": lat})
    engine = enc.describe()
    return {"variant": enc.variant, "precision": engine["precision"], "backend": engine["backend"], "runs": runs}


def measure_st(spec_in: dict) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from models.specs import resolve_model
    from models.weights import materialize

    spec = resolve_model(spec_in["model"])
    mode = spec_in.get("st_mode", "torch")
    t0 = time.perf_counter()
    path = materialize(spec, Path(spec_in["artifact_dir"]) / spec.key)
    kw: dict = {"device": "cpu", "local_files_only": True}
    if mode == "torch-bf16":
        kw["model_kwargs"] = {"torch_dtype": torch.bfloat16}
    elif mode == "openvino":
        kw["backend"] = "openvino"  # exports the model to OpenVINO IR on load (optimum-intel)
    model = SentenceTransformer(str(path), **kw)
    model.max_seq_length = spec.max_seq_length
    load_s = time.perf_counter() - t0
    texts = spec_in["texts"]
    # What `model.encode(texts, batch_size=32)` does by itself: sort by text length (longest
    # first), then batches of 32. (Our token-budget plan would hand it the engine's own trick.)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    batches = [order[i : i + ST_BATCH_SIZE] for i in range(0, len(order), ST_BATCH_SIZE)]

    def run_batch(idx):
        return model.encode([texts[i] for i in idx], batch_size=len(idx), convert_to_numpy=True,
                            show_progress_bar=False)

    detail = {"engine": "sentence-transformers", "mode": mode, "torch_threads": torch.get_num_threads()}
    if mode == "openvino":
        req = model[0].auto_model.request
        detail["precision"] = req.get_property("INFERENCE_PRECISION_HINT").get_type_name() if hasattr(req, "get_property") else None
        for idx in batches:  # one untimed pass: OpenVINO compiles kernels for each new shape
            run_batch(idx)
    with torch.inference_mode():
        runs = _timed_batches(batches, run_batch, spec_in["runs"])
    return {**detail, "load_s": load_s, "batches": len(batches), "runs": runs}


ST_BATCH_SIZE = 32  # sentence-transformers' default


def run_child(kind: str, spec_in: dict, workdir: Path, timeout_s: float = 3600) -> dict:
    """Run one baseline in a fresh interpreter; its result plus its peak RSS."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{kind}-spec.json"
    spec_path.write_text(json.dumps(spec_in))
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.engines", kind, "--spec", str(spec_path)],
        capture_output=True, text=True, timeout=timeout_s, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} baseline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.engines")
    p.add_argument("kind", choices=["raw", "raw1", "st"])
    p.add_argument("--spec", required=True)
    a = p.parse_args(argv)
    spec_in = json.loads(Path(a.spec).read_text())
    result = {"raw": measure_raw, "raw1": measure_raw_single, "st": measure_st}[a.kind](spec_in)
    # Peak resident set of this process over its whole life (Linux reports KiB).
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
