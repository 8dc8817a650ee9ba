"""Long texts embedded whole: token windows over a text, and their vectors pooled back into
one. Pure functions.

A text longer than the model's window is cut into windows of `size` tokens that overlap by
`overlap` tokens; each window is embedded as an ordinary sequence (with the model's special
tokens and the prompt), and the text's vector is the mean of all the windows' token states:
each window's mean-pooled vector weighted by its token count, then normalized (after, with
the rest of post-processing).
"""

from __future__ import annotations

import numpy as np

from models.errors import InvalidOption

# Tokens two neighbouring windows share, and the most windows one text may take (a longer one
# is refused before any work is queued). Both are service settings.
DEFAULT_WINDOW_OVERLAP = 32
DEFAULT_MAX_WINDOWS = 64


def window_spans(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of each window over `n_tokens` tokens: `size` tokens each, the next one
    starting `size - overlap` later, the last one ending at the text's end (it may be shorter).
    A text that fits is one window (an empty one is one empty window)."""
    if size < 1 or not 0 <= overlap < size:
        raise InvalidOption(f"windows need 0 <= overlap < size; got size {size}, overlap {overlap}.", param="truncate")
    stride = size - overlap
    spans = [(0, min(size, n_tokens))]
    while spans[-1][1] < n_tokens:
        start = spans[-1][0] + stride
        spans.append((start, min(start + size, n_tokens)))
    return spans


def window_count(n_tokens: int, size: int, overlap: int) -> int:
    """len(window_spans(...)) without building them."""
    if n_tokens <= size:
        return 1
    stride = size - overlap
    return 1 + -(-(n_tokens - size) // stride)


def pool_windows(vectors: np.ndarray, token_counts: list[int], groups: list[int]) -> np.ndarray:
    """Per text, the token-weighted mean of its windows' mean-pooled vectors. `groups[i]` is
    how many consecutive rows of `vectors` (and entries of `token_counts`) text i took.
    A text of one window keeps its vector exactly."""
    out = np.empty((len(groups), vectors.shape[1]), dtype=np.float32)
    counts = np.asarray(token_counts, dtype=np.float64)
    start = 0
    for i, n in enumerate(groups):
        if n == 1:
            out[i] = vectors[start]
        else:
            w = counts[start : start + n]
            out[i] = (w @ vectors[start : start + n].astype(np.float64)) / w.sum()
        start += n
    return out
