"""Small randomly initialised cross-encoders (BertForSequenceClassification, one label and
three), saved as sentence-transformers CrossEncoder folders and exported with
`embedserve export NAME=PATH ...` like any user's model (tests.support.user_models). The
WordPiece tokenizer is the packaged all-MiniLM-L6-v2's (its pair template: [CLS] q [SEP] d [SEP],
token types 0 then 1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.user_models import minilm_dir, run_export, spread_and_save

HIDDEN = 32
MAX_LENGTH = 48  # short, so ordinary documents go over it


@dataclass(frozen=True)
class TinyCrossEncoder:
    name: str
    labels: int


CROSS_ENCODERS = (TinyCrossEncoder("tiny-rerank", 1), TinyCrossEncoder("tiny-rerank-3", 3))


def build(m: TinyCrossEncoder, root: Path) -> Path:
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    config = AutoConfig.for_model("bert", hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, vocab_size=len(tok),
                                  num_labels=m.labels)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    hf = spread_and_save(model, tok, root / f"{m.name}-hf")
    out = root / m.name
    CrossEncoder(str(hf), device="cpu", max_length=MAX_LENGTH, local_files_only=True).save(str(out))
    return out


@dataclass(frozen=True)
class ExportedRerankers:
    folders: dict[str, Path]
    artifact_dir: Path
    export_log: str


def export_all(root: Path) -> ExportedRerankers:
    """Builds both cross-encoders, then exports them with one `embedserve export NAME=PATH ...`."""
    (root / "folders").mkdir(parents=True, exist_ok=True)
    folders = {m.name: build(m, root / "folders") for m in CROSS_ENCODERS}
    artifacts = root / "artifacts"
    done = run_export(*(f"{n}={p}" for n, p in folders.items()), artifact_dir=artifacts)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return ExportedRerankers(folders, artifacts, done.stdout)


def reference(folder: Path, pairs: list[tuple[str, str]]):
    """sentence-transformers' own fp32 scores (CrossEncoder.predict, its default activation)."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu", local_files_only=True).predict(pairs, batch_size=8,
                                                                                   show_progress_bar=False)
