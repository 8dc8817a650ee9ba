"""Export a sparse (SPLADE) model: optimum's masked-LM graph (task fill-mask: the logits over the
vocabulary), the fused ONNX Runtime graph, the tokenizer, and a manifest whose fidelity is measured
against sentence-transformers' `SparseEncoder` (same non-zero entries, relative error of the values).

Needs the `export` extra (torch, optimum, sentence-transformers), like models.export, whose file
helpers it uses (one direction: models.export knows nothing of sparse models but that their
manifest lacks nothing).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from models.artifacts import MANIFEST_VERSION, ModelArtifacts, model_dir
from models.export import (ExportFailed, Say, is_complete, optimize_graph, sha256_file, variant_entries, write_manifest,
                           write_tokenizer)
from models.variant_fidelity import fidelity_texts
from models.model_folder import spec_to_manifest
from models.prompts import read_prompts
from models.sparse import SparseModel, SpladeConfig
from models.specs import ModelSpec
from models.variants import VARIANTS
from models.weights import materialize

FIDELITY_TEXTS = 64  # the first of models.variant_fidelity's texts, long ones among them
# An fp32 graph must give SparseEncoder's weights w within |got - w| <= RTOL * w + ATOL. The absolute
# floor is fp32 round-off of the logits (SPLADE-tiny: 5e-6 at most on weights up to ~3): a weight of
# 1e-4 is log1p of a logit of 1e-4, whose last bits differ with the order of the sums.
RTOL, ATOL = 1e-4, 1e-5


def export_mlm(source: Path, out_dir: Path) -> Path:
    """optimum -> fp32 ONNX graph of the masked-LM model: logits [batch, tokens, vocab]."""
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        main_export(str(source), output=tmp, task="fill-mask", library_name="transformers",
                    local_files_only=True, do_validation=False)
        target = out_dir / VARIANTS["fp32"].file
        shutil.move(str(Path(tmp) / "model.onnx"), target)
    return target


def reference_encoder(source: Path, spec: ModelSpec):
    """sentence-transformers' SparseEncoder of the folder: as saved, or MLMTransformer +
    SpladePooling around a plain masked-LM folder."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    cfg = SpladeConfig.of(spec)
    if (Path(source) / "modules.json").is_file():
        model = SparseEncoder(str(source), device="cpu", local_files_only=True)
    else:
        model = SparseEncoder(modules=[MLMTransformer(str(source)), SpladePooling(cfg.strategy, cfg.activation)],
                              device="cpu")
    model.max_seq_length = spec.max_seq_length
    return model


def reference_weights(source: Path, spec: ModelSpec, texts: list[str], max_active_dims: int | None = None) -> np.ndarray:
    """SparseEncoder's weights, dense (n, vocab) float32."""
    model = reference_encoder(source, spec)
    out = model.encode(texts, prompt="", batch_size=16, convert_to_sparse_tensor=True, max_active_dims=max_active_dims)
    return out.to_dense().numpy().astype(np.float32)


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    """Same non-zero entries; the largest absolute error, and the largest relative error of the
    weights above 0.01; whether every weight is within RTOL * w + ATOL."""
    same = bool(((got > 0) == (want > 0)).all())
    diff = np.abs(got - want)
    big = want > 0.01
    return {"same_indices": same, "max_abs_error": float(diff.max()),
            "max_rel_error": float((diff[big] / want[big]).max()) if big.any() else 0.0,
            "within_tolerance": bool((diff <= RTOL * want + ATOL).all()), "texts": int(got.shape[0])}


def export_sparse(spec: ModelSpec, artifact_dir: Path, *, int8_weights: bool = False, force: bool = False,
                  say: Say = print) -> ModelArtifacts:
    """models.export.export_model for a sparse model (serving.cli picks it by the spec's task). No int8
    variant: `int8_weights` is accepted and ignored."""
    root = model_dir(artifact_dir, spec)
    path = root / "manifest.json"
    if not force and path.is_file():
        if is_complete(root, False):
            say(f"{spec.id}: artifacts in {root} are complete; reusing them.")
            return ModelArtifacts.load(artifact_dir, spec)
    root.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    say(f"[1/4] {spec.id}: reading the sparse model folder")
    source = materialize(spec, root)
    say("[2/4] exporting the fp32 masked-LM ONNX graph with optimum (a minute or two)")
    try:
        fp32 = export_mlm(source, root)
    except Exception as exc:  # noqa: BLE001 (optimum and torch raise whatever they raise)
        raise ExportFailed(f"{spec.id}: optimum cannot export the '{spec.architecture}' masked-LM model to ONNX: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    tokenizer = write_tokenizer(source, spec, root)
    say("[3/4] building the graph-optimized variant")
    built = {"fp32": fp32, "optimized": optimize_graph(fp32, spec, root)}
    variants = {k: v for k, v in variant_entries(root, set(built)).items() if k in built}
    manifest = {
        "manifest_version": MANIFEST_VERSION, "task": "sparse", "model_id": spec.id, "revision": spec.revision,
        "max_seq_length": spec.max_seq_length, "dimension": spec.dimension, "pooling": "splade",
        "splade": dict(spec.extra.get("splade") or {}), "prompts": read_prompts(source),
        "tokenizer_sha256": sha256_file(tokenizer), "variants": variants, "model_spec": spec_to_manifest(spec),
    }
    write_manifest(root, manifest)
    texts = fidelity_texts()[:FIDELITY_TEXTS]
    say(f"[4/4] measuring every variant against sentence-transformers' SparseEncoder on {len(texts)} texts")
    want = reference_weights(source, spec, texts)
    artifacts = ModelArtifacts(spec, root, manifest)
    for name in variants:
        model = SparseModel(spec, artifacts, variant=name, providers="cpu")
        got = np.stack(model.weights_ids(model.tokenize(texts)))
        fid = compare(got, want)
        manifest["variants"][name]["fidelity"] = fid
        say(f"    {name:10s} same non-zero entries: {fid['same_indices']}  max error {fid['max_abs_error']:.1e} "
            f"(relative {fid['max_rel_error']:.1e} on weights > 0.01)")
    bad = [n for n, v in manifest["variants"].items()
           if not (v["fidelity"]["same_indices"] and v["fidelity"]["within_tolerance"])]
    if "fp32" in bad:
        path.unlink(missing_ok=True)
        raise ExportFailed(f"{spec.id}: the exported graph does not give SparseEncoder's weights "
                           f"({manifest['variants']['fp32']['fidelity']}): the export failed.")
    for name in bad:  # a fused graph that drifts is not served
        (root / manifest["variants"].pop(name)["file"]).unlink(missing_ok=True)
    manifest["export_seconds"] = round(time.perf_counter() - started, 1)
    write_manifest(root, manifest)
    say(f"{spec.id}: exported to {root} in {manifest['export_seconds']} s")
    return ModelArtifacts.load(artifact_dir, spec)
