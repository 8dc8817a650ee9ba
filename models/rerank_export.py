"""Export-time measurement of a cross-encoder (task "rerank"): every variant's scores against
sentence-transformers' `CrossEncoder.predict` on the same pairs, short and over-long ones.

Needs the `export` extra (torch, sentence-transformers), like models.export.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from models.artifacts import ModelArtifacts, model_dir
from models.corpus import calibration_texts
from models.specs import ModelSpec

# What an exact (fp32) variant may differ from CrossEncoder.predict, or the export fails.
EXACT_MAX_ABS = 1e-4
QUERIES = 8
DOCUMENTS = 16  # a query; every fourth one longer than the model's maximum


def measurement_pairs(spec: ModelSpec) -> list[tuple[str, str]]:
    texts = calibration_texts()
    queries, docs = texts[:QUERIES], texts[QUERIES : QUERIES + DOCUMENTS]
    long_doc = " ".join(texts[QUERIES + DOCUMENTS : QUERIES + DOCUMENTS + 4 * max(1, spec.max_seq_length // 16)])
    docs = [long_doc if i % 4 == 3 else d for i, d in enumerate(docs)]
    return [(q, d) for q in queries for d in docs]


def reference_scores(source: Path, spec: ModelSpec, pairs: list[tuple[str, str]]) -> np.ndarray:
    """sentence-transformers' own scores: the reference every variant is measured against."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(source), device="cpu", local_files_only=True, max_length=spec.max_seq_length)
    return np.asarray(model.predict(pairs, batch_size=16, show_progress_bar=False), dtype=np.float32)


def measure_variant(encoder, pairs: list[tuple[str, str]], ref: np.ndarray) -> dict:
    from models.rerank import Reranker, rank

    started = time.perf_counter()
    got = Reranker(encoder).predict(pairs)
    seconds = time.perf_counter() - started
    diff = np.abs(got.reshape(ref.shape) - ref)
    per_query = len(pairs) // QUERIES
    same_rank = all(rank(got[i : i + per_query]) == rank(ref[i : i + per_query])
                    for i in range(0, len(pairs), per_query))
    return {"precision": encoder.session.precision, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "ranking_equal": bool(same_rank), "pairs": len(pairs),
            "measured_at": "export", "texts_per_s": round(len(pairs) / max(seconds, 1e-9), 1)}


def measure_reranker(spec: ModelSpec, artifact_dir: Path, manifest: dict, source: Path,
                     say: Callable[[str], None], step: Callable[[str], None]) -> dict:
    """Every variant's scores against CrossEncoder.predict, in the manifest."""
    from models.encoder import Encoder  # noqa: PLC0415 (keeps this module importable alone)
    from models.export import variant_entries, write_manifest

    root = model_dir(artifact_dir, spec)
    manifest["task"] = "rerank"
    manifest["variants"] = variant_entries(root, set(manifest["variants"]))
    write_manifest(root, manifest)
    pairs = measurement_pairs(spec)
    step(f"CrossEncoder.predict on {len(pairs)} query-document pairs (the reference)")
    ref = reference_scores(source, spec, pairs)
    step("measuring every variant's scores against the reference")
    artifacts = ModelArtifacts(spec, root, manifest)
    for name in manifest["variants"]:
        enc = Encoder(spec, artifacts, variant=name, providers="cpu", calibrate=False)
        fid = measure_variant(enc, pairs, ref)
        manifest["variants"][name]["fidelity"] = fid
        say(f"    {name:14s} {fid['precision']:5s} max |score diff| {fid['max_abs_diff']:.2e}  "
            f"ranking equal {fid['ranking_equal']}  {fid['texts_per_s']:.0f} pairs/s")
    return manifest


def check_exact_scores(spec: ModelSpec, manifest: dict) -> None:
    from models.export import ExportFailed

    for name, v in manifest["variants"].items():
        fid = v.get("fidelity") or {}
        if v["precision"] == "fp32" and fid.get("precision", "fp32") == "fp32" and fid.get("max_abs_diff", 1.0) > EXACT_MAX_ABS:
            raise ExportFailed(
                f"{spec.id}: the exported {name} graph gives scores up to {fid.get('max_abs_diff', 1.0):.2e} from "
                f"CrossEncoder.predict, over {EXACT_MAX_ABS} at fp32: the export failed."
            )
