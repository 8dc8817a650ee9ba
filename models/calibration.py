"""Fitting the int8 output scale, and measuring what each lossy output option costs.

Pure numpy. Vectors in, numbers out; `export` feeds it the calibration and evaluation corpora.
"""

from __future__ import annotations

import numpy as np

from models.pooling import l2_normalize

SCALE_PERCENTILE = 99.99


def fit_int8_scales(unit_vectors: np.ndarray, sizes: list[int] | None = None) -> dict[int, float]:
    """Symmetric int8 scale for each output size d: the 99.99th percentile of |x| over the
    calibration vectors truncated to d dimensions and renormalized (values grow as d shrinks,
    so one scale for all sizes would clip)."""
    dim = unit_vectors.shape[1]
    sizes = sizes or list(range(1, dim + 1))
    scales = {}
    for d in sizes:
        cut = l2_normalize(unit_vectors[:, :d])
        scales[d] = float(np.percentile(np.abs(cut), SCALE_PERCENTILE))
    return scales
