"""Batch planning: sort by length to cut padding, cap each batch by a token budget, and pad it.

Pure functions, shared by the engine (which splits any request this way) and the service's
dynamic batcher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Measured on 2 CPU cores, all-MiniLM-L6-v2, 2,000 corpus texts (`python -m loadtest.sweep`,
# medians of two sweeps of 3 runs): OpenVINO bf16 with up to 64 texts a run gave 388 texts/s at
# 1,024 padded tokens a run, 420 at 2,048, 387 at 4,096; two streams 384 (1,024) and 402
# (4,096): within the run-to-run spread (+-10%), 2,048 and one stream ahead. (ONNX Runtime fp32
# before: 121 texts/s at 64 / 1,024, 112 at 32 / 8,192.)
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_TOKENS = 2048
# A dynamic-batching round gathers this many encoder runs' worth of tokens from concurrent
# calls, so requests that arrive together are length-sorted together.
RUNS_PER_ROUND = 16


def round_tokens(max_batch_tokens: int) -> int:
    """Tokens one batching round gathers; also the most tokens of one encoder call."""
    return RUNS_PER_ROUND * max_batch_tokens


def padded_tokens(lengths: list[int]) -> int:
    """Tokens a batch costs once padded to its longest row."""
    return len(lengths) * max(lengths, default=0)


@dataclass(frozen=True)
class CostModel:
    """What one run of the encoder costs, in units of one token's work: a fixed overhead a run,
    and per row a linear term plus attention's quadratic one. Each backend has its own figures,
    measured at load (`fit_cost_model`); the default was fitted for ONNX Runtime on 2 CPU cores
    (all-MiniLM-L6-v2, runs of 1-64 rows x 8-256 tokens: ~1.6 ms a run, about 13 tokens' worth;
    a 256-token row costs 1.45x its length)."""

    overhead_tokens: float = 13.0
    attention_tokens: float = 566.0

    def cost(self, rows: int, width: int) -> float:
        """Modelled cost of one run of `rows` rows padded to `width` tokens."""
        return self.overhead_tokens + rows * width * (1 + width / self.attention_tokens)


DEFAULT_COST = CostModel()

# Shapes timed to fit a backend's cost model: (rows, width), one short text to 256 tokens (~1k
# tokens a pass, three passes: ~0.2 s for all-MiniLM-L6-v2 at bf16, ~2 s for all-mpnet-base-v2
# at fp32, on 2 cores).
PROBE_SHAPES = ((1, 8), (1, 32), (1, 64), (1, 128), (1, 256), (4, 16), (4, 32), (2, 64), (2, 128))


def fit_cost_model(timings: list[tuple[int, int, float]], fallback: CostModel = DEFAULT_COST,
                   new_shape_s: float = 0.0) -> CostModel:
    """Least squares of seconds = a + b * rows * width + c * rows * width^2 over measured runs
    (rows, width, seconds), in relative terms (each run weighted by 1 / its time, so the short
    runs that tell the fixed cost are not drowned by the long ones' noise). A fit that makes no
    physical sense (noise on a busy machine) gives `fallback` instead. `new_shape_s`: what a
    run of a shape the runtime has not prepared yet costs over its repeat, added to the fixed
    cost a run (a service's rounds are mostly new shapes: fewer, fuller runs pay it less often)."""
    if len(timings) < 3:
        return fallback
    x = np.array([[1.0, r * w, r * w * w] for r, w, _ in timings])
    y = np.array([t for _, _, t in timings])
    (a, b, c), *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    if b <= 0 or a < 0:
        return fallback
    overhead = a / b
    attention = b / c if c > 0 else 1e6
    if not (0.5 <= overhead <= 2000 and attention >= 32):
        return fallback
    # Judged apart from the fit: a noisy first run must not throw away a sound fit.
    overhead = min(overhead + max(new_shape_s, 0.0) / b, 2000)
    return CostModel(round(float(overhead), 1), round(float(min(attention, 1e6)), 1))


def split_sorted(lengths: list[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices longest first, cut greedily into groups of at most `max_rows` rows and
    `max_tokens` padded tokens (a longer row still gets a group of its own). Cheap (one sort):
    for cutting a request into encoder calls, which the encoder's round plans again."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        # Sorted longest first, so a group's width is its first row's length.
        if group is None or len(group) >= max_rows or (len(group) + 1) * lengths[group[0]] > max_tokens:
            groups.append([i])
        else:
            group.append(i)
    return groups


# The width step `auto` (0) picks per backend. OpenVINO prepares kernels per input shape (a
# new shape's first run costs ~1.3x a repeat, and the engine keeps 128): with runs padded to a
# multiple of 16 tokens, service-like rounds of all-MiniLM-L6-v2 in bf16 on an AMX Xeon ran
# 1.27-1.30x the real tokens/s of exact widths despite 11% padded tokens against 5%; in fp32
# (a 6-layer cross-encoder) 1.01-1.02x (loadtest/FINDINGS.md, "Fewer shapes"). ONNX Runtime:
# not measured, so unchanged.
AUTO_WIDTH_STEP = {"openvino": 16}


def width_step_for(backend: str, asked: int) -> int:
    """The width step a session of `backend` runs with: `asked`, or for 0 (auto) the backend's."""
    return asked if asked > 0 else AUTO_WIDTH_STEP.get(backend, 1)


def stepped_width(width: int, step: int = 1, limit: int | None = None) -> int:
    """The width a run of rows at most `width` long is padded to: rounded up to a multiple of
    `step` (fewer distinct shapes for the runtime to prepare and cache), never past `limit`
    (the model's maximum length) nor below `width`."""
    if step <= 1:
        return width
    stepped = -(-width // step) * step
    return max(width, min(stepped, limit)) if limit else stepped


def plan_batches(
    lengths: list[int], max_batch_size: int, max_batch_tokens: int, cost: CostModel = DEFAULT_COST,
    width_step: int = 1, width_limit: int | None = None,
) -> list[list[int]]:
    """Group indices into batches of at most `max_batch_size` rows and `max_batch_tokens`
    padded tokens (a single row longer than the budget still gets a batch of its own), at the
    least total modelled `cost`: rows sorted longest first, cut where padding would cost more
    than another run (dynamic programming over the cut points). Runs are padded to
    `stepped_width(longest, width_step, width_limit)`, and planned at that width."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    widths = [stepped_width(lengths[i], width_step, width_limit) for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan for the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, max(j - 1 - max_batch_size, -1), -1):  # last batch = sorted rows i..j-1
            rows, width = j - i, widths[i]
            if rows > 1 and rows * width > max_batch_tokens:
                break
            total = best[i] + cost.cost(rows, width)
            if total < best[j]:
                best[j], cut[j] = total, i
    batches, j = [], n
    while j > 0:
        batches.append(order[cut[j] : j])
        j = cut[j]
    return batches[::-1]


def pad_batch(seqs: list[np.ndarray], pad_id: int, width: int | None = None,
              masks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to `width` (default: the longest row): (input_ids, attention_mask), both int64;
    the mask is 1 on each row's tokens, or its row of `masks` (a packed row's segments)."""
    width = max(max(len(s) for s in seqs), width or 0)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1 if masks is None else masks[row]
    return ids, mask
