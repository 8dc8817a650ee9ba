"""OpenVINO pins its threads to the first cores of the process as if it had the machine to
itself; two 1-thread engines side by side (the bulk job's actors, a node's encoder replicas)
then share core 0 while the other cores idle. An engine with fewer threads than the process's
cores leaves the placement to the OS; one with every core keeps OpenVINO's pinning."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.backends.openvino import OpenVinoSession, auto_streams, pins_shared_cores
from tests.support.engine import artifact_dir, resolve_model

CORES = len(os.sched_getaffinity(0))


def model_path() -> Path:
    return artifact_dir() / resolve_model("all-MiniLM-L6-v2").key / "model.onnx"


def narrowed_threads() -> set[int]:
    """Threads of this process allowed fewer cores than the process itself."""
    return {int(task.name) for task in Path("/proc/self/task").iterdir()
            if len(os.sched_getaffinity(int(task.name))) < CORES}


def test_the_rule():
    assert pins_shared_cores(1) is (CORES > 1)
    assert not pins_shared_cores(CORES) and not pins_shared_cores(0)  # every core / OpenVINO's own choice


def test_a_one_thread_engine_leaves_its_thread_to_the_os():
    before = narrowed_threads()
    session = OpenVinoSession(model_path(), precision="bf16", threads=1)
    ids = np.ones((4, 16), dtype=np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    session.compiled.create_infer_request().infer({k: v for k, v in inputs.items() if k in session.input_names})
    assert session.compiled.get_property("ENABLE_CPU_PINNING") is (CORES == 1)
    assert narrowed_threads() - before == set(), "an inference thread was pinned to fewer cores than the process has"


def test_streams_0_means_two_where_the_engine_has_two_threads_or_more():
    assert auto_streams(1) == 1 and auto_streams(2) == 2 and auto_streams(8) == 2
    assert auto_streams(0) == (2 if CORES >= 2 else 1)  # 0 threads: one per core
    session = OpenVinoSession(model_path(), precision="bf16", streams=0)
    assert session.streams == auto_streams(0)
    one = OpenVinoSession(model_path(), precision="bf16", threads=1, streams=0)
    assert one.streams == 1
