"""Export a model to ONNX (optimum), build its faster variants, measure them, write a manifest.

Needs the `export` extra (torch, optimum, sentence-transformers); serving does not.
Idempotent: artifacts whose manifest and checksums are intact are reused; a manifest from an
older embedserve (no references, no OpenVINO variants) only gets the measurements it lacks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from models import cpu as cpuinfo
from models import variant_fidelity as fidelity
from models.artifacts import MANIFEST_VERSION, ModelArtifacts, model_dir
from models.backends import available_backends
from models.int8_scale import fit_int8_scales
from models.corpus import calibration_texts, evaluation_texts
from models.errors import EmbedError
from models.head import HEAD_FILE, save_head
from models.model_folder import DECODERS, spec_to_manifest
from models.pooling import l2_normalize
from models.prompts import read_prompts
from models.lossy_cost import measure as measure_quality
from models.rerank_export import check_exact_scores, measure_reranker
from models.specs import ModelSpec
from models.variants import VARIANTS
from models.weights import materialize

# The quality table embeds held-out texts once with the optimized graph (fp32's vectors): all 2,500 for small models
# (MiniLM: ~20-40 s on 2 cores); models wider than SMALL_MODEL_DIM (base size, ~5x the cost per
# text) use the first QUALITY_TEXTS_LARGE (the file is shuffled), and the manifest says so.
SMALL_MODEL_DIM = 384
QUALITY_TEXTS_LARGE = 1000

Say = Callable[[str], None]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "openvino", "optimum", "optimum-onnx", "transformers", "torch", "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def is_complete(root: Path, int8_weights: bool) -> bool:
    """The manifest is current and every file it lists is there with its checksum."""
    path = root / "manifest.json"
    if not path.is_file():
        return False
    m = json.loads(path.read_text())
    if m.get("manifest_version") != MANIFEST_VERSION or (int8_weights and "int8" not in m["variants"]):
        return False
    files = {v["file"]: v["sha256"] for v in m["variants"].values()}
    files["tokenizer.json"] = m["tokenizer_sha256"]
    if "head_sha256" in m:
        files[HEAD_FILE] = m["head_sha256"]
    return all((root / f).is_file() and sha256_file(root / f) == s for f, s in files.items())


def write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(root / "manifest.json")


def export_onnx(source: Path, out_dir: Path, task: str = "feature-extraction") -> Path:
    """optimum -> fp32 ONNX graph of the transformer (pooling stays in numpy); a cross-encoder
    (task text-classification) gives its logits."""
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        main_export(
            str(source),
            output=tmp,
            task=task,
            library_name="transformers",
            local_files_only=True,
            do_validation=False,
        )
        target = out_dir / VARIANTS["fp32"].file
        shutil.move(str(Path(tmp) / "model.onnx"), target)
    return target


def write_tokenizer(source: Path, spec: ModelSpec, out_dir: Path) -> Path:
    """The shipped tokenizer.json with truncation at the model's max_seq_length and no fixed
    padding (the one in all-MiniLM-L6-v2 truncates at 128 and pads to 128)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    if spec.extra.get("lower_case"):  # sentence-transformers' do_lower_case, done by the tokenizer itself
        from tokenizers import normalizers

        tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), *([tok.normalizer] if tok.normalizer else [])])
    tok.no_padding()
    tok.enable_truncation(max_length=spec.max_seq_length)
    target = out_dir / "tokenizer.json"
    tok.save(str(target))
    return target


def optimize_graph(fp32: Path, spec: ModelSpec, out_dir: Path) -> Path:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU) for the CPU."""
    from onnxruntime.transformers.optimizer import optimize_model

    target = out_dir / VARIANTS["optimized"].file
    if spec.architecture in DECODERS:  # BERT's fusions do not fit a decoder: ONNX Runtime's generic graph passes only
        model = optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    else:
        model = optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    model.save_model_to_file(str(target))
    return target


def quantize_weights(fp32: Path, out_dir: Path) -> Path:
    """Dynamic int8 weights (opt-in: it costs accuracy; the manifest records how much)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = out_dir / VARIANTS["int8"].file
    quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True)
    return target


