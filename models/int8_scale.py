"""Fitting the int8 output scale. Pure numpy: calibration vectors in, one scale per size out.

What each lossy option then costs is measured by `models.lossy_cost`; `export` feeds both.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from models.pooling import l2_normalize

SCALE_PERCENTILE = 99.99


def scale_sizes(dim: int, matryoshka_dims: Iterable[int] | None = None) -> list[int]:
    """The output sizes a model serves: its fixed Matryoshka list, or every size 1..dim."""
    if matryoshka_dims is None:
        return list(range(1, dim + 1))
    sizes = sorted(set(matryoshka_dims))
    if not sizes or sizes[0] < 1 or sizes[-1] > dim:
        raise ValueError(f"Matryoshka sizes must lie in 1..{dim}; got {sizes}.")
    return sizes


def fit_int8_scales(unit_vectors: np.ndarray, sizes: Iterable[int] | None = None) -> dict[int, float]:
    """Symmetric int8 scale for each output size d (default: every size 1..dim): the 99.99th
    percentile of |x| over the calibration vectors truncated to d dimensions and renormalized
    (values grow as d shrinks, so one scale for all sizes would clip)."""
    unit_vectors = np.asarray(unit_vectors, dtype=np.float32)
    scales = {}
    for d in scale_sizes(unit_vectors.shape[1], sizes):
        cut = l2_normalize(unit_vectors[:, :d])
        scales[d] = float(np.percentile(np.abs(cut), SCALE_PERCENTILE))
    return scales
