"""OpenVINO reading the exported model.onnx itself (no second artifact): f32, or bf16 on CPUs with
bf16 matrix units (AMX, AVX512-BF16). Picked over ONNX Runtime's OpenVINO execution provider by
measurement (BENCHMARKS.md, "Choosing the backend"): faster, lets the engine run several streams,
and installs beside onnxruntime instead of replacing it."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from models.backends import Batch, Each, Reduce, Started, feed
from models.packing import BIAS_INPUT, POSITIONS_INPUT

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# OpenVINO's element type names -> the engine's precision names.
PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


# Input shapes whose compiled kernels and buffers OpenVINO's CPU plugin keeps (LRU). Its default,
# 5,000, grows a replica by ~0.8 MiB for each new (batch, length) shape it meets, and dynamic
# batching meets thousands: a service replica went from 497 to 792 MiB in four passes of the
# corpus, still growing. 128 keeps the engine within ~220 MiB of its loaded size at the same
# speed (measured: loadtest/FINDINGS.md, "Memory: OpenVINO's cache of shapes").
RUNTIME_CACHE_SHAPES = 128


@functools.lru_cache(maxsize=1)
def core() -> ov.Core:
    """One OpenVINO Core per process (it owns the plugins and their thread pools)."""
    return ov.Core()


def pins_shared_cores(threads: int) -> bool:
    """True where OpenVINO's default thread pinning would crowd engines that share the cores:
    the engine runs fewer threads than the process may use, so others run beside it."""
    return 0 < threads < len(os.sched_getaffinity(0))


def auto_streams(threads: int) -> int:
    """Streams for `streams=0`: two where the engine has two threads or more, else one. Measured on
    2 AMX Xeon cores (loadtest/FINDINGS.md, "Two streams for the service's rounds"): the service's
    rounds are cut into runs of a few rows, and two 1-thread streams running them side by side beat
    one 2-thread stream that syncs its threads at every op: every service row 1.07-1.13x."""
    n = threads if threads > 0 else len(os.sched_getaffinity(0))
    return 2 if n >= 2 else 1


class NotPackable(ValueError):
    """The graph has no attention bias and position lookup `packed_model` knows how to rewrite."""


def _attention_bias(mask: ov.Node) -> ov.Output | None:
    """The tensor computed from the `attention_mask` parameter that the attention layers add to
    their scores: of everything derived from the mask (not through its shape), what most Adds take."""
    best, most, todo, seen = None, 0, [mask.output(0)], set()
    while todo:
        out = todo.pop()
        users = [target.get_node() for target in out.get_target_inputs()]
        adds = sum(1 for node in users if node.get_type_name() == "Add")
        if adds > most and out.get_node() is not mask:
            best, most = out, adds
        for node in users:
            if node.get_type_name() != "ShapeOf" and node.get_instance_id() not in seen:
                seen.add(node.get_instance_id())
                todo.extend(node.outputs())
    return best


def _position_gather(model: ov.Model) -> ov.Node | None:
    """The one Gather that looks up absolute position embeddings (a 2-D constant named for them)."""
    found = [op for op in model.get_ops() if op.get_type_name() == "Gather"
             and op.input_value(0).get_node().get_type_name() == "Constant"
             and len(op.input_value(0).get_partial_shape()) == 2
             and any("position_embeddings" in n for n in op.input_value(0).get_names())]
    return found[0] if len(found) == 1 else None


def packed_model(model: ov.Model, offset: int = 0) -> ov.Model | None:
    """`model` (an encoder as exported) rewritten in place to take packed rows (models.packing):
    its attention bias (b, 1, t, t) and position ids (b, t, counted from `offset`: RoBERTa's start
    past the padding id) as inputs. None where the graph is not one this knows: no mask-derived
    f32 bias added to the scores, no single position-embedding lookup, or those inputs taken already."""
    params = {p.get_friendly_name(): p for p in model.get_parameters()}
    if "attention_mask" not in params or params.keys() & {BIAS_INPUT, POSITIONS_INPUT}:
        return None
    bias, gather = _attention_bias(params["attention_mask"]), _position_gather(model)
    if bias is None or gather is None or bias.get_element_type() != ov.Type.f32:
        return None
    bias_in = ops.parameter([-1, 1, -1, -1], ov.Type.f32, name=BIAS_INPUT)
    positions_in = ops.parameter([-1, -1], ov.Type.i64, name=POSITIONS_INPUT)
    for param in (bias_in, positions_in):
        param.output(0).set_names({param.get_friendly_name()})
    for target in list(bias.get_target_inputs()):
        if target.get_node().get_type_name() == "Add":
            target.replace_source_output(bias_in.output(0))
    positions = positions_in.output(0)
    if offset:
        positions = ops.add(positions, ops.constant(np.int64(offset))).output(0)
    if gather.input_value(1).get_element_type() != ov.Type.i64:
        positions = ops.convert(positions, gather.input_value(1).get_element_type()).output(0)
    gather.input(1).replace_source_output(positions)
    return ov.Model(model.get_results(), [*model.get_parameters(), bias_in, positions_in], model.get_friendly_name())


class _Job:
    """One `run_reduced` call's batches on the streams: each result reduced in its request's
    callback, while the states are still in the request's buffer."""

    def __init__(self, batches: list[Batch], reduce: Reduce, each: Each | None, feeds: list[dict]):
        self.batches, self.reduce, self.each = batches, reduce, each
        self.feeds = feeds  # alive until every batch is done (shared with the requests)
        self.results: list[np.ndarray | None] = [None] * len(batches)
        self.errors: list[BaseException] = []
        self.left = len(batches)
        self.finished = threading.Event()
        self._lock = threading.Lock()

    def finish(self, request: ov.InferRequest, k: int) -> None:
        """In the runtime's thread, when batch k is done."""
        try:
            self.results[k] = self.reduce(request.get_output_tensor(0).data, self.batches[k][1])
            if self.each is not None:
                self.each(k, self.results[k])
        except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread)
            self.errors.append(exc)
        with self._lock:
            self.left -= 1
            if self.left == 0:
                self.finished.set()


