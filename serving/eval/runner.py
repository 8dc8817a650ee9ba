"""One evaluation: every (model, variant, input types, dimensions, encoding) option searched on
one dataset, with metrics overall and per slice. The CLI (serving.eval.command) builds the
embedders and prints what this returns; tests call it directly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.errors import EmbedError
from serving.eval import metrics, search, slices
from serving.eval.data import Dataset
from serving.eval.embed import Embedder

QUERY_TYPE, DOC_TYPE = "search_query", "search_document"


@dataclass(frozen=True)
class Options:
    dimensions: tuple[str, ...] = ("64", "128", "256", "full")
    encodings: tuple[str, ...] = search.ENCODINGS
    input_types: tuple[str, ...] = ("on", "off")
    ks: tuple[int, ...] = (1, 5, 10, 100)
    long_documents: bool = True  # also search the corpus embedded whole (truncate=window)

    @property
    def depth(self) -> int:
        return max(*self.ks, metrics.MRR_AT, metrics.NDCG_AT)


@dataclass
class Result:
    dataset: dict
    options: dict
    rows: list[dict] = field(default_factory=list)
    not_run: list[dict] = field(default_factory=list)  # options that could not run, and why
    slices: dict[str, int] = field(default_factory=dict)  # slice -> queries in it


def run(ds: Dataset, embedders: list[Embedder], opts: Options, progress=None) -> Result:
    """`progress(total)` returns a tick(n) callable (a progress bar), or None for no bar."""
    result = Result(ds.describe(), {"dimensions": list(opts.dimensions), "encodings": list(opts.encodings),
                                    "input_types": list(opts.input_types), "k": list(opts.ks)})
    named = slices.text_slices(ds)
    order = search.tie_order(ds.doc_ids)
    for emb in embedders:
        for label, qtype, dtype in input_type_configs(emb, opts.input_types, result):
            total = len(ds.query_ids) + len(ds.doc_ids) * (2 if opts.long_documents else 1)
            tick = progress(total, f"{emb.model_id} {emb.variant} input types {label}") if progress else (lambda n: None)
            base = {"model": emb.model_id, "variant": emb.variant, "input_types": label}
            try:
                queries = emb.embed("queries", ds.query_texts, qtype, "end", tick)
                docs = emb.embed("corpus", ds.doc_texts, dtype, "end", tick)
                whole = emb.embed("corpus", ds.doc_texts, dtype, "window", tick) if opts.long_documents else None
            except EmbedError as exc:
                result.not_run.append({**base, "reason": exc.message})
                continue
            groups = dict(named)
            if whole is not None and max(emb.windows["corpus"], default=1) == 1:
                result.not_run.append({**base, "truncate": "window", "reason": "no document is over the model's window"})
                whole = None
            if whole is not None:
                groups = {"long docs": slices.long_doc_slice(ds, emb.windows["corpus"]), **groups}
            result.slices.update({k: len(v) for k, v in groups.items()})
            truth, _ = search.search(search.encode(docs, queries, "float", emb.dimension, None), opts.depth, order)
            for dims_label in opts.dimensions:
                dims = emb.dimension if dims_label == "full" else int(dims_label)
                for encoding in opts.encodings:
                    why = cannot_run(emb, dims, encoding)
                    option = {**base, "dimensions": dims, "encoding": encoding, "truncate": "end"}
                    if why:
                        result.not_run.append({**option, "reason": why})
                        continue
                    result.rows.append(measure(ds, docs, queries, option, emb, opts, order, truth, groups))
            if whole is not None:
                option = {**base, "dimensions": emb.dimension, "encoding": "float", "truncate": "window"}
                result.rows.append(measure(ds, whole, queries, option, emb, opts, order, truth, groups))
    result.rows.sort(key=lambda r: -r["metrics"][f"ndcg@{metrics.NDCG_AT}"])
    return result


def input_type_configs(emb: Embedder, asked: tuple[str, ...], result: Result) -> list[tuple[str, str | None, str | None]]:
    """(label, query input type, document input type) per config that gives distinct vectors:
    a model without prompts embeds the same texts either way, so on and off run once."""
    configs = [("on", QUERY_TYPE, DOC_TYPE) if a == "on" else ("off", None, None) for a in asked]
    if len(configs) == 2 and emb.prompt(QUERY_TYPE) == "" and emb.prompt(DOC_TYPE) == "":
        return [("on=off", QUERY_TYPE, DOC_TYPE)]
    return configs


def cannot_run(emb: Embedder, dims: int, encoding: str) -> str | None:
    if not emb.allows_dimensions(dims):
        return f"{emb.model_id} does not serve dimensions={dims}"
    if encoding.startswith("binary") and dims % 8:
        return "binary packs 8 dimensions a byte: dimensions must be a multiple of 8"
    if encoding in ("int8", "uint8") and dims not in emb.int8_scales:
        return f"no int8 scale was calibrated for dimensions={dims}"
    return None


def measure(ds: Dataset, docs: np.ndarray, queries: np.ndarray, option: dict, emb: Embedder, opts: Options,
            order: np.ndarray, truth: np.ndarray, groups: dict[str, list[str]]) -> dict:
    dims, encoding = option["dimensions"], option["encoding"]
    enc = search.encode(docs, queries, encoding, dims, emb.int8_scales.get(dims))
    found, scores = search.search(enc, opts.depth, order)
    ranked = {q: [ds.doc_ids[i] for i in row] for q, row in zip(ds.query_ids, found.tolist())}
    per_q = metrics.evaluate(ranked, ds.qrels, opts.ks)
    for k in opts.ks:
        for q, v in zip(ds.query_ids, metrics.kept_at(found, truth, k)):
            per_q[q][f"kept@{k}"] = float(v)
    return {
        **option,
        "dims_label": "full" if dims == emb.dimension else str(dims),
        "bytes_per_vector": enc.bytes_per_vector,
        "metrics": metrics.mean(per_q),
        "slices": {name: metrics.mean(per_q, qs) for name, qs in groups.items() if qs},
        "run": {q: {ds.doc_ids[i]: float(s) for i, s in zip(row, srow)}
                for q, row, srow in zip(ds.query_ids, found.tolist(), scores.tolist())},
    }