class ExportFailed(EmbedError):
    """The export does not give the model's own vectors (fidelity below the floor at fp32)."""

    code = "export_failed"


# What an exact (fp32) variant must keep of sentence-transformers' vectors, or the export fails.
EXACT_MIN_COS = 0.9999


def check_exact(spec: ModelSpec, manifest: dict) -> None:
    """Every fp32 variant matches sentence-transformers (min cosine >= EXACT_MIN_COS)."""
    for name, v in manifest["variants"].items():
        fid = v.get("fidelity") or {}
        if v["precision"] == "fp32" and fid.get("precision", "fp32") == "fp32" and fid.get("min_cos", 0.0) < EXACT_MIN_COS:
            raise ExportFailed(
                f"{spec.id}: the exported {name} graph gives vectors with min cosine {fid.get('min_cos', 0.0):.6f} to "
                f"sentence-transformers, under the floor of {EXACT_MIN_COS} at fp32: the export failed."
            )


def export_head(source: Path, spec: ModelSpec, out_dir: Path) -> Path:
    """The Dense layers' weights, read from their module folders (modules.json order)."""
    import torch
    from safetensors.numpy import load_file

    modules = json.loads((source / "modules.json").read_text())
    weights = []
    for m in modules:
        if m["type"].rsplit(".", 1)[-1] != "Dense":
            continue
        folder = source / m["path"]
        if (folder / "model.safetensors").is_file():
            state = load_file(str(folder / "model.safetensors"))
        else:
            state = {k: v.numpy() for k, v in torch.load(folder / "pytorch_model.bin", map_location="cpu").items()}
        weights.append((state["linear.weight"], state.get("linear.bias")))
    return save_head(weights, out_dir)


