"""OpenVINO's CPU plugin keeps compiled kernels and buffers for every input shape it has run
(5,000 shapes by default), and dynamic batching makes a new (batch, length) shape of nearly every
round: a replica grew without end. The engine keeps RUNTIME_CACHE_SHAPES of them (LRU), so its
memory levels off once that many shapes have run."""

from __future__ import annotations

import json
import subprocess
import sys

from models.backends.openvino import RUNTIME_CACHE_SHAPES
from tests.support.engine import artifact_dir, resolve_model
from tests.support.service import ROOT

OPENVINO_DEFAULT = 5000
SHAPES = 400  # distinct (batch, length) shapes, each run once

# Runs in a fresh process (its RSS is this engine's alone): RSS after the first and the second
# half of the shapes.
RUN = """
import json, random, sys
import numpy as np, psutil
from models.backends.openvino import OpenVinoSession
path, cached, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
session = OpenVinoSession(path, precision="bf16", cached_shapes=cached)
request = session.compiled.create_infer_request()
shapes = [(b, l) for l in range(4, 129) for b in range(1, 17) if b * l <= 512]
random.Random(0).shuffle(shapes)
rss = []
for i, (b, l) in enumerate(shapes[:n]):
    ids = np.ones((b, l), dtype=np.int64)
    inputs = {"input_ids": ids, "attention_mask": ids, "token_type_ids": np.zeros_like(ids)}
    request.infer({k: v for k, v in inputs.items() if k in session.input_names})
    if i + 1 in (n // 2, n):
        rss.append(psutil.Process().memory_info().rss / 2**20)
print(json.dumps(rss))
"""


def growth_over_second_half(cached_shapes: int) -> float:
    """MiB the engine's process grew while running the second half of SHAPES new shapes."""
    path = artifact_dir() / resolve_model("all-MiniLM-L6-v2").key / "model.onnx"
    done = subprocess.run([sys.executable, "-c", RUN, str(path), str(cached_shapes), str(SHAPES)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    half, end = json.loads(done.stdout.strip().splitlines()[-1])
    return end - half


def test_memory_levels_off_once_the_cache_of_shapes_is_full():
    assert RUNTIME_CACHE_SHAPES < SHAPES // 2  # the second half runs with the cache full
    capped = growth_over_second_half(RUNTIME_CACHE_SHAPES)
    uncapped = growth_over_second_half(OPENVINO_DEFAULT)
    # Measured on the 2-core AVX512-BF16 machine: 16 MiB capped, 91 MiB with OpenVINO's default.
    assert capped < 40, f"grew {capped:.0f} MiB over {SHAPES // 2} new shapes with {RUNTIME_CACHE_SHAPES} kept"
    assert uncapped > capped + 25, (capped, uncapped)  # the control: without the bound it grows
