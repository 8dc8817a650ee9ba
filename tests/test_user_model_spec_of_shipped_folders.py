"""The real weights the packages here ship, read as a user's folder: the spec made from the
folder's own files equals the hand-written spec embedserve ships for the same model (pooling,
normalization, dimension, max length, pad token, prompts), so a user's copy of all-MiniLM-L6-v2
or all-mpnet-base-v2 would be served exactly as the shipped one."""

from __future__ import annotations

import pytest

from models.artifacts import model_dir
from models.model_folder import read_folder
from models.specs import MINILM_L6_V2, MPNET_BASE_V2
from models.weights import materialize
from tests.support.service import artifact_dir


@pytest.mark.parametrize("shipped", [MINILM_L6_V2, MPNET_BASE_V2], ids=lambda s: s.key)
def test_the_spec_read_from_the_shipped_folder_is_the_shipped_spec(shipped):
    folder = materialize(shipped, model_dir(artifact_dir(), shipped))
    spec = read_folder(str(folder), f"my-{shipped.key}")
    assert (spec.dimension, spec.max_seq_length, spec.pooling, spec.normalize, spec.pad_token_id) == (
        shipped.dimension, shipped.max_seq_length, shipped.pooling, shipped.normalize, shipped.pad_token_id)
    assert spec.dense == () and spec.prompts == shipped.prompts
    assert spec.user and spec.key == f"my-{shipped.key}"
