"""What each lossy output option costs: the share of the float top-10 neighbours it keeps.

Pure numpy. Input: float unit vectors of held-out texts (models/data/evaluation.jsonl at
export). A spread of them are the queries; each query's neighbours are all the other texts
(never itself); the truth is the float top-10 by cosine. Every option is encoded exactly as
the service encodes it (models.postprocess) and searched with the distance a vector database
would use for that format.
"""

from __future__ import annotations

import numpy as np

from models.postprocess import dequantize_int8, pack_ubinary, quantize_int8, quantize_uint8, truncate

TOP_K = 10
RESCORE_TOP = 40  # binary search: rescore this many Hamming candidates with the float query
QUERIES = 400
MATRYOSHKA_SIZES = (512, 384, 256, 128, 64)  # reported for models that allow any size
INT8_SIZES = (256, 128)  # int8/uint8 also measured after `dimensions` truncation
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def query_indices(n: int, count: int = QUERIES) -> np.ndarray:
    """`count` texts spread evenly over the `n` (the corpora are shuffled already)."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))


def top_k(scores: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Row i: the k columns with the highest score, column queries[i] (the query) excluded.
    Ties go to the lower index, so the result does not depend on the sort's whims."""
    s = np.array(scores, dtype=np.float64)
    s[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def kept(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth|."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


# Scores: higher = nearer. Integer arithmetic is done in float64, which holds these sums exactly.


def cosine_scores(unit: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return unit[queries].astype(np.float64) @ unit.T.astype(np.float64)


def int8_dot_scores(q: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Raw integer dot product of the int8 codes (no dequantization)."""
    x = q.astype(np.float64)
    return x[queries] @ x.T


def l2_scores(u: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Minus the squared Euclidean distance of the uint8 codes."""
    x = u.astype(np.float64)
    sq = np.sum(x * x, axis=1)
    return -(sq[queries, None] + sq[None, :] - 2.0 * (x[queries] @ x.T))


def hamming_scores(bits: np.ndarray, queries: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Minus the Hamming distance of packed bit vectors (ubinary bytes; binary's int8 bytes
    differ from them by a flipped top bit in every byte, so the distance is the same)."""
    b = bits.view(np.uint8)
    out = np.empty((len(queries), len(b)), dtype=np.float64)
    for i in range(0, len(queries), chunk):
        diff = np.bitwise_xor(b[queries[i : i + chunk], None, :], b[None, :, :])
        out[i : i + chunk] = -POPCOUNT[diff].sum(axis=2, dtype=np.int64)
    return out


def binary_rescored(unit: np.ndarray, bits: np.ndarray, queries: np.ndarray, rescore: int = RESCORE_TOP) -> np.ndarray:
    """Top-k after taking `rescore` candidates by Hamming distance and re-ranking them by the
    float query's dot product with each candidate's ±1 sign vector (unpacked bits)."""
    candidates = top_k(hamming_scores(bits, queries), queries, rescore)
    signs = np.unpackbits(bits.view(np.uint8), axis=1, count=unit.shape[1]).astype(np.float64) * 2 - 1
    rescored = np.einsum("qd,qcd->qc", unit[queries].astype(np.float64), signs[candidates])
    order = np.argsort(-rescored, axis=1, kind="stable")[:, :TOP_K]
    return np.take_along_axis(candidates, order, axis=1)


def dequantization_error(unit: np.ndarray, scale: float) -> dict:
    """|x - q·scale/127| over every component, and the share of components clipped at ±127."""
    q = quantize_int8(unit, scale)
    err = np.abs(dequantize_int8(q, scale) - unit)
    return {
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "half_step": scale / 254,
        "clipped_share": float(np.mean(np.abs(q) == 127)),
    }


def reported_sizes(dim: int, matryoshka_dims: tuple[int, ...] | None) -> list[int]:
    """Truncated sizes to measure: every allowed size below `dim` for a fixed list, otherwise
    MATRYOSHKA_SIZES below `dim` (the full size keeps everything by definition)."""
    sizes = MATRYOSHKA_SIZES if matryoshka_dims is None else matryoshka_dims
    return sorted((d for d in set(sizes) if d < dim), reverse=True)


def measure(
    unit: np.ndarray,
    int8_scales: dict[int, float],
    matryoshka_dims: tuple[int, ...] | None = None,
    queries: int = QUERIES,
) -> dict:
    """The quality table: {option: {"top10_kept": share, ...}} plus an "evaluation" entry that
    says what it was measured on. int8/uint8 at a truncated size are compared with the float
    top-10 at that same size ("truth"), and also with the full-size float top-10."""
    unit = np.asarray(unit, dtype=np.float32)
    n, dim = unit.shape
    qs = query_indices(n, queries)
    full_truth = top_k(cosine_scores(unit, qs), qs)
    table: dict = {}

    sizes = [d for d in (dim, *INT8_SIZES) if d <= dim and d in int8_scales]  # sizes the model serves
    for d in sizes:
        suffix = "" if d == dim else f"_dims_{d}"
        vecs = truncate(unit, d)
        truth = full_truth if d == dim else top_k(cosine_scores(vecs, qs), qs)
        scale = int8_scales[d]
        for name, codes, scores in (
            ("int8_dot", quantize_int8(vecs, scale), int8_dot_scores),
            ("uint8_l2", quantize_uint8(vecs, scale), l2_scores),
        ):
            found = top_k(scores(codes, qs), qs)
            entry = {"top10_kept": kept(found, truth), "scale": scale}
            if d != dim:
                entry |= {"truth": f"float_dims_{d}", "top10_kept_vs_full_float": kept(found, full_truth)}
            table[name + suffix] = entry
        table["int8_dot" + suffix]["dequantization"] = dequantization_error(vecs, scale)

    bits = pack_ubinary(unit)
    table["binary_hamming"] = {"top10_kept": kept(top_k(hamming_scores(bits, qs), qs), full_truth)}
    table[f"binary_rescore_top{RESCORE_TOP}"] = {"top10_kept": kept(binary_rescored(unit, bits, qs), full_truth)}

    for d in reported_sizes(dim, matryoshka_dims):
        table[f"dims_{d}"] = {"top10_kept": kept(top_k(cosine_scores(truncate(unit, d), qs), qs), full_truth)}

    table = {option: _rounded(entry) for option, entry in table.items()}
    # No "top10_kept" here, so readers of the table (gRPC's QualityFigure) skip it.
    table["evaluation"] = {
        "evaluation_texts": int(n),
        "queries": int(len(qs)),
        "neighbours": TOP_K,
        "truth": "float top-10 by cosine among the other evaluation texts",
    }
    return table


def _rounded(entry: dict) -> dict:
    """Shares to 4 decimals, other figures to 6 significant digits (a readable manifest)."""
    out = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            value = _rounded(value)
        elif isinstance(value, float):
            value = round(value, 4) if key.startswith("top10_kept") else float(f"{value:.6g}")
        out[key] = value
    return out
