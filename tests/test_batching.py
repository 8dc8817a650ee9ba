"""Batched equals one-by-one, in any order and any padding; batches respect their budgets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.batching import batch_cost, padded_tokens, plan_batches, split_sorted
from models.encoder import pad_batch
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


def test_plan_batches_sorts_by_length_to_cut_padding():
    lengths = [5, 200, 6, 190, 7, 180]
    batches = plan_batches(lengths, max_batch_size=3, max_batch_tokens=10_000)
    sizes = [sorted(lengths[i] for i in b) for b in batches]
    assert [5, 6, 7] in sizes  # the short rows ride together, never padded to 180+
    assert sorted(n for b in sizes for n in b) == sorted(lengths)
    for b in sizes:
        assert max(b) - min(b) <= 20


def plan_cost(lengths, batches):
    return sum(batch_cost(len(b), max(lengths[i] for i in b)) for b in batches)


def cheapest_by_brute_force(lengths, max_batch_size, max_batch_tokens):
    """Every way of cutting the longest-first order into batches within the budgets."""
    widths = sorted(lengths, reverse=True)
    best = float("inf")
    for mask in range(1 << (len(widths) - 1)):
        cuts = [0] + [i + 1 for i in range(len(widths) - 1) if mask >> i & 1] + [len(widths)]
        groups = [widths[a:b] for a, b in zip(cuts, cuts[1:])]
        if all(len(g) == 1 or (len(g) <= max_batch_size and len(g) * g[0] <= max_batch_tokens) for g in groups):
            best = min(best, sum(batch_cost(len(g), g[0]) for g in groups))
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
