"""The one seam between the engine and the inference runtimes.

A session runs an exported encoder graph on padded id batches and hands back token states. Each
runtime is one module with one class behind the same small contract (`Session`); `open_session`
is the one place that picks the class for a variant. Nothing above this package knows which
runtime is underneath.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from models.packing import BIAS_INPUT, packed_inputs
from models.rerank import unpack
from models.variants import Variant

# (token states (b, t, d), attention mask (b, t)) -> one row per text, e.g. pooled vectors.
Reduce = Callable[[np.ndarray, np.ndarray], np.ndarray]
Batch = tuple[np.ndarray, np.ndarray]  # (input_ids, attention_mask), int64, right-padded
Each = Callable[[int, np.ndarray], None]  # (batch number, its reduced result)
Started = Callable[[], None]  # every batch of a call under way, and the runtime free to take more


class Session(Protocol):
    backend: str
    precision: str  # the precision that actually runs (read back from the runtime)
    input_names: set[str]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Token states of one batch (an array the caller owns)."""

    def run_reduced(self, batches: list[Batch], reduce: Reduce, each: Each | None = None,
                    started: Started | None = None) -> list[np.ndarray]:
        """`reduce` applied to each batch's token states while they are still in the runtime's
        buffers (no copy of the states); results in the order of `batches`. A runtime with
        several streams runs batches side by side. `each(k, result)` is told of each batch's
        result as soon as it is ready (from the runtime's thread), before the rest are run.
        `started()`, where the runtime can run another call's batches beside this one's last
        (several streams), is told once it can; a runtime of one stream never tells it."""

    def describe(self) -> dict:
        """Backend, version, device, precision, threads: what /v1/models reports."""


def feed(input_names: set[str], input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Only the inputs the graph declares (BERT has token_type_ids, MPNet has none). A
    cross-encoder's pairs carry their segments in the ids (models.rerank.pack); a packed graph's
    rows carry their texts in the mask (models.packing)."""
    input_ids, segments = unpack(input_ids)
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names:
        out["token_type_ids"] = np.zeros_like(input_ids) if segments is None else segments * attention_mask
    if BIAS_INPUT in input_names:  # a packed graph: the mask numbers each row's texts
        out |= packed_inputs(attention_mask)
    elif "position_ids" in input_names:  # decoders (Qwen): right padding, so every row counts from 0
        out["position_ids"] = np.tile(np.arange(input_ids.shape[1], dtype=np.int64), (input_ids.shape[0], 1))
    return {k: v for k, v in out.items() if k in input_names}


def available_backends() -> tuple[str, ...]:
    """The runtimes importable here (ONNX Runtime always is; OpenVINO is a dependency too, but a
    GPU image may leave it out)."""
    out = ["onnxruntime"]
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass
    else:
        out.append("openvino")
    return tuple(out)


def open_session(
    path: Path, variant: Variant, *, providers: list[str] | str = "auto", threads: int = 0, streams: int = 1,
    packed: int | None = None,
) -> Session:
    """The session for `variant`'s graph at `path`: the one place a runtime is chosen. `packed`
    (OpenVINO only): the graph rewritten to take packed rows, positions counted from it
    (models.packing; NotPackable where it cannot be)."""
    if variant.backend == "openvino":
        from models.backends.openvino import OpenVinoSession

        return OpenVinoSession(path, variant.precision, threads=threads, streams=streams, packed=packed)
    from models.backends.onnxruntime import OrtSession

    return OrtSession(path, providers=providers, threads=threads, precision=variant.precision)
