"""Exact search of every output option, the way a vector database searches what it stores.

Vectors are encoded by models.postprocess exactly as the service returns them (Matryoshka
truncation, renormalization, int8 / uint8 with the model's calibrated scale, packed bits), and
searched on the codes, in chunks of documents so a large corpus is held as int8 or bits:

    float           dot product of unit vectors (= cosine)
    int8            integer dot product of the int8 codes (no dequantization)
    uint8           Euclidean (L2) distance of the uint8 codes
    binary          Hamming distance of the packed bits
    binary-rescore  the top RESCORE_FACTOR*k by Hamming, rescored by the float query's dot
                    product with each candidate's ±1 sign vector (what the DB holds: the bits)

Integer scores are computed in float64, which holds them exactly. Ties are broken as trec_eval
breaks them (the larger document id first), so a run file gives the same figures to
`pytrec_eval` / `ranx` as to serving.eval.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.postprocess import pack_ubinary, quantize_int8, quantize_uint8, truncate
from models.lossy_cost import RESCORE_TOP, TOP_K

ENCODINGS = ("float", "int8", "uint8", "binary", "binary-rescore")
RESCORE_FACTOR = RESCORE_TOP // TOP_K  # 4: candidates per result kept for rescoring, as /v1/models measures
CHUNK_CELLS = 1 << 23  # query x document scores held at once (64 MiB of float64)


@dataclass
class Encoded:
    """One option's corpus as the database stores it, and its queries as they are sent."""

    encoding: str
    dims: int
    docs: np.ndarray  # float32, int8, uint8 or packed bits
    queries: np.ndarray  # float32 for float and binary-rescore, else the same codes as docs
    bytes_per_vector: int


def encode(docs: np.ndarray, queries: np.ndarray, encoding: str, dims: int, scale: float | None) -> Encoded:
    """Full-dimension unit vectors -> the option's codes (truncated to `dims` and renormalized)."""
    d, q = truncate(docs, dims), truncate(queries, dims)
    if encoding == "float":
        return Encoded(encoding, dims, d, q, 4 * dims)
    if encoding == "int8":
        return Encoded(encoding, dims, quantize_int8(d, scale), quantize_int8(q, scale), dims)
    if encoding == "uint8":
        return Encoded(encoding, dims, quantize_uint8(d, scale), quantize_uint8(q, scale), dims)
    if encoding == "binary":
        return Encoded(encoding, dims, pack_ubinary(d), pack_ubinary(q), dims // 8)
    if encoding == "binary-rescore":
        return Encoded(encoding, dims, pack_ubinary(d), q, dims // 8)
    raise ValueError(f"unknown encoding {encoding!r}")


def signs(bits: np.ndarray, dims: int) -> np.ndarray:
    """Packed bits -> ±1 float64 rows (1 where the float was > 0)."""
    return np.unpackbits(bits, axis=1, count=dims).astype(np.float64) * 2 - 1


def scores(enc: Encoded, lo: int, hi: int) -> np.ndarray:
    """Higher = nearer, for every query against documents lo..hi."""
    docs = enc.docs[lo:hi]
    if enc.encoding == "float":
        return (enc.queries @ docs.T).astype(np.float64)
    if enc.encoding == "int8":
        return enc.queries.astype(np.float64) @ docs.astype(np.float64).T
    if enc.encoding == "uint8":
        x, y = enc.queries.astype(np.float64), docs.astype(np.float64)
        return -((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T))
    # Hamming distance = (dims - <s_q, s_d>) / 2 on ±1 sign vectors: exact, and a BLAS product.
    dot = signs(enc.queries, enc.dims) @ signs(docs, enc.dims).T
    return -(enc.dims - dot) / 2


def search(enc: Encoded, k: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of each query's top k documents, best first. `order` is the tie-break
    rank of each document (lower first; see tie_order)."""
    if enc.encoding == "binary-rescore":
        return rescore(enc, k, order)
    n, nq = len(enc.docs), len(enc.queries)
    chunk = max(1024, CHUNK_CELLS // max(nq, 1))
    best_i = np.empty((nq, 0), dtype=np.int64)
    best_s = np.empty((nq, 0), dtype=np.float64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        s = scores(enc, lo, hi)
        idx = candidates(s, k) if hi - lo > k else np.broadcast_to(np.arange(hi - lo), s.shape)
        best_i = np.concatenate([best_i, idx + lo], axis=1)
        best_s = np.concatenate([best_s, np.take_along_axis(s, idx, axis=1)], axis=1)
        best_i, best_s = keep_best(best_i, best_s, k, order)
    return best_i, best_s


def candidates(s: np.ndarray, k: int) -> np.ndarray:
    """Per row, every column whose score reaches the row's k-th best (ties at the cut included),
    padded with lower-scored columns to one width."""
    kth = np.partition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k][:, None]
    mask = s >= kth
    width = int(mask.sum(axis=1).max())
    return np.argsort(~mask, axis=1, kind="stable")[:, :width]  # booleans: a radix sort


def keep_best(idx: np.ndarray, sc: np.ndarray, k: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranked = np.lexsort((order[idx], -sc), axis=1)[:, :k]
    return np.take_along_axis(idx, ranked, axis=1), np.take_along_axis(sc, ranked, axis=1)


def rescore(enc: Encoded, k: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bits = Encoded("binary", enc.dims, enc.docs, pack_ubinary(enc.queries), enc.bytes_per_vector)
    cand, _ = search(bits, RESCORE_FACTOR * k, order)
    rescored = np.empty(cand.shape, dtype=np.float64)
    for lo in range(0, len(cand), 64):  # 64 queries' candidates unpacked at a time
        c = cand[lo:lo + 64]
        unpacked = signs(enc.docs[c.reshape(-1)], enc.dims).reshape(*c.shape, enc.dims)
        rescored[lo:lo + 64] = np.einsum("qd,qcd->qc", enc.queries[lo:lo + 64].astype(np.float64), unpacked)
    return keep_best(cand, rescored, k, order)


def tie_order(doc_ids: list[str]) -> np.ndarray:
    """Each document's tie-break rank: trec_eval ranks equal scores by document id, descending."""
    rank = np.empty(len(doc_ids), dtype=np.int64)
    rank[sorted(range(len(doc_ids)), key=doc_ids.__getitem__, reverse=True)] = np.arange(len(doc_ids))
    return rank
