"""What `embedserve export` cannot serve is refused with one line on stderr and exit 2, never a
traceback: a path that does not exist, a folder with no model, an architecture the engine does
not run or that needs remote code (named), a name a shipped model already has, and a model whose
exported graph does not give sentence-transformers' vectors (fidelity under the fp32 floor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.user_models import TinyModel, build, run_export


def refused(*args: str, artifact_dir: Path) -> str:
    done = run_export(*args, artifact_dir=artifact_dir)
    assert done.returncode == 2, done.stderr[-3000:]
    # One line says why (an export that got as far as measuring leaves the libraries' progress above it).
    said = [line for line in done.stderr.splitlines() if line.startswith("embedserve export: ")]
    assert len(said) == 1 and done.stderr.strip().endswith(said[0]), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return said[0]


def model_folder(root: Path, config: dict) -> Path:
    """A folder with a config.json and a weights file (never read: the refusal comes first)."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    (root / "model.safetensors").write_bytes(b"")
    return root


def test_a_path_that_does_not_exist(tmp_path):
    assert "no such folder" in refused(str(tmp_path / "nope"), artifact_dir=tmp_path / "a")


def test_a_folder_with_no_model(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no model" in refused(str(tmp_path / "empty"), artifact_dir=tmp_path / "a")


def test_an_unsupported_architecture_is_named(tmp_path):
    folder = model_folder(tmp_path / "t5-model", {"model_type": "t5"})
    line = refused(str(folder), artifact_dir=tmp_path / "a")
    assert "architecture 't5' is not supported" in line and "qwen3" in line


def test_a_model_that_needs_remote_code_is_named(tmp_path):
    folder = model_folder(tmp_path / "custom", {"model_type": "nomic_bert", "auto_map": {"AutoModel": "x.Model"}})
    assert "'nomic_bert' needs remote code" in refused(str(folder), artifact_dir=tmp_path / "a")


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"])
def test_a_name_clash_with_a_shipped_model(tmp_path, name):
    folder = model_folder(tmp_path / "mine", {"model_type": "bert"})
    assert "the name of a shipped model" in refused(str(folder), "--name", name, artifact_dir=tmp_path / "a")


def test_an_export_under_the_fp32_floor_fails(tmp_path):
    """Weighted-mean pooling with left padding: sentence-transformers weighs each token by its
    position in the padded batch, so its vectors are not the text's own; the engine's are, and
    the measured fidelity (under 0.9999 at fp32) fails the export, leaving no manifest."""
    folder = build(TinyModel("tiny-left-weighted", "distilbert", "wordpiece", "weightedmean", 48, padding_side="left"),
                   tmp_path)
    line = refused(str(folder), artifact_dir=tmp_path / "a")
    assert "under the floor of 0.9999 at fp32: the export failed" in line
    assert not (tmp_path / "a" / "tiny-left-weighted" / "manifest.json").exists()
