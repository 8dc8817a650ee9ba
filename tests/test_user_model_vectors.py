"""A user's model, exported from its own folder, gives sentence-transformers' vectors.

Every architecture the engine supports (tests.support.user_models: BERT with CLS pooling, a Tanh
Dense layer and no Normalize; DistilBERT with max pooling; XLM-RoBERTa with a trained unigram
tokenizer and query / passage prompts; ModernBERT with weighted-mean pooling; Qwen3 with
last-token pooling and left padding), at fp32: cosine >= 0.9999 to
`SentenceTransformer(folder).encode`, on short texts and on texts over the model's maximum, with
and without the model's prompts, and batched equal to one-by-one (the engine pads right; the
decoder's reference pads left)."""

from __future__ import annotations

import numpy as np
import pytest

from models.corpus import evaluation_texts
from models.encoder import Encoder
from models.variant_fidelity import cosines
from models.model_folder import exported_spec
from models.prompts import prompt_table, resolve_prompt
from models.specs import register_user_model
from tests.support.user_models import TINY_MODELS, reference

EXACT = 0.9999
SHORT = ["Hello, world", "A cat sat on the mat.", "Vectors, fast and cheap", "ok"]


def long_texts() -> list[str]:
    """Texts well over every tiny model's maximum (they are cut at it)."""
    return sorted(evaluation_texts(), key=len)[-4:]


def encoder(user_models, name: str, variant: str = "fp32") -> Encoder:
    spec = exported_spec(user_models.artifact_dir, name)
    register_user_model(spec)
    return Encoder.from_artifact_dir(spec, user_models.artifact_dir, variant=variant, providers="cpu", calibrate=False)


def served(enc: Encoder, texts: list[str], input_type: str | None = None) -> np.ndarray:
    prompt = resolve_prompt(prompt_table(enc.spec.prompts, enc.artifacts.prompts), input_type)
    return enc.encode_ids(enc.tokenizer.encode(texts, prompt=prompt))


@pytest.mark.parametrize("name", [m.name for m in TINY_MODELS])
def test_fp32_vectors_equal_sentence_transformers_on_short_and_over_long_texts(user_models, name):
    enc = encoder(user_models, name)
    texts = SHORT + long_texts()
    assert all(len(s) == enc.spec.max_seq_length for s in enc.tokenize(long_texts())), "the long texts must be cut"
    cos = cosines(served(enc, texts), reference(user_models.folders[name], texts))
    assert cos.min() >= EXACT, cos


@pytest.mark.parametrize("name", [m.name for m in TINY_MODELS if m.prompts])
def test_prompted_vectors_equal_sentence_transformers_with_the_prompt(user_models, name):
    enc = encoder(user_models, name)
    model = next(m for m in TINY_MODELS if m.name == name)
    texts = SHORT + long_texts()[:2]
    prompted = cosines(served(enc, texts, "search_query"), reference(user_models.folders[name], texts, model.prompts["query"]))
    assert prompted.min() >= EXACT, prompted
    plain = cosines(served(enc, texts), reference(user_models.folders[name], texts, model.prompts["query"]))
    assert plain.min() < EXACT, "the prompt must change the vectors, or this test proves nothing"


@pytest.mark.parametrize("name", [m.name for m in TINY_MODELS])
def test_batched_vectors_equal_one_by_one(user_models, name):
    enc = encoder(user_models, name)
    texts = SHORT + long_texts()
    batched = served(enc, texts)
    single = np.concatenate([served(enc, [t]) for t in texts])
    assert cosines(batched, single).min() >= EXACT


def test_the_spec_is_read_from_the_folder(user_models):
    """Pooling, Dense, Normalize, max length, prompts and padding side come from the model's files."""
    for m in TINY_MODELS:
        spec = exported_spec(user_models.artifact_dir, m.name)
        assert spec.architecture == m.arch and spec.max_seq_length == m.max_seq_length
        assert spec.pooling == {"lasttoken": "last"}.get(m.pooling, m.pooling)
        assert spec.dimension == (m.dense or 32) and len(spec.dense) == (1 if m.dense else 0)
        assert spec.normalize is m.normalize
        assert {k: v for k, v in spec.prompts.items()} == m.prompts
        assert spec.extra["padding_side"] == m.padding_side


def test_the_export_measures_every_variant_against_the_models_own_reference(user_models):
    for m in TINY_MODELS:
        variants = encoder(user_models, m.name).artifacts.manifest["variants"]
        assert variants["fp32"]["fidelity"]["min_cos"] >= EXACT
        assert all("min_cos" in v["fidelity"] for v in variants.values())
    assert user_models.export_log.count("exported to") == len(TINY_MODELS)
