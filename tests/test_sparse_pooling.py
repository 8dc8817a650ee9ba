"""SPLADE pooling in numpy (models.sparse.splade_pool) is sentence-transformers' SpladePooling:
max and sum, relu and log1p_relu, padding left out; and a randomly initialised DistilBERT saved
as a SparseEncoder folder with sum / log1p_relu is read, exported and served with
SparseEncoder.encode's vectors."""

from __future__ import annotations

import numpy as np
import pytest

from models.artifacts import ModelArtifacts
from models.model_folder import exported_spec, read_folder
from models.sparse import SparseModel, SpladeConfig, splade_pool
from models.sparse_export import ATOL, RTOL
from tests.support.sparse_models import build_random_distilbert, reference
from tests.support.user_models import run_export


@pytest.mark.parametrize("strategy", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_numpy_pooling_equals_splade_pooling(strategy, activation):
    import torch
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(3, 7, 50)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6], dtype=np.int64)
    logits[1, 4:] = 100.0  # padding with large logits: must never count
    module = SpladePooling(strategy, activation).eval()
    with torch.no_grad():
        want = module({"token_embeddings": torch.from_numpy(logits.copy()),
                       "attention_mask": torch.from_numpy(mask)})["sentence_embedding"].numpy()
    got = splade_pool(logits, mask, SpladeConfig(strategy, activation))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert (got > 0).sum() > 10


def test_a_random_distilbert_sparse_encoder_with_sum_and_log1p_relu(tmp_path):
    folder = build_random_distilbert(tmp_path)
    spec = read_folder(str(folder), "random-distilbert")
    assert (spec.task, spec.architecture, spec.max_seq_length) == ("sparse", "distilbert", 64)
    assert spec.extra["splade"] == {"strategy": "sum", "activation": "log1p_relu"}
    done = run_export(f"random-distilbert={folder}", artifact_dir=tmp_path / "artifacts")
    assert done.returncode == 0, done.stderr[-3000:]
    spec = exported_spec(tmp_path / "artifacts", "random-distilbert")
    texts = ["Hello, world", "A random model still weighs every token.", "long text " * 100]
    want = reference(folder, texts)
    for variant in ("fp32", "optimized"):
        m = SparseModel(spec, ModelArtifacts.load(tmp_path / "artifacts", spec), variant=variant, providers="cpu")
        got = np.zeros_like(want)
        for row, v in enumerate(m.encode(texts)):
            got[row, v.indices] = v.values
        assert ((got > 0) == (want > 0)).all() and (want > 0).sum() > 100
        assert (np.abs(got - want) <= RTOL * want + ATOL).all(), np.abs(got - want).max()
