"""A corpus embedded again gives the same bytes: the bulk job cuts a shard's texts into the
engine's runs by a fixed plan (serving.batch.engine.JOB_COST), never by the cost model each engine
measures at load, so the runs, their shapes and their companions depend on the rows and the
job's options alone. This matters under bf16, where a vector moves ~1e-4 with its run
(tests/test_batch_variance.py): without it a redone shard's bytes differed on an AMX CPU.
The plan and the engine the bytes depend on are written down (_job.json, each manifest)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from models.run_planner import CostModel, plan_batches
from serving.batch.engine import JOB_COST, encode_sorted
from tests.support.batch import corpus_texts, manifests, run_in_process, write_parquet
from tests.support.engine import encoder

MODEL = "all-MiniLM-L6-v2"
# Two cost models as far apart as two loads' fits can be: they plan different runs.
CHEAP_RUNS, DEAR_RUNS = CostModel(1.0, 40.0), CostModel(400.0, 5000.0)


def served_variant() -> str:
    """What `auto` serves on this CPU: bf16 where the CPU has the units (where runs matter)."""
    from models import cpu

    return "openvino-bf16" if cpu.detect().bf16 else "openvino-fp32"


def test_the_plan_of_a_shard_does_not_follow_the_engines_measured_cost_model():
    enc = encoder(MODEL, served_variant())
    seqs = enc.tokenize(corpus_texts(400))
    lengths = [len(s) for s in seqs]
    # The control: the two fits really cut these texts differently.
    assert plan_batches(lengths, enc.max_batch_size, enc.max_batch_tokens, CHEAP_RUNS) != \
        plan_batches(lengths, enc.max_batch_size, enc.max_batch_tokens, DEAR_RUNS)
    saved = enc.cost
    try:
        outputs = []
        for measured in (CHEAP_RUNS, DEAR_RUNS):
            enc.cost = measured  # what a load's probe might have fitted
            outputs.append(encode_sorted(enc, seqs))
    finally:
        enc.cost = saved
    assert outputs[0].tobytes() == outputs[1].tobytes()
    assert np.isfinite(outputs[0]).all() and outputs[0].shape == (400, enc.spec.dimension)
    assert encode_sorted(enc, seqs, cost=JOB_COST).tobytes() == outputs[0].tobytes()


def digests(out) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "vectors").glob("*.parquet"))}


@pytest.mark.integration
def test_a_corpus_embedded_twice_from_scratch_gives_the_same_bytes(ray_serve, tmp_path):
    n = 300
    path = write_parquet(tmp_path / "corpus.parquet", [f"t-{i}" for i in range(n)], corpus_texts(n, offset=1000))
    first = run_in_process(path, tmp_path / "first", shard_rows=60)
    second = run_in_process(path, tmp_path / "second", shard_rows=60)  # new actors: new engines, new probes
    assert first.ok == second.ok == n
    a, b = digests(tmp_path / "first"), digests(tmp_path / "second")
    assert len(a) == 5 and a == b

    job = json.loads((tmp_path / "first" / "_job.json").read_text())
    assert job["identity"]["plan"]["cost_model"] == {"overhead_tokens": JOB_COST.overhead_tokens,
                                                    "attention_tokens": JOB_COST.attention_tokens}
    for m1, m2 in zip(manifests(tmp_path / "first"), manifests(tmp_path / "second")):
        engine = m1["engine"]
        assert engine == m2["engine"]
        assert engine["precision"] in ("fp32", "bf16") and engine["threads"] >= 1 and len(engine["sha256"]) == 64
        assert isinstance(engine["cpu_features"], list)
