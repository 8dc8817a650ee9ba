"""The text corpora the repository carries (JSON Lines, one string a line)."""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


def read_jsonl(path: Path) -> list[str]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def calibration_texts() -> list[str]:
    """Texts used at export to fit the int8 output scale."""
    return read_jsonl(DATA_DIR / "calibration.jsonl")


def evaluation_texts() -> list[str]:
    """Held-out texts (never used for calibration) to measure what lossy outputs cost."""
    return read_jsonl(DATA_DIR / "evaluation.jsonl")
