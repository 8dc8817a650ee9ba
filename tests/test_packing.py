"""Packed rows (models.packing): several texts end to end in one row of a run, each attending only
to itself and counting its positions from its own start, give every text the vector it has alone.

On OpenVINO at fp32 the packed engine equals sentence-transformers (cosine >= 0.9999) for the
shipped model and each tiny architecture whose graph the rewrite knows; the others, and
ONNX Runtime, run rows of one text; a rewrite that gives other vectors is refused at load."""

from __future__ import annotations

import numpy as np
import pytest

from models.backends import open_session
from models.backends.openvino import NotPackable, core, packed_model
from models.encoder import Encoder, EncodeStats
from models.model_folder import exported_spec
from models.packing import (
    BIAS_INPUT,
    MASKED,
    pack_rows,
    packed_inputs,
    packs_alike,
    pool_packed,
    probes,
    segments,
    vectors_alone,
)
from models.pooling import POOLERS, pool
from models.specs import register_user_model, resolve_model
from models.variant_fidelity import cosines
from tests.support.service import artifact_dir
from tests.support.user_models import TINY_MODELS, reference
from tests.test_user_model_vectors import SHORT, long_texts

EXACT = 0.9999
# What the rewrite knows: absolute position embeddings and a mask added to the scores. ModernBERT
# (rotary positions) and Qwen3 (a decoder that takes its positions already) keep rows of one text.
PACKED = {"tiny-bert", "tiny-distilbert", "tiny-xlm-roberta"}


def test_rows_fill_first_fit_longest_first_and_a_long_text_has_a_row_of_its_own():
    lengths = [10, 200, 60, 300, 50, 5]
    rows = pack_rows(lengths, 256)
    assert rows == [[3], [1, 4, 5], [2, 0]]
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 256 for r in rows if len(r) > 1)


def test_each_text_attends_only_to_itself_and_counts_its_positions_from_zero():
    segs = np.array([np.concatenate([segments([3, 2]), [0, 0]])])
    fed = packed_inputs(segs)
    assert fed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert fed["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0]]
    bias = fed[BIAS_INPUT][0, 0]
    assert bias.shape == (7, 7)
    assert (bias[:3, :3] == 0).all() and (bias[3:5, 3:5] == 0).all()
    assert (bias[:3, 3:] == MASKED).all() and (bias[3:5, :3] == MASKED).all() and (bias[3:5, 5:] == MASKED).all()


@pytest.mark.parametrize("kind", sorted(POOLERS))
def test_pooling_a_packed_run_equals_pooling_each_text_alone(kind):
    rng = np.random.default_rng(0)
    rows = [[4, 1, 7], [9], [2, 2]]
    width = 12
    hidden = rng.normal(size=(len(rows), width, 5)).astype(np.float32)
    segs = np.zeros((len(rows), width), dtype=np.int64)
    want = []
    for r, lengths in enumerate(rows):
        segs[r, : sum(lengths)] = segments(lengths)
        start = 0
        for n in lengths:
            alone = hidden[r : r + 1, start : start + n]
            want.append(pool(kind, alone, np.ones((1, n), dtype=np.int64))[0])
            start += n
    np.testing.assert_allclose(pool_packed(kind, hidden, segs), np.stack(want), rtol=1e-5, atol=1e-6)


def openvino_encoder(user_models, name: str) -> Encoder:
    spec = exported_spec(user_models.artifact_dir, name)
    register_user_model(spec)
    return Encoder.from_artifact_dir(spec, user_models.artifact_dir, variant="openvino-fp32", providers="cpu",
                                     calibrate=False)


@pytest.mark.parametrize("name", [m.name for m in TINY_MODELS])
def test_packed_vectors_equal_sentence_transformers_for_every_architecture_that_packs(user_models, name):
    enc = openvino_encoder(user_models, name)
    assert enc.packing == (name in PACKED), enc.packing
    texts = SHORT * 3 + long_texts()
    stats = EncodeStats()
    got = enc.encode_ids(enc.tokenize(texts), stats)
    if enc.packing:
        assert stats.batches < len(texts) and sum(stats.batch_sizes) == len(texts)
    cos = cosines(got, reference(user_models.folders[name], texts))
    assert cos.min() >= EXACT, cos
    alone = np.stack([enc.encode_ids(enc.tokenize([t]))[0] for t in texts])
    assert cosines(got, alone).min() >= EXACT


def test_the_shipped_model_packs_on_openvino_and_not_on_onnx_runtime():
    spec = resolve_model("all-MiniLM-L6-v2")
    ov = Encoder.from_artifact_dir(spec, artifact_dir(), variant="openvino-fp32", providers="cpu", calibrate=False)
    ort = Encoder.from_artifact_dir(spec, artifact_dir(), variant="fp32", providers="cpu", calibrate=False)
    assert ov.packing and not ort.packing
    assert BIAS_INPUT in ov.session.input_names and BIAS_INPUT not in ort.session.input_names
    texts = ["a", "two words", "A somewhat longer sentence about packing texts into rows."] * 5
    assert cosines(ov.embed(texts), ort.embed(texts)).min() >= EXACT


def test_a_rewrite_that_gives_other_vectors_is_refused(user_models):
    """XLM-RoBERTa counts positions from the padding id + 1: a graph fed positions from 0 gives other
    vectors, and the load-time check tells them apart (the engine then tries the offset)."""
    enc = openvino_encoder(user_models, "tiny-xlm-roberta")
    path = enc.artifacts.root / enc.artifacts.variant(enc.variant)["file"]
    seqs = probes(enc._probe_ids(), enc.spec.max_seq_length)
    want = vectors_alone(open_session(path, enc.choice.variant, providers="cpu"), enc._reduce, seqs, enc.spec.pad_token_id)
    for offset, alike in ((0, False), (enc.spec.pad_token_id + 1, True)):
        packed = open_session(path, enc.choice.variant, providers="cpu", packed=offset)
        assert packs_alike(want, packed, enc._reduce_packed, seqs, enc.spec.pad_token_id,
                           enc.spec.max_seq_length) == alike, offset


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-modernbert"])
def test_a_graph_without_a_position_lookup_to_rewrite_is_not_packed(user_models, name):
    """Qwen3 takes its position ids as an input already; ModernBERT's positions are rotary."""
    enc = openvino_encoder(user_models, name)
    path = enc.artifacts.root / enc.artifacts.variant(enc.variant)["file"]
    assert packed_model(core().read_model(str(path))) is None and not enc.packing
    with pytest.raises(NotPackable):
        open_session(path, enc.choice.variant, providers="cpu", packed=0)
