"""Export a model to ONNX (optimum), build its faster variants, measure them, write a manifest.

Needs the `export` extra (torch, optimum, sentence-transformers); serving does not.
Idempotent: artifacts whose manifest and checksums are intact are reused; a manifest from
before the quality table only gets the table added.
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

from models.artifacts import MANIFEST_VERSION, VARIANT_FILES, ModelArtifacts, model_dir
from models.calibration import fit_int8_scales
from models.corpus import calibration_texts, evaluation_texts
from models.pooling import l2_normalize
from models.prompts import read_prompts
from models.quality import measure as measure_quality
from models.specs import ModelSpec
from models.weights import materialize

FIDELITY_TEXTS = 64  # a quick check at export; tests/test_fidelity.py does the thorough one
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
    for pkg in ("onnxruntime", "optimum", "optimum-onnx", "transformers", "torch", "sentence-transformers"):
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
    return all((root / f).is_file() and sha256_file(root / f) == s for f, s in files.items())


def quality_table(spec: ModelSpec, artifacts: ModelArtifacts, say: Say = print, enc=None) -> dict:
    """Embeds the evaluation corpus with the fp32 graph and measures every lossy option
    against its float top-10 neighbours (models.quality), with the manifest's int8 scales."""
    from models.encoder import Encoder  # noqa: PLC0415

    started = time.perf_counter()
    texts = corpus = evaluation_texts()
    note = "models/data/evaluation.jsonl"
    if spec.dimension > SMALL_MODEL_DIM:
        texts = corpus[:QUALITY_TEXTS_LARGE]
        note += f" (first {len(texts)} of {len(corpus)} texts, to bound export time)"
    enc = enc or Encoder(spec, artifacts, variant="optimized", providers="cpu")
    unit = l2_normalize(enc.encode_ids(enc.tokenize(texts)))
    table = measure_quality(unit, artifacts.int8_scales, spec.matryoshka_dims)
    table["evaluation"]["corpus"] = note
    table["evaluation"]["seconds"] = round(time.perf_counter() - started, 1)
    for option, entry in table.items():
        if "top10_kept" in entry:
            say(f"    {option:26s} top-10 kept {entry['top10_kept']:.4f}")
    return table


def write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(root / "manifest.json")


def export_onnx(source: Path, out_dir: Path) -> Path:
    """optimum -> fp32 ONNX graph of the transformer (pooling stays in numpy)."""
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        main_export(
            str(source),
            output=tmp,
            task="feature-extraction",
            library_name="transformers",
            local_files_only=True,
            do_validation=False,
        )
        target = out_dir / VARIANT_FILES["fp32"]
        shutil.move(str(Path(tmp) / "model.onnx"), target)
    return target


def write_tokenizer(source: Path, spec: ModelSpec, out_dir: Path) -> Path:
    """The shipped tokenizer.json with truncation at the model's max_seq_length and no fixed
    padding (the one in all-MiniLM-L6-v2 truncates at 128 and pads to 128)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=spec.max_seq_length)
    target = out_dir / "tokenizer.json"
    tok.save(str(target))
    return target


def optimize_graph(fp32: Path, spec: ModelSpec, out_dir: Path) -> Path:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU) for the CPU."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    target = out_dir / VARIANT_FILES["optimized"]
    model.save_model_to_file(str(target))
    return target


def quantize_weights(fp32: Path, out_dir: Path) -> Path:
    """Dynamic int8 weights (opt-in: it costs accuracy; the manifest records how much)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = out_dir / VARIANT_FILES["int8"]
    quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True)
    return target


