"""Packing: several texts laid end to end in one row of an encoder run, each attending only to
itself (a block-diagonal attention mask) and counting its positions from its own start, so a
run of short texts is a few full rows instead of many padded ones.

The exported graph builds its attention mask from `attention_mask` (b, t) and its positions from
the row's length; the runtime rewrites it at load to take both from the caller (OpenVINO:
models.backends.openvino.packed_model): the additive bias the attention layers add to their
scores, (b, 1, t, t), and the position ids, (b, t). A text's vector is then what it is alone (its
keys are the only ones not masked out, its positions are its own), which the engine checks at
load against the graph as exported before it packs (`packs_alike`, models.encoder). A row's mask
carries its segments: 1, 2, ... for its texts, 0 for padding. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from models.pooling import pool
from models.run_planner import pad_batch
from models.variant_fidelity import cosines

BIAS_INPUT = "packed_bias"
POSITIONS_INPUT = "position_ids"
MASKED = np.float32(np.finfo(np.float32).min)  # what the exported graphs add for a masked key


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


def packed_units(seqs: list[np.ndarray], rows: list[list[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`rows` (from `pack_rows`) as sequences to pad and run: each row's texts laid end to end,
    and its mask of segments."""
    units = [seqs[r[0]] if len(r) == 1 else np.concatenate([seqs[i] for i in r]) for r in rows]
    return units, [segments([len(seqs[i]) for i in r]) for r in rows]


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


def probes(id_range: tuple[int, int], capacity: int) -> list[np.ndarray]:
    """Random probe texts (token ids in `id_range`) for `packs_alike`, none over `capacity`."""
    rng = np.random.default_rng(1)
    return [rng.integers(*id_range, size=min(n, capacity), dtype=np.int64)
            for n in (*PROBE_LENGTHS, max(1, capacity * 3 // 5))]


def vectors_alone(session, reduce, seqs: list[np.ndarray], pad_id: int) -> np.ndarray:
    """`seqs` run by an unpacked `session`, a row a text, and reduced: what packing must give."""
    ids, mask = pad_batch(seqs, pad_id)
    return reduce(session.run(ids, mask), mask)


def packs_alike(want: np.ndarray, packed, reduce_packed, seqs: list[np.ndarray], pad_id: int, capacity: int,
                min_cos: float = 0.9999, max_error: float = 1e-2) -> bool:
    """Whether the `packed` session (the graph rewritten for packed rows), `seqs` packed into rows
    of `capacity`, gives `want` (`vectors_alone`): cosine at least `min_cos` and length within
    `max_error` for every text."""
    rows = pack_rows([len(s) for s in seqs], capacity)
    units, masks = packed_units(seqs, rows)
    ids, segs = pad_batch(units, pad_id, masks=masks)
    got = reduce_packed(packed.run(ids, segs), segs)
    want = want[[i for r in rows for i in r]]
    error = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-12)
    return bool(cosines(got, want).min() >= min_cos and error.max() <= max_error)
