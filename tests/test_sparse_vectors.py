"""Sparse vectors of the engine (models.sparse) equal sentence-transformers' SparseEncoder on the
trained SPLADE-tiny: the same non-zero indices, and weights within RTOL * w + ATOL at fp32 (the
absolute floor is fp32 round-off of the logits; models.sparse_export), for a plain masked-LM
folder and a SparseEncoder folder, short and over-long texts, batched as one by one, prompts per
input type, and top-k pruning as sentence-transformers' max_active_dims."""

from __future__ import annotations

import numpy as np
import pytest

from models.artifacts import ModelArtifacts
from models.errors import InvalidOption
from models.model_folder import exported_spec, read_folder
from models.prompts import resolve_prompt
from models.sparse import SparseModel, sparsify
from models.sparse_export import ATOL, RTOL
from tests.support.sparse_models import PROMPTS, reference

TEXTS = [
    "Hello, world",
    "The quick brown fox jumps over the lazy dog.",
    "How do sparse retrieval models weigh rare terms like zymurgy?",
    "A very long document about search engines and inverted indexes. " * 80,  # over 512 tokens: truncated
]
NAMES = ("splade-plain", "splade-st")


def model(sparse_models, name: str, variant: str = "fp32") -> SparseModel:
    spec = exported_spec(sparse_models.artifact_dir, name)
    return SparseModel(spec, ModelArtifacts.load(sparse_models.artifact_dir, spec), variant=variant, providers="cpu")


def dense(vectors, vocab: int) -> np.ndarray:
    out = np.zeros((len(vectors), vocab), dtype=np.float32)
    for row, v in enumerate(vectors):
        out[row, v.indices] = v.values
    return out


def assert_same(got: np.ndarray, want: np.ndarray, min_entries: int = 6) -> None:
    assert ((got > 0) == (want > 0)).all(), "the non-zero indices differ"
    assert (want > 0).sum(axis=1).min() >= min_entries, "a vector with almost no entries proves little"
    assert (np.abs(got - want) <= RTOL * want + ATOL).all(), np.abs(got - want).max()


def test_both_folders_are_read_as_sparse_models_of_the_vocabulary(sparse_models):
    for name in NAMES:
        spec = read_folder(str(sparse_models.folders[name]), name)
        assert (spec.task, spec.dimension, spec.max_seq_length) == ("sparse", 30522, 512)
        assert spec.extra["splade"] == {"strategy": "max", "activation": "relu"}
    assert read_folder(str(sparse_models.folders["splade-st"]), "x").prompts == PROMPTS


@pytest.mark.parametrize("variant", ["fp32", "optimized"])
@pytest.mark.parametrize("name", NAMES)
def test_vectors_equal_sparse_encoder(sparse_models, name, variant):
    m = model(sparse_models, name, variant)
    got = dense(m.encode(TEXTS), m.spec.dimension)
    assert_same(got, reference(sparse_models.folders[name], TEXTS))


def test_indices_ascend_and_values_are_positive(sparse_models):
    for v in model(sparse_models, "splade-plain").encode(TEXTS):
        assert (np.diff(v.indices) > 0).all() and (v.values > 0).all()
        assert v.indices.dtype == np.int64 and v.values.dtype == np.float32


def test_batched_equals_one_by_one(sparse_models):
    m = model(sparse_models, "splade-plain")
    together = dense(m.encode(TEXTS), m.spec.dimension)
    alone = np.concatenate([dense(m.encode([t]), m.spec.dimension) for t in TEXTS])
    assert ((together > 0) == (alone > 0)).all()
    np.testing.assert_allclose(together, alone, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("input_type", ["query", "document"])
def test_input_types_put_the_models_prompt_first(sparse_models, input_type):
    m = model(sparse_models, "splade-st")
    prompt = resolve_prompt(m.spec.prompts, input_type)
    got = dense(m.encode(TEXTS[:3], prompt=prompt), m.spec.dimension)
    assert_same(got, reference(sparse_models.folders["splade-st"], TEXTS[:3], prompt_name=input_type))
    plain = dense(m.encode(TEXTS[:3]), m.spec.dimension)
    assert not np.allclose(got, plain), "the prompt must change the vectors, or this test proves nothing"


@pytest.mark.parametrize("k", [1, 8, 32])
def test_top_k_keeps_the_k_largest_weights_as_max_active_dims(sparse_models, k):
    m = model(sparse_models, "splade-plain")
    pruned = m.encode(TEXTS, top_k=k)
    full = m.encode(TEXTS)
    for p, f in zip(pruned, full):
        assert len(p.indices) == min(k, len(f.indices))
        assert (np.diff(p.indices) > 0).all()
        kept = dict(zip(f.indices.tolist(), f.values.tolist()))
        assert all(kept[i] == v for i, v in zip(p.indices.tolist(), p.values.tolist()))
        assert p.values.min() >= np.sort(f.values)[::-1][len(p.indices) - 1]
    assert_same(dense(pruned, m.spec.dimension), reference(sparse_models.folders["splade-plain"], TEXTS, top_k=k), min(k, 6))


def test_top_k_must_be_positive(sparse_models):
    m = model(sparse_models, "splade-plain")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidOption, match="top_k"):
            m.encode(TEXTS[:1], top_k=bad)


def test_ties_at_the_cut_keep_the_lower_index():
    v = sparsify(np.array([0, 2.0, 1.0, 2.0, 2.0], dtype=np.float32), top_k=2)
    assert v.indices.tolist() == [1, 3] and v.values.tolist() == [2.0, 2.0]


def test_token_strings_are_the_vocabulary_entries(sparse_models):
    m = model(sparse_models, "splade-plain")
    v = m.encode(["the quick brown fox"])[0]
    tokens = m.tokens(v.indices)
    assert {"quick", "brown", "fox"} <= set(tokens)
    assert [m.vocab.token_to_id(t) for t in tokens] == v.indices.tolist()


def test_the_export_records_its_measured_fidelity(sparse_models):
    for name in NAMES:
        spec = exported_spec(sparse_models.artifact_dir, name)
        manifest = ModelArtifacts.load(sparse_models.artifact_dir, spec).manifest
        assert manifest["task"] == "sparse"
        for variant in ("fp32", "optimized"):
            fid = manifest["variants"][variant]["fidelity"]
            assert fid["same_indices"] and fid["within_tolerance"] and fid["max_abs_error"] <= ATOL
