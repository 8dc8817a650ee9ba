"""Shared helpers for engine tests: exported artifacts, local encoders, the reference model."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from models.encoder import Encoder
from models.specs import ModelSpec, resolve_model
from models.weights import materialize
from tests.support.service import artifact_dir

DATA = Path(__file__).resolve().parents[1] / "data"


def fidelity_texts() -> list[str]:
    return [json.loads(line) for line in (DATA / "fidelity.jsonl").read_text(encoding="utf-8").splitlines() if line]


@functools.lru_cache(maxsize=None)
def encoder(model: str, variant: str = "fp32") -> Encoder:
    # The default cost model: vectors do not depend on how a round is planned (tests/test_run_planner.py).
    return Encoder.from_artifact_dir(resolve_model(model), artifact_dir(), variant=variant, providers="cpu", calibrate=False)


@functools.lru_cache(maxsize=None)
def reference_model(model: str):
    """sentence-transformers itself, with the model's declared max_seq_length."""
    from sentence_transformers import SentenceTransformer

    spec: ModelSpec = resolve_model(model)
    st = SentenceTransformer(str(materialize(spec, artifact_dir() / spec.key)), device="cpu", local_files_only=True)
    assert st.max_seq_length == spec.max_seq_length
    return st
