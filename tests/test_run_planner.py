"""Batched equals one-by-one, in any order and any padding; batches respect their budgets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.run_planner import (
    DEFAULT_COST,
    PROBE_SHAPES,
    fit_cost_model,
    padded_tokens,
    plan_batches,
    split_sorted,
    stepped_width,
    width_step_for,
)
from models.encoder import EncodeStats, pad_batch
from tests.support.engine import encoder, fidelity_texts


@pytest.mark.parametrize("variant", ["fp32", "optimized"])
def test_batched_vectors_equal_one_by_one(variant):
    enc = encoder("all-MiniLM-L6-v2", variant)
    texts = fidelity_texts()[:48]
    one_by_one = np.vstack([enc.embed([t]) for t in texts])
    batched = enc.embed(texts)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_order_and_padding_do_not_change_vectors():
    enc = encoder("all-MiniLM-L6-v2")
    texts = fidelity_texts()[:40]
    base = enc.embed(texts)
    order = list(range(len(texts)))
    random.Random(7).shuffle(order)
    shuffled = enc.embed([texts[i] for i in order])
    np.testing.assert_allclose(shuffled, base[order], atol=1e-5)
    # One huge padded batch (a 256-token neighbour) versus length-sorted small batches.
    seqs = enc.tokenize(texts)
    ids, mask = pad_batch(seqs + [np.ones(256, dtype=np.int64) * 1000], enc.spec.pad_token_id)
    hidden = enc.session.run(ids, mask)
    from models.pooling import l2_normalize, mean_pool

    padded = l2_normalize(mean_pool(hidden, mask))[: len(texts)]
    np.testing.assert_allclose(padded, base, atol=1e-5)


def test_plan_batches_covers_every_index_once_within_budgets():
    rng = random.Random(1)
    lengths = [rng.randint(1, 256) for _ in range(500)]
    batches = plan_batches(lengths, max_batch_size=32, max_batch_tokens=4096)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) <= 32
        assert padded_tokens([lengths[i] for i in b]) <= 4096


def test_stepped_widths_round_up_within_the_models_maximum():
    assert width_step_for("openvino", 0) == 16 and width_step_for("onnxruntime", 0) == 1
    assert width_step_for("openvino", 1) == 1 and width_step_for("onnxruntime", 8) == 8
    assert [stepped_width(w, 16, 256) for w in (1, 16, 17, 250, 256)] == [16, 16, 32, 256, 256]
    assert stepped_width(300, 16, 256) == 300  # a row past the limit is never cut here
    assert [stepped_width(w, 1, 256) for w in (1, 17, 250)] == [1, 17, 250]


def test_plans_at_a_width_step_keep_the_budget_at_the_padded_width():
    rng = random.Random(2)
    lengths = [rng.randint(1, 256) for _ in range(300)]
    batches = plan_batches(lengths, max_batch_size=32, max_batch_tokens=2048, width_step=16, width_limit=256)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        width = stepped_width(max(lengths[i] for i in b), 16, 256)
        assert len(b) == 1 or len(b) * width <= 2048


def test_runs_padded_to_a_width_step_give_the_same_vectors_and_count_their_padding():
    enc = encoder("all-MiniLM-L6-v2")
    texts = fidelity_texts()[:40]
    seqs = enc.tokenize(texts)
    exact_stats, stepped_stats = EncodeStats(), EncodeStats()
    exact = enc.encode_ids(seqs, exact_stats)
    enc.width_step = 16
    try:
        stepped = enc.encode_ids(seqs, stepped_stats)
    finally:
        enc.width_step = 1
    np.testing.assert_allclose(stepped, exact, atol=1e-5)
    assert stepped_stats.tokens == exact_stats.tokens == sum(len(s) for s in seqs)
    assert stepped_stats.padded_tokens > exact_stats.padded_tokens
    assert stepped_stats.padded_tokens % 16 == 0


def test_plan_batches_sorts_by_length_to_cut_padding():
    lengths = [5, 200, 6, 190, 7, 180]
    batches = plan_batches(lengths, max_batch_size=3, max_batch_tokens=10_000)
    sizes = [sorted(lengths[i] for i in b) for b in batches]
    assert [5, 6, 7] in sizes  # the short rows ride together, never padded to 180+
    assert sorted(n for b in sizes for n in b) == sorted(lengths)
    for b in sizes:
        assert max(b) - min(b) <= 20


def plan_cost(lengths, batches):
    return sum(DEFAULT_COST.cost(len(b), max(lengths[i] for i in b)) for b in batches)


def cheapest_by_brute_force(lengths, max_batch_size, max_batch_tokens):
    """Every way of cutting the longest-first order into batches within the budgets."""
    widths = sorted(lengths, reverse=True)
    best = float("inf")
    for mask in range(1 << (len(widths) - 1)):
        cuts = [0] + [i + 1 for i in range(len(widths) - 1) if mask >> i & 1] + [len(widths)]
        groups = [widths[a:b] for a, b in zip(cuts, cuts[1:])]
        if all(len(g) == 1 or (len(g) <= max_batch_size and len(g) * g[0] <= max_batch_tokens) for g in groups):
            best = min(best, sum(DEFAULT_COST.cost(len(g), g[0]) for g in groups))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_plan_batches_finds_the_cheapest_plan(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(3, 30), rng.randint(30, 256)]) for _ in range(rng.randint(1, 11))]
    batches = plan_batches(lengths, max_batch_size=4, max_batch_tokens=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert plan_cost(lengths, batches) == pytest.approx(cheapest_by_brute_force(lengths, 4, 512))


def test_planning_a_small_round_pads_far_less_than_one_full_batch():
    rng = random.Random(3)
    lengths = [rng.randint(8, 200) for _ in range(32)]
    batches = plan_batches(lengths, max_batch_size=64, max_batch_tokens=1024)
    padded = sum(padded_tokens([lengths[i] for i in b]) for b in batches)
    assert padded < 1.15 * sum(lengths)


def test_a_row_longer_than_the_budget_still_gets_a_batch():
    assert plan_batches([300, 10], max_batch_size=8, max_batch_tokens=100) == [[0], [1]]


def test_split_sorted_cuts_a_request_into_calls_within_budgets():
    rng = random.Random(2)
    lengths = [rng.randint(1, 256) for _ in range(300)] + [900]
    groups = split_sorted(lengths, max_rows=64, max_tokens=1024)
    assert sorted(i for g in groups for i in g) == list(range(301))
    assert groups[0] == [300]  # longer than the budget: a call of its own
    for g in groups:
        assert len(g) <= 64
        assert len(g) == 1 or padded_tokens([lengths[i] for i in g]) <= 1024


def test_a_backends_cost_model_is_recovered_from_timed_runs():
    """seconds = a + b*rows*width + c*rows*width^2  ->  overhead a/b tokens, attention b/c."""
    a, b, c = 1.2e-3, 2.0e-6, 2.0e-6 / 300
    timings = [(r, w, a + b * r * w + c * r * w * w) for r, w in PROBE_SHAPES]
    fitted = fit_cost_model(timings)
    assert fitted.overhead_tokens == pytest.approx(600, rel=1e-3)
    assert fitted.attention_tokens == pytest.approx(300, rel=1e-3)
    # A new shape's extra cost (0.4 ms over its repeat here) is paid by a run: 200 tokens more.
    assert fit_cost_model(timings, new_shape_s=0.4e-3).overhead_tokens == pytest.approx(800, rel=1e-3)
    # Planned with it, a backend with a big fixed cost a run takes fewer, wider runs.
    rng = random.Random(3)
    lengths = [rng.randint(4, 200) for _ in range(300)]
    assert len(plan_batches(lengths, 64, 1 << 16, fitted)) < len(plan_batches(lengths, 64, 1 << 16, DEFAULT_COST))


def test_timings_that_make_no_sense_keep_the_default_cost_model():
    noisy = [(r, w, 0.05 - 1e-5 * r * w) for r, w in PROBE_SHAPES]  # longer runs measured faster
    assert fit_cost_model(noisy) == DEFAULT_COST
    assert fit_cost_model([(1, 8, 0.001)]) == DEFAULT_COST


def test_the_encoder_plans_with_the_cost_model_measured_on_its_backend():
    enc = encoder("all-MiniLM-L6-v2", "openvino-bf16")
    measured = enc.measure_cost_model()
    print(f"{enc.variant} ({enc.session.precision}): {measured}")
    assert measured.overhead_tokens > 0 and measured.attention_tokens >= 32
    texts = fidelity_texts()[:40]
    np.testing.assert_allclose(enc.embed(texts), encoder("all-MiniLM-L6-v2", "openvino-fp32").embed(texts), atol=5e-3)
