"""Exported model artifacts on disk: ONNX variants, tokenizer and a manifest.

Layout: <artifact_dir>/<model key>/{model.onnx, model_optimized.onnx, model_int8.onnx,
tokenizer.json, manifest.json, fidelity_reference.npy, neighbour_reference.npy}. The manifest
lists every variant (models.variants) with its file, checksum and measured fidelity; OpenVINO's
variants read model.onnx itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import ArtifactsMissing
from models.specs import ModelSpec

MANIFEST_VERSION = 1


def default_artifact_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embedserve"


def model_dir(artifact_dir: Path, spec: ModelSpec) -> Path:
    return Path(artifact_dir).expanduser() / spec.key


@dataclass(frozen=True)
class ModelArtifacts:
    spec: ModelSpec
    root: Path
    manifest: dict

    @classmethod
    def load(cls, artifact_dir: Path, spec: ModelSpec) -> "ModelArtifacts":
        root = model_dir(artifact_dir, spec)
        path = root / "manifest.json"
        if not path.is_file():
            raise ArtifactsMissing(
                f"{spec.id} has not been exported to {root}. Run: embedserve export {spec.key}"
            )
        manifest = json.loads(path.read_text())
        if manifest.get("manifest_version") != MANIFEST_VERSION:
            raise ArtifactsMissing(f"{path} is from another embedserve version; re-export {spec.key}.")
        return cls(spec, root, manifest)

    @property
    def tokenizer_path(self) -> Path:
        return self.root / "tokenizer.json"

    def variant(self, name: str) -> dict:
        info = self.manifest["variants"].get(name)
        if info is None:
            have = ", ".join(self.manifest["variants"])
            raise ArtifactsMissing(
                f"variant '{name}' of {self.spec.id} was not exported (have: {have}). "
                f"Run: embedserve export {self.spec.key}" + (" --int8-weights" if name == "int8" else "")
            )
        return info

    def onnx_path(self, name: str) -> Path:
        return self.root / self.variant(name)["file"]

    def checksum(self, name: str) -> str:
        return self.variant(name)["sha256"]

    @property
    def int8_scales(self) -> dict[int, float]:
        """Symmetric int8 output scale for each output dimension count."""
        return {int(k): float(v) for k, v in self.manifest.get("int8_scales", {}).items()}

    @property
    def quality(self) -> dict:
        return self.manifest.get("quality", {})
