"""A hub id is served only from the local Hugging Face cache: a cached snapshot is read like a
folder (named after the repository), and an id not in the cache is one line and exit 2, with
nothing downloaded."""

from __future__ import annotations

import shutil

from models.model_folder import read_folder
from tests.support.user_models import TINY_MODELS, build, run_export


def test_a_cached_hub_id_is_read_from_its_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--tiny-bert"
    shutil.copytree(build(TINY_MODELS[0], tmp_path), repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = read_folder("someone/tiny-bert")
    assert spec.id == "tiny-bert" and spec.pooling == "cls" and spec.dimension == 24


def test_a_hub_id_not_in_the_cache_is_refused_without_downloading(tmp_path):
    done = run_export("someone/not-cached-model", artifact_dir=tmp_path / "a")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not in the local Hugging Face cache (nothing is downloaded)" in done.stderr.strip().splitlines()[-1]
