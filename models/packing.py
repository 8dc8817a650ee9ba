"""Packing: several texts laid end to end in one row of an encoder run, each attending only to
itself (a block-diagonal attention mask) and counting its positions from its own start, so a
run of short texts is a few full rows instead of many padded ones.

The exported graph builds its attention mask from `attention_mask` (b, t) and its positions from
the row's length; `packed_graph` rewrites it to take both from the caller: the additive bias the
attention layers add to their scores, (b, 1, t, t), and the position ids, (b, t). A text's
vector is then what it is alone (its keys are the only ones not masked out, its positions are its
own), which the engine checks at load against the graph as exported before it packs
(models.encoder). A row's mask carries its segments: 1, 2, ... for its texts, 0 for padding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from models.pooling import pool

BIAS_INPUT = "packed_bias"
POSITIONS_INPUT = "position_ids"
MASKED = np.float32(np.finfo(np.float32).min)  # what the exported graphs add for a masked key


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _attention_bias(graph: onnx.GraphProto, consumers: dict[str, list[onnx.NodeProto]]) -> str | None:
    """The tensor derived from `attention_mask` that the attention layers add to their scores:
    of everything computed from the mask (not through its shape), the one most Add nodes take."""
    seen, todo, best, best_adds = set(), ["attention_mask"], None, 0
    while todo:
        name = todo.pop()
        adds = sum(1 for n in consumers.get(name, ()) if n.op_type == "Add")
        if adds > best_adds and name != "attention_mask":
            best, best_adds = name, adds
        for node in consumers.get(name, ()):
            if node.op_type == "Shape":
                continue
            for out in node.output:
                if out not in seen:
                    seen.add(out)
                    todo.append(out)
    return best


def _position_gather(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The Gather that looks up absolute position embeddings (a 2-D weight named for them)."""
    weights = {t.name for t in graph.initializer if len(t.dims) == 2 and "position_embeddings" in t.name}
    found = [n for n in graph.node if n.op_type == "Gather" and n.input and n.input[0] in weights]
    return found[0] if len(found) == 1 else None


def packed_graph(model: onnx.ModelProto, offset: int = 0) -> onnx.ModelProto | None:
    """`model` (an encoder as exported) taking its attention bias and position ids as inputs, or
    None where the graph is not one this knows how to rewrite (no mask-derived bias added to the
    scores, no single position-embedding lookup, or those inputs already declared). `offset` is
    added to the position ids (RoBERTa's positions start past the padding id)."""
    graph = model.graph
    names = {i.name for i in graph.input}
    if "attention_mask" not in names or names & {BIAS_INPUT, POSITIONS_INPUT}:
        return None
    consumers = _consumers(graph)
    bias, gather = _attention_bias(graph, consumers), _position_gather(graph)
    if bias is None or gather is None:
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    graph.input.append(helper.make_tensor_value_info(BIAS_INPUT, TensorProto.FLOAT, ["batch", 1, "tokens", "tokens"]))
    graph.input.append(helper.make_tensor_value_info(POSITIONS_INPUT, TensorProto.INT64, ["batch", "tokens"]))
    positions = POSITIONS_INPUT
    if offset:
        positions = "packed_positions_from_offset"
        graph.initializer.append(helper.make_tensor("packed_position_offset", TensorProto.INT64, [], [offset]))
        graph.node.insert(0, helper.make_node("Add", [POSITIONS_INPUT, "packed_position_offset"], [positions]))
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == bias and node.op_type == "Add":
                node.input[k] = BIAS_INPUT
        if node.op_type == "Gather" and list(node.input) == list(gather.input):
            node.input[1] = positions
    return out


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of at most `capacity` tokens, longest first, each into the first
    row it fits (first-fit decreasing); a text longer than `capacity` has a row of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, left in enumerate(room):
            if left >= lengths[i]:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def segments(lengths: list[int]) -> np.ndarray:
    """A packed row's mask: 1 for the first text's tokens, 2 for the second's, ..."""
    return np.repeat(np.arange(1, len(lengths) + 1, dtype=np.int64), lengths)


