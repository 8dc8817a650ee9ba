"""ONNX Runtime: providers checked against what is installed, threads and graph optimization set
once, and only the inputs the graph declares fed. The runtime for CUDA / TensorRT, for exact fp32
on request and the fallback wherever OpenVINO is not installed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.backends import Batch, Each, Reduce, Started, feed

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(requested: list[str] | tuple[str, ...] | str = "auto") -> list[str]:
    """ORT provider names to use, in priority order, always ending with CPU.

    `auto` takes CUDA when the installed onnxruntime has it (TensorRT only when asked for:
    building its engines takes minutes). A requested provider that is not available is
    dropped with a warning, never silently.
    """
    available = ort.get_available_providers()
    if isinstance(requested, str):
        requested = [requested]
    auto = list(requested) == ["auto"]
    wanted = ["cuda"] if auto else list(requested)
    chosen = []
    for name in wanted:
        name = name.strip()
        if name.lower() == "auto":
            name = "cuda"
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full in available:
            if full not in chosen:
                chosen.append(full)
        elif not auto:
            log.warning("execution provider %s is not available (have %s); falling back", full, available)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def gpu_available(requested: list[str] | str = "auto") -> bool:
    """Whether these providers put the encoder on a GPU."""
    return resolve_providers(requested)[0] != "CPUExecutionProvider"


def create_session(
    path: Path,
    providers: list[str] | str = "auto",
    intra_op_threads: int = 0,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = optimization
    opts.intra_op_num_threads = intra_op_threads  # 0: one per physical core
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    names = resolve_providers(providers)
    session = ort.InferenceSession(str(path), sess_options=opts, providers=names)
    got = session.get_providers()
    if got[0] != names[0]:
        log.warning("asked for %s but ONNX Runtime runs %s: falling back to %s", names[0], got, got[0])
    return session


class OrtSession:
    """One onnxruntime.InferenceSession behind the engine's session contract."""

    backend = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | str = "auto", threads: int = 0, precision: str = "fp32"):
        self.session = create_session(path, providers, threads)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()
        self.precision = precision  # fp32 graphs run fp32; the int8 graph carries int8 weights
        self.threads = threads

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], feed(self.input_names, input_ids, attention_mask))[0]

    def run_reduced(self, batches: list[Batch], reduce: Reduce, each: Each | None = None,
                    started: Started | None = None) -> list[np.ndarray]:
        results = []  # one batch at a time: never `started` before the end
        for k, (ids, mask) in enumerate(batches):
            results.append(reduce(self.run(ids, mask), mask))
            if each is not None:
                each(k, results[-1])
        return results

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "version": ort.__version__,
            "device": "GPU" if self.providers[0] != "CPUExecutionProvider" else "CPU",
            "providers": list(self.providers),
            "precision": self.precision,
            "threads": self.session.get_session_options().intra_op_num_threads,
        }
