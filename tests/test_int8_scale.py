"""The int8 output scale: a 99.99th-percentile rule per output size, fitted at export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from models.int8_scale import SCALE_PERCENTILE, fit_int8_scales, scale_sizes
from models.corpus import calibration_texts, evaluation_texts
from models.pooling import l2_normalize
from models.postprocess import EncodingFormat, OutputOptions, postprocess
from models.specs import MINILM_L6_V2
from tests.support.service import artifact_dir


@pytest.fixture(scope="module")
def gaussian_unit() -> np.ndarray:
    """Isotropic unit vectors: a component of a d-dim one is about N(0, 1/d)."""
    return l2_normalize(np.random.default_rng(7).standard_normal((3000, 384)).astype(np.float32))


def test_the_scale_is_the_percentile_of_the_renormalized_truncated_components(gaussian_unit):
    scales = fit_int8_scales(gaussian_unit, [384, 100, 7])
    for d, scale in scales.items():
        cut = l2_normalize(gaussian_unit[:, :d])
        assert scale == pytest.approx(float(np.percentile(np.abs(cut), SCALE_PERCENTILE)), rel=1e-6)
        # So about 1 component in 10,000 lies beyond it (and is clipped to ±127).
        assert np.mean(np.abs(cut) > scale) <= 2e-4


def test_a_single_scale_would_not_do_the_scale_grows_as_dims_shrink(gaussian_unit):
    scales = fit_int8_scales(gaussian_unit, [384, 256, 128, 64, 16])
    assert scales[384] < scales[256] < scales[128] < scales[64] < scales[16]
    # For isotropic vectors the spread is ~1/sqrt(d).
    assert scales[64] / scales[256] == pytest.approx(2.0, rel=0.15)
    # With the full-size scale, 64-dim unit vectors would clip far more than 0.01%.
    cut = l2_normalize(gaussian_unit[:, :64])
    assert np.mean(np.abs(cut) > scales[384]) > 0.05


def test_every_size_gets_a_scale_by_default():
    unit = l2_normalize(np.random.default_rng(1).standard_normal((200, 24)).astype(np.float32))
    scales = fit_int8_scales(unit)
    assert sorted(scales) == list(range(1, 25))
    assert scales[1] == pytest.approx(1.0)  # a 1-dim unit vector is ±1


def test_a_fixed_list_of_matryoshka_sizes_only_gets_those_scales(gaussian_unit):
    spec = dataclasses.replace(MINILM_L6_V2, matryoshka_dims=(384, 256, 128, 64))
    scales = fit_int8_scales(gaussian_unit, spec.matryoshka_dims)  # what export calls
    assert sorted(scales) == [64, 128, 256, 384]
    pooled = gaussian_unit[:3] * 5
    for d in spec.matryoshka_dims:
        q = postprocess(pooled, spec, OutputOptions(d, EncodingFormat.INT8), scales)
        assert q.shape == (3, d) and q.dtype == np.int8


def test_sizes_outside_the_model_are_refused():
    assert scale_sizes(8, (8, 4, 4, 2)) == [2, 4, 8]
    for bad in [(), (0, 4), (4, 9)]:
        with pytest.raises(ValueError):
            scale_sizes(8, bad)


def test_calibration_and_evaluation_texts_are_disjoint():
    assert not set(calibration_texts()) & set(evaluation_texts())


def test_the_exported_minilm_scales_follow_the_rule():
    """The scales in the shared artifacts: one per size 1..384, growing as dims shrink."""
    path = artifact_dir() / MINILM_L6_V2.key / "manifest.json"
    if not path.is_file():
        pytest.skip(f"{path} not exported")
    scales = {int(k): v for k, v in json.loads(path.read_text())["int8_scales"].items()}
    assert sorted(scales) == list(range(1, 385))
    assert scales[384] < scales[256] < scales[128] < scales[64] < scales[32] < scales[8] <= 1.0
    assert 0.1 < scales[384] < 0.4  # far below 1: int8 uses its range
