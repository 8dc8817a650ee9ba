"""Model registry and the ONNX Runtime session factory."""

from __future__ import annotations

import logging

import pytest

from models.errors import ModelNotFound
from models.backends.onnxruntime import resolve_providers
from models.specs import MINILM_L6_V2, MPNET_BASE_V2, resolve_model
from tests.support.engine import encoder


@pytest.mark.parametrize("name", ["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "ALL-minilm-l6-v2"])
def test_models_resolve_by_id_or_alias(name):
    assert resolve_model(name) is MINILM_L6_V2


def test_unknown_model_is_a_typed_error_naming_the_known_ones():
    with pytest.raises(ModelNotFound, match="all-MiniLM-L6-v2"):
        resolve_model("text-embedding-3-small")


def test_specs_carry_the_sentence_transformers_settings():
    assert (MINILM_L6_V2.dimension, MINILM_L6_V2.max_seq_length, MINILM_L6_V2.pooling) == (384, 256, "mean")
    assert (MPNET_BASE_V2.dimension, MPNET_BASE_V2.max_seq_length, MPNET_BASE_V2.pad_token_id) == (768, 384, 1)


def test_cpu_is_always_the_last_provider():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"


def test_an_unavailable_provider_falls_back_to_cpu_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_providers(["NoSuchExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider is not available" in caplog.text


def test_only_the_inputs_the_graph_declares_are_fed():
    assert "token_type_ids" in encoder("all-MiniLM-L6-v2").session.input_names
    mpnet = encoder("all-mpnet-base-v2")
    assert "token_type_ids" not in mpnet.session.input_names
    assert mpnet.embed(["runs without token_type_ids"]).shape == (1, 768)
