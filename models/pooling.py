"""Pooling of token states into one vector per text, and L2 normalization. Pure numpy."""

from __future__ import annotations

import numpy as np


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token states where mask is 1. hidden: (b, t, d); mask: (b, t)."""
    m = mask.astype(hidden.dtype)
    summed = np.matmul(m[:, None, :], hidden)[:, 0, :]  # batched BLAS, no (b, t, d) temporary
    counts = np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    return summed / counts


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[:, 0, :]


def last_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The state of each row's last real token (right padding)."""
    last = np.maximum(mask.sum(axis=1) - 1, 0)
    return hidden[np.arange(hidden.shape[0]), last, :]


def max_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per dimension, the largest state among the real tokens."""
    return np.where(mask[:, :, None] > 0, hidden, -np.inf).max(axis=1).astype(hidden.dtype)


def weighted_mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean weighted by position (1, 2, ...): later tokens count more (right padding)."""
    w = mask.astype(hidden.dtype) * np.arange(1, mask.shape[1] + 1, dtype=hidden.dtype)
    return np.matmul(w[:, None, :], hidden)[:, 0, :] / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)


def mean_sqrt_len_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(hidden.dtype)
    return np.matmul(m[:, None, :], hidden)[:, 0, :] / np.sqrt(np.maximum(m.sum(axis=1, keepdims=True), 1e-9))


POOLERS = {"mean": mean_pool, "cls": cls_pool, "last": last_pool, "max": max_pool,
           "weightedmean": weighted_mean_pool, "mean_sqrt_len_tokens": mean_sqrt_len_pool}


def pool(kind: str, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return POOLERS[kind](hidden, mask)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)