def reference_vectors(source: Path, spec: ModelSpec, texts: list[str]) -> np.ndarray:
    """sentence-transformers' own vectors: the reference every variant is measured against."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    model.max_seq_length = spec.max_seq_length
    # prompt="": the plain text, as the engine embeds it without input_type, even where the model
    # declares a default_prompt_name.
    return model.encode(texts, prompt="", batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def variant_entries(root: Path, built: set[str]) -> dict[str, dict]:
    """A manifest entry for every variant whose graph is here and whose runtime is installed
    (OpenVINO's variants read model.onnx, so they cost no file of their own)."""
    backends = available_backends()
    sums: dict[str, str] = {}
    out = {}
    for name, v in VARIANTS.items():
        path = root / v.file
        if v.backend not in backends or not path.is_file() or (v.optional and name not in built):
            continue
        if v.file not in sums:
            sums[v.file] = sha256_file(path)
        out[name] = {"file": v.file, "sha256": sums[v.file], "bytes": path.stat().st_size,
                     "backend": v.backend, "precision": v.precision}
    return out


def missing_measurements(root: Path, manifest: dict) -> list[str]:
    """What an otherwise complete export still lacks (artifacts from an older embedserve)."""
    if manifest.get("task") == "sparse":  # measured at export against SparseEncoder (models.sparse_export)
        return []
    missing = []
    if manifest.get("task") == "rerank":  # a cross-encoder: scores, measured per variant (models.rerank_export)
        known = variant_entries(root, set(manifest["variants"]))
        return ["variants"] if set(known) - set(manifest["variants"]) or any(
            "max_abs_diff" not in (v.get("fidelity") or {}) for v in manifest["variants"].values()) else []
    if not fidelity.has_references(root):
        missing.append("references")
    if "quality" not in manifest:
        missing.append("quality")
    known = variant_entries(root, set(manifest["variants"]))
    if set(known) - set(manifest["variants"]) or any(
        "top10_kept" not in (v.get("fidelity") or {}) for v in manifest["variants"].values()
    ):
        missing.append("variants")
    return missing


class Steps:
    """Numbered progress lines: [i/n] what is being done."""

    def __init__(self, total: int, say: Say):
        self.total, self.done, self.say = total, 0, say

    def __call__(self, what: str) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {what}")


def needs_references(root: Path, manifest: dict) -> bool:
    return not (root / fidelity.FIDELITY_FILE).is_file() or "quality" not in manifest


MEASURE_STEPS = 1  # every variant against the references
REFERENCE_STEPS = 3  # sentence-transformers' vectors, int8 scales, quality table


def measure_artifacts(spec: ModelSpec, artifact_dir: Path, manifest: dict, source: Path, say: Say, step: Steps) -> dict:
    """The measured part of the manifest: references, int8 output scales, the quality table of
    the lossy outputs and every variant's fidelity. Does only what `manifest` lacks."""
    from models.encoder import Encoder  # noqa: PLC0415 (keeps `models.export` importable alone)

    root = model_dir(artifact_dir, spec)
    # Every variant this export can run, each measured afresh below.
    manifest["variants"] = variant_entries(root, set(manifest["variants"]))
    write_manifest(root, manifest)

    # The optimized graph gives the fp32 vectors (cosine 1.0 to sentence-transformers, measured
    # below) in less time: it computes the references, the scales and the quality table.
    exact = Encoder(spec, ModelArtifacts(spec, root, manifest), variant="optimized", providers="cpu", calibrate=False)
    if needs_references(root, manifest):
        texts = fidelity.fidelity_texts()
        step(f"sentence-transformers' vectors of {len(texts)} fidelity texts (the reference)")
        fid_ref = reference_vectors(source, spec, texts)
        texts = calibration_texts()
        step(f"calibrating the int8 output scale on {len(texts)} texts")
        unit = l2_normalize(exact.encode_ids(exact.tokenize(texts)))
        scales = fit_int8_scales(unit, spec.matryoshka_dims)  # a fixed Matryoshka list: only its sizes
        manifest["int8_scales"] = {str(d): round(s, 6) for d, s in scales.items()}
        manifest["calibration_texts"] = len(texts)
        step("measuring what each lossy output keeps of the float top-10 neighbours")
        manifest["quality"], unit = quality_table(spec, ModelArtifacts(spec, root, manifest), say, exact)
        fidelity.save_references(root, fid_ref, unit[: fidelity.NEIGHBOUR_TEXTS])
        write_manifest(root, manifest)

    step(f"measuring every variant against the references on this CPU "
         f"({', '.join(cpuinfo.detect().features) or 'no reported features'})")
    artifacts = ModelArtifacts(spec, root, manifest)
    for name in manifest["variants"]:
        enc = Encoder(spec, artifacts, variant=name, providers="cpu", calibrate=False)
        fid = fidelity.measure(enc, root, "export")
        manifest["variants"][name]["fidelity"] = fid
        say(f"    {name:14s} {fid['precision']:5s} min cosine {fid['min_cos']:.6f}  mean {fid['mean_cos']:.6f}  "
            f"top-10 kept {fid['top10_kept']:.4f}  {fid['texts_per_s']:.0f} texts/s")
    manifest["export_cpu"] = cpuinfo.detect().describe()
    manifest["versions"] = _versions()
    return manifest


def quality_table(spec: ModelSpec, artifacts: ModelArtifacts, say: Say, enc) -> tuple[dict, np.ndarray]:
    """Embeds the evaluation corpus with the fp32 graph and measures every lossy option
    against its float top-10 neighbours (models.lossy_cost), with the manifest's int8 scales.
    Also returns the unit vectors (the first of them are the neighbour reference)."""
    started = time.perf_counter()
    texts = corpus = evaluation_texts()
    note = "models/data/evaluation.jsonl"
    if spec.dimension > SMALL_MODEL_DIM:
        texts = corpus[:QUALITY_TEXTS_LARGE]
        note += f" (first {len(texts)} of {len(corpus)} texts, to bound export time)"
    unit = l2_normalize(enc.encode_ids(enc.tokenize(texts)))
    table = measure_quality(unit, artifacts.int8_scales, spec.matryoshka_dims)
    table["evaluation"]["corpus"] = note
    table["evaluation"]["seconds"] = round(time.perf_counter() - started, 1)
    for option, entry in table.items():
        if "top10_kept" in entry:
            say(f"    {option:26s} top-10 kept {entry['top10_kept']:.4f}")
    return table, unit


def export_model(
    spec: ModelSpec,
    artifact_dir: Path,
    *,
    int8_weights: bool = False,
    force: bool = False,
    say: Say = print,
) -> ModelArtifacts:
    if spec.task == "sparse":  # its own graph and measurements; `embedserve export` picks it by the task
        raise ExportFailed(f"{spec.id} is a sparse (SPLADE) model: export it with models.sparse_export.export_sparse.")
    root = model_dir(artifact_dir, spec)
    if not force and is_complete(root, int8_weights):
        artifacts = ModelArtifacts.load(artifact_dir, spec)
        missing = missing_measurements(root, artifacts.manifest)
        if not missing:
            say(f"{spec.id}: artifacts in {root} are complete; reusing them.")
            return artifacts
        say(f"{spec.id}: artifacts in {root} are complete but lack {', '.join(missing)}; measuring them")
        manifest = dict(artifacts.manifest)
        if spec.task == "rerank":
            manifest = measure_reranker(spec, artifact_dir, manifest, materialize(spec, root), say, Steps(2, say))
        else:
            step = Steps(MEASURE_STEPS + REFERENCE_STEPS * needs_references(root, manifest), say)
            manifest = measure_artifacts(spec, artifact_dir, manifest, materialize(spec, root), say, step)
        write_manifest(root, manifest)
        return ModelArtifacts.load(artifact_dir, spec)

    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    started = time.perf_counter()
    rerank = spec.task == "rerank"  # a cross-encoder: logits, measured as scores (models.rerank_export)
    step = Steps(3 + int8_weights + (2 if rerank else REFERENCE_STEPS + MEASURE_STEPS), say)
    step(f"{spec.id}: " + ("reading the model folder" if spec.user else "locating the packaged weights"))
    source = materialize(spec, root)
    step("exporting fp32 ONNX with optimum (a minute or two)")
    try:
        fp32 = export_onnx(source, root, "text-classification" if rerank else "feature-extraction")
    except Exception as exc:  # noqa: BLE001 (optimum and torch raise whatever they raise)
        arch = spec.architecture or "this"
        raise ExportFailed(f"{spec.id}: optimum cannot export the '{arch}' architecture to ONNX: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    tokenizer = write_tokenizer(source, spec, root)
    head = export_head(source, spec, root) if spec.dense else None
    step("building the graph-optimized variant")
    built = {"fp32": fp32, "optimized": optimize_graph(fp32, spec, root)}
    if int8_weights:
        step("quantizing weights to int8 (opt-in)")
        built["int8"] = quantize_weights(fp32, root)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model_id": spec.id,
        "revision": spec.revision,
        "max_seq_length": spec.max_seq_length,
        "dimension": spec.dimension,
        "pooling": spec.pooling,
        "prompts": read_prompts(source),
        "tokenizer_sha256": sha256_file(tokenizer),
        "opset": _opset(fp32),
        "variants": variant_entries(root, set(built)),
    }
    if head is not None:
        manifest["head_sha256"] = sha256_file(head)
    if spec.user:  # a user's model: its spec, read from its folder, is served from here
        manifest["model_spec"] = spec_to_manifest(spec)
    measure = measure_reranker if rerank else measure_artifacts
    manifest = measure(spec, artifact_dir, manifest, source, say, step)
    try:
        (check_exact_scores if rerank else check_exact)(spec, manifest)
    except ExportFailed:
        (root / "manifest.json").unlink(missing_ok=True)  # never taken for a complete export
        raise
    manifest["export_seconds"] = round(time.perf_counter() - started, 1)
    write_manifest(root, manifest)
    say(f"{spec.id}: exported to {root} in {manifest['export_seconds']} s")
    return ModelArtifacts.load(artifact_dir, spec)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