class OpenVinoSession:
    backend = "openvino"

    def __init__(
        self, path: Path, precision: str = "fp32", threads: int = 0, streams: int = 1,
        cached_shapes: int = RUNTIME_CACHE_SHAPES, packed: int | None = None,
    ):
        if precision not in PRECISION_HINTS:
            raise ValueError(f"OpenVINO runs fp32 or bf16 here, not {precision}")
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": str(streams if streams > 0 else auto_streams(threads)),
            "CPU_RUNTIME_CACHE_CAPACITY": str(cached_shapes),
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if pins_shared_cores(threads):
            # OpenVINO pins its threads to the first cores of the process's mask, as if it had the
            # machine to itself: two 1-thread engines (the bulk job's actors, encoder replicas of
            # a node) both land on core 0 while core 1 idles. Fewer threads than cores: let the OS
            # place them.
            config["ENABLE_CPU_PINNING"] = "NO"
        model = core().read_model(str(path))
        if packed is not None:  # rewritten to take packed rows, positions counted from `packed`
            model = packed_model(model, packed)
            if model is None:
                raise NotPackable(f"{path.name}: no attention bias and position lookup to rewrite for packed rows")
        self.compiled = core().compile_model(model, "CPU", config)
        self.input_names = {p.get_any_name() for p in self.compiled.inputs}
        # What runs, read back: a CPU without bf16 units runs a bf16 hint at f32.
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = PRECISION_NAMES.get(ran, ran)
        self.requested_precision = precision
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self._request = self.compiled.create_infer_request()
        self._queue = ov.AsyncInferQueue(self.compiled, self.streams) if self.streams > 1 else None
        if self._queue is not None:
            self._queue.set_callback(lambda request, job_k: job_k[0].finish(request, job_k[1]))
        # Infer requests are not thread-safe; a health check may call in beside the batcher, and
        # two rounds may start their runs on the streams at once.
        self._lock = threading.Lock()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self._request.infer(feed(self.input_names, input_ids, attention_mask), share_inputs=True)
            return out[0]  # share_outputs=False (the default): a copy the caller owns

    def run_reduced(self, batches: list[Batch], reduce: Reduce, each: Each | None = None,
                    started: Started | None = None) -> list[np.ndarray]:
        if self._queue is not None:
            return self._run_streams(batches, reduce, each, started)
        with self._lock:
            results = []
            for k, (ids, mask) in enumerate(batches):
                self._request.infer(feed(self.input_names, ids, mask), share_inputs=True)
                results.append(reduce(self._request.get_output_tensor(0).data, mask))
                if each is not None:
                    each(k, results[-1])
            return results

    def _run_streams(self, batches: list[Batch], reduce: Reduce, each: Each | None,
                     started: Started | None) -> list[np.ndarray]:
        """Batches side by side on the streams. Once all are under way and a stream is free,
        `started()` is told: the caller's next batches may start beside this call's last ones
        (two rounds of a continuous batcher overlap, and no stream idles between them)."""
        if not batches:
            return []
        job = _Job(batches, reduce, each, [feed(self.input_names, ids, mask) for ids, mask in batches])
        with self._lock:
            for k, inputs in enumerate(job.feeds):
                self._queue.start_async(inputs, (job, k), share_inputs=True)  # waits for a free stream
        if started is not None:
            self._queue.get_idle_request_id()  # waits for a stream to be free
            started()
        job.finished.wait()
        if job.errors:
            raise job.errors[0]
        return job.results  # type: ignore[return-value]

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "version": ov.__version__.split("-")[0],
            "device": "CPU",
            "precision": self.precision,
            "requested_precision": self.requested_precision,
            "threads": self.threads,
            "streams": self.streams,
        }