def packed_inputs(segs: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs a packed graph takes beside the ids, from the run's segment mask (b, t): the
    0/1 `attention_mask`, each token's position in its own text, and the bias: 0 where query and key are of the same
    text (padding attends to padding, so no row is all masked), the masked value elsewhere."""
    t = np.arange(segs.shape[1], dtype=np.int64)
    starts = np.where(np.diff(segs, axis=1, prepend=-1) != 0, t, 0)
    positions = t - np.maximum.accumulate(starts, axis=1)
    same = segs[:, None, :, None] == segs[:, None, None, :]
    return {
        "attention_mask": (segs > 0).astype(np.int64),
        POSITIONS_INPUT: positions,
        BIAS_INPUT: np.where(same, np.float32(0), MASKED),
    }


def pool_packed(kind: str, hidden: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """One pooled vector a text of a packed run (token states (b, t, d), segment mask (b, t)), in
    row order and text order within a row, as `models.pooling.pool` pools it alone."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    flat_segs = segs.reshape(-1)
    real = np.flatnonzero(flat_segs)
    row_of = real // segs.shape[1]
    key = row_of * (int(flat_segs.max()) + 1) + flat_segs[real]  # one key a text, in order
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    lengths = np.diff(np.append(starts, len(real)))
    if kind == "mean":
        return (np.add.reduceat(flat[real], starts, axis=0) / lengths[:, None]).astype(hidden.dtype)
    if kind == "cls":
        return flat[real[starts]]
    if kind == "last":
        return flat[real[starts + lengths - 1]]
    offsets = np.arange(int(lengths.max()))
    mask = (offsets[None, :] < lengths[:, None]).astype(np.int64)
    states = flat[real[np.minimum(starts[:, None] + offsets[None, :], len(real) - 1)]]
    return pool(kind, states, mask)


# Probe texts (token counts) for `packs_alike`: short ones sharing a row, and one long enough
# (a share of the row) that the rest spill into a second row.
PROBE_LENGTHS = (2, 5, 9, 17, 31, 44, 3, 70, 12, 7)


def _padded(rows: list[np.ndarray], masks: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, (r, m) in enumerate(zip(rows, masks)):
        ids[k, : len(r)], mask[k, : len(m)] = r, m
    return ids, mask


def packs_alike(reference, packed, reduce, reduce_packed, id_range: tuple[int, int], pad_id: int,
                capacity: int, min_cos: float = 0.9999, max_error: float = 1e-2) -> bool:
    """Whether the `packed` session (a `packed_graph`) gives the `reference` session's vectors
    (`reduce` / `reduce_packed` pool them) for random probe texts, several a row: cosine at
    least `min_cos` and length within `max_error` for every text."""
    rng = np.random.default_rng(1)
    lengths = [min(n, capacity) for n in (*PROBE_LENGTHS, max(1, capacity * 3 // 5))]
    seqs = [rng.integers(*id_range, size=n, dtype=np.int64) for n in lengths]
    ids, mask = _padded(seqs, [np.ones(n, dtype=np.int64) for n in lengths], pad_id)
    want = reduce(reference.run(ids, mask), mask)
    rows = pack_rows(lengths, capacity)
    ids, segs = _padded([np.concatenate([seqs[i] for i in r]) for r in rows],
                        [segments([lengths[i] for i in r]) for r in rows], pad_id)
    got = reduce_packed(packed.run(ids, segs), segs)
    want = want[[i for r in rows for i in r]]
    norms = np.linalg.norm(want, axis=1)
    cos = (got * want).sum(axis=1) / np.maximum(np.linalg.norm(got, axis=1) * norms, 1e-12)
    error = np.linalg.norm(got - want, axis=1) / np.maximum(norms, 1e-12)
    return bool(cos.min() >= min_cos and error.max() <= max_error)