def reference_vectors(source: Path, spec: ModelSpec, texts: list[str]) -> np.ndarray:
    """sentence-transformers' own vectors: the reference every variant is measured against."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    model.max_seq_length = spec.max_seq_length
    return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def fidelity_sample(texts: list[str], n: int = FIDELITY_TEXTS) -> list[str]:
    """The longest quarter (to exercise truncation) plus an even spread of the rest."""
    by_len = sorted(texts, key=len)
    longest = by_len[-(n // 4):]
    rest = by_len[: -(n // 4)]
    step = max(1, len(rest) // (n - len(longest)))
    return longest + rest[::step][: n - len(longest)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def export_model(
    spec: ModelSpec,
    artifact_dir: Path,
    *,
    int8_weights: bool = False,
    force: bool = False,
    say: Say = print,
) -> ModelArtifacts:
    from models.encoder import Encoder  # noqa: PLC0415 (keeps `models.export` importable alone)

    root = model_dir(artifact_dir, spec)
    if not force and is_complete(root, int8_weights):
        artifacts = ModelArtifacts.load(artifact_dir, spec)
        if "quality" in artifacts.manifest:
            say(f"{spec.id}: artifacts in {root} are complete; reusing them.")
            return artifacts
        say(f"[1/1] {spec.id}: artifacts in {root} are complete but have no quality table; measuring it")
        write_manifest(root, {**artifacts.manifest, "quality": quality_table(spec, artifacts, say)})
        return ModelArtifacts.load(artifact_dir, spec)
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    started = time.perf_counter()
    steps = 7 + int8_weights
    step = iter(range(1, steps + 1))

    say(f"[{next(step)}/{steps}] {spec.id}: locating the packaged weights")
    source = materialize(spec, root)
    say(f"[{next(step)}/{steps}] exporting fp32 ONNX with optimum (a minute or two)")
    fp32 = export_onnx(source, root)
    tokenizer = write_tokenizer(source, spec, root)
    say(f"[{next(step)}/{steps}] building the graph-optimized variant")
    files = {"fp32": fp32, "optimized": optimize_graph(fp32, spec, root)}
    if int8_weights:
        say(f"[{next(step)}/{steps}] quantizing weights to int8 (opt-in)")
        files["int8"] = quantize_weights(fp32, root)
    variants = {
        name: {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        for name, path in files.items()
    }
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
        "versions": _versions(),
        "variants": variants,
    }
    # Written now so the encoder can load the variants; completed below.
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    artifacts = ModelArtifacts.load(artifact_dir, spec)

    say(f"[{next(step)}/{steps}] measuring each variant against sentence-transformers")
    texts = calibration_texts()
    sample = fidelity_sample(texts)
    reference = reference_vectors(source, spec, sample)
    for name in variants:
        enc = Encoder(spec, artifacts, variant=name, providers="cpu")
        cos = cosines(enc.encode_ids(enc.tokenize(sample)), reference)
        variants[name]["fidelity"] = {"texts": len(sample), "min_cos": float(cos.min()), "mean_cos": float(cos.mean())}
        say(f"    {name:9s} min cosine {cos.min():.6f}  mean {cos.mean():.6f}")

    del reference, enc
    say(f"[{next(step)}/{steps}] calibrating the int8 output scale on {len(texts)} texts")
    # The optimized graph gives the fp32 vectors (cosine 1.0, checked above) in less time.
    enc = Encoder(spec, artifacts, variant="optimized", providers="cpu")
    unit = l2_normalize(enc.encode_ids(enc.tokenize(texts)))
    scales = fit_int8_scales(unit, spec.matryoshka_dims)  # a fixed Matryoshka list: only its sizes
    manifest["int8_scales"] = {str(d): round(s, 6) for d, s in scales.items()}
    manifest["calibration_texts"] = len(texts)

    say(f"[{next(step)}/{steps}] measuring what each lossy output keeps of the float top-10 neighbours")
    artifacts = ModelArtifacts(spec, root, manifest)
    manifest["quality"] = quality_table(spec, artifacts, say, enc)

    say(f"[{next(step)}/{steps}] writing the manifest")
    manifest["export_seconds"] = round(time.perf_counter() - started, 1)
    write_manifest(root, manifest)
    say(f"{spec.id}: exported to {root} in {manifest['export_seconds']} s")
    return ModelArtifacts.load(artifact_dir, spec)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

