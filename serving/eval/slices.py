"""Slices of the queries where embeddings are known to fail, each reported on its own.

    long docs   a relevant document is longer than the model's window (it takes more than one
                window with truncate=window): searched with the document truncated (what a plain
                call embeds) and embedded whole (`truncate: "window"`)
    numbers     the query holds a number or a date (digits)
    non-ascii   the query holds a character outside ASCII (other scripts, accents, emoji)
    FIELD=VALUE any field the data names (data.Dataset.query_fields)
"""

from __future__ import annotations

import re

from serving.eval.data import Dataset

NUMBER = re.compile(r"\d")


def text_slices(ds: Dataset) -> dict[str, list[str]]:
    """Slice name -> its query ids (slices of no query left out)."""
    out = {
        "numbers": [q for q, t in zip(ds.query_ids, ds.query_texts) if NUMBER.search(t)],
        "non-ascii": [q for q, t in zip(ds.query_ids, ds.query_texts) if not t.isascii()],
    }
    for name, values in ds.query_fields.items():
        for value in sorted({v for v in values if v}):
            out[f"{name}={value}"] = [q for q, v in zip(ds.query_ids, values) if v == value]
    return {k: v for k, v in out.items() if v}


def long_doc_slice(ds: Dataset, windows: list[int]) -> list[str]:
    """Queries with a relevant document that takes more than one window."""
    long_docs = {d for d, n in zip(ds.doc_ids, windows) if n > 1}
    return [q for q in ds.query_ids if any(g > 0 and d in long_docs for d, g in ds.qrels[q].items())]
