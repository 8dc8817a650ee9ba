"""How close a variant's vectors are to the reference: min / mean cosine against
sentence-transformers fp32 on the fidelity texts (long ones included), and the share of the fp32
top-10 neighbours it keeps on held-out texts.

The references are computed once at export and kept beside the graphs, so a variant can be
measured again on the machine that runs it (a bf16 figure taken where the CPU had no bf16 units
measured fp32).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from models.corpus import calibration_texts, evaluation_texts
from models.pooling import l2_normalize
from models.lossy_cost import cosine_scores, kept, query_indices, top_k

FIDELITY_TEXTS = 300  # of which the longest third exercise truncation (89 fill a 256-token window, 36 a 384)
NEIGHBOUR_TEXTS = 1000  # held-out texts for the top-10 neighbours a variant keeps
FIDELITY_FILE = "fidelity_reference.npy"  # sentence-transformers fp32, unit vectors
NEIGHBOUR_FILE = "neighbour_reference.npy"  # fp32 ONNX (= sentence-transformers), unit vectors


def fidelity_sample(texts: list[str], n: int = FIDELITY_TEXTS) -> list[str]:
    """The longest third (to exercise truncation) plus an even spread of the rest."""
    by_len = sorted(texts, key=len)
    longest = by_len[-(n // 3):]
    rest = by_len[: -(n // 3)]
    step = max(1, len(rest) // (n - len(longest)))
    return longest + rest[::step][: n - len(longest)]


def fidelity_texts() -> list[str]:
    return fidelity_sample(calibration_texts())


def neighbour_texts() -> list[str]:
    return evaluation_texts()[:NEIGHBOUR_TEXTS]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def top10_kept(unit: np.ndarray, reference: np.ndarray) -> float:
    """Share of each query's fp32 top-10 neighbours that `unit` finds (the same queries as the
    quality table: an even spread of the texts)."""
    queries = query_indices(len(reference))
    truth = top_k(cosine_scores(reference, queries), queries)
    return kept(top_k(cosine_scores(unit, queries), queries), truth)


def save_references(root: Path, fidelity_ref: np.ndarray, neighbour_ref: np.ndarray) -> None:
    np.save(root / FIDELITY_FILE, l2_normalize(fidelity_ref).astype(np.float32))
    np.save(root / NEIGHBOUR_FILE, l2_normalize(neighbour_ref).astype(np.float32))


def has_references(root: Path) -> bool:
    return (root / FIDELITY_FILE).is_file() and (root / NEIGHBOUR_FILE).is_file()


def measure(encoder, root: Path, where: str) -> dict:
    """`encoder`'s fidelity against the references in `root` (see the module doc), with the
    precision that ran, the CPU it ran on, and its speed on the held-out texts."""
    fid_ref = np.load(root / FIDELITY_FILE)
    nb_ref = np.load(root / NEIGHBOUR_FILE)
    fid_texts = fidelity_texts()[: len(fid_ref)]
    nb_texts = neighbour_texts()[: len(nb_ref)]
    fid_seqs = encoder.tokenize(fid_texts)
    cos = cosines(encoder.encode_ids(fid_seqs), fid_ref)
    nb_seqs = encoder.tokenize(nb_texts)
    started = time.perf_counter()
    nb = l2_normalize(encoder.encode_ids(nb_seqs))
    seconds = time.perf_counter() - started
    limit = encoder.spec.max_seq_length
    return {
        "texts": len(fid_texts),
        "long_texts": sum(len(s) >= limit for s in fid_seqs),  # texts that fill the window (cut there)
        "min_cos": round(float(cos.min()), 6),
        "mean_cos": round(float(cos.mean()), 6),
        "top10_kept": round(top10_kept(nb, nb_ref), 4),
        "neighbour_texts": len(nb_texts),
        "precision": encoder.session.precision,
        "measured_at": where,
        "cpu": encoder.cpu.describe(),
        "texts_per_s": round(len(nb_texts) / seconds, 1),
    }
