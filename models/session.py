"""The one ONNX Runtime session factory: providers checked against what is installed,
threads and graph optimization set once, and only the inputs the graph declares fed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

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


class EncoderSession:
    """Runs an exported encoder graph on padded id batches; returns the token states."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.input_names = {i.name for i in session.get_inputs()}
        self.output_name = session.get_outputs()[0].name
        self.providers = session.get_providers()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        feed = {k: v for k, v in feed.items() if k in self.input_names}
        return self.session.run([self.output_name], feed)[0]
