"""Long texts embedded whole: windows cover every token with the stated overlap, carry the
special tokens and the prompt, a text that fits is unchanged, and window vectors pool back into
the mean of all their token states."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InputTooLong, InvalidOption
from models.pooling import mean_pool
from models.tokenizer import Truncate
from models.windows import pool_windows, window_count, window_spans
from tests.support.engine import encoder

LONG = " ".join(f"word{i % 97} and more" for i in range(1500))  # ~6,000 tokens


def tok():
    return encoder("all-MiniLM-L6-v2").tokenizer


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 476, 477, 5000])
def test_windows_cover_every_token_with_the_overlap(n):
    size, overlap = 254, 32
    spans = window_spans(n, size, overlap)
    assert len(spans) == window_count(n, size, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(0 < b - a <= size for a, b in spans) or n == 0
    for (a0, b0), (a1, _) in zip(spans, spans[1:]):
        assert b0 - a1 == overlap  # each window starts `overlap` tokens before the last one ends


def test_window_sizes_that_leave_no_stride_are_refused():
    with pytest.raises(InvalidOption):
        window_spans(100, 32, 32)


def test_pooled_windows_are_the_mean_of_all_their_token_states():
    rng = np.random.default_rng(0)
    lengths = [256, 256, 100]
    states = [rng.normal(size=(n, 8)).astype(np.float32) for n in lengths]
    per_window = np.vstack([mean_pool(s[None], np.ones((1, len(s)), dtype=np.int64)) for s in states])
    alone = rng.normal(size=(1, 8)).astype(np.float32)
    pooled = pool_windows(np.vstack([alone, per_window]), [7, *lengths], [1, 3])
    np.testing.assert_array_equal(pooled[0], alone[0])  # one window: exactly its vector
    np.testing.assert_allclose(pooled[1], np.vstack(states).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_a_text_that_fits_is_one_window_equal_to_the_ordinary_sequence():
    for prompt in ("", "query: "):
        (windows,) = tok().windows(["a short text"], 32, 4, prompt)
        (seq,) = tok().encode(["a short text"], prompt=prompt)
        assert len(windows) == 1 and np.array_equal(windows[0], seq)


def test_long_text_windows_carry_special_tokens_and_prompt_and_overlap():
    t = tok()
    (windows,) = t.windows([LONG], 32, 64, "query: ")
    prompt_ids = [23032, 1024]  # "query", ":"
    body = []
    for i, w in enumerate(windows):
        assert len(w) <= t.max_length and w[0] == 101 and w[-1] == 102
        assert list(w[1:3]) == prompt_ids
        content = list(w[3:-1])
        if i:
            assert content[:32] == body[-32:]  # overlap with the previous window
            content = content[32:]
        body += content
    plain = t._whole.encode(LONG, add_special_tokens=False).ids
    assert body == plain  # every token, once, in order
    assert len(windows) == window_count(len(plain), t.content_size(2), 32)


def test_too_many_windows_is_refused_before_any_work():
    with pytest.raises(InputTooLong) as info:
        tok().windows(["short", LONG], 32, 4)
    assert info.value.param == "input" and "input[1]" in info.value.message and "4 windows" in info.value.message


def test_windows_do_not_apply_to_token_ids():
    with pytest.raises(InvalidOption):
        tok().encode_ids([[101, 2023, 102]], Truncate.WINDOW)


def test_truncate_start_with_a_prompt_keeps_the_prompt_and_the_end():
    (seq,) = tok().encode([LONG + " omega"], Truncate.START, prompt="query: ")
    assert len(seq) == 256 and list(seq[:3]) == [101, 23032, 1024] and seq[-1] == 102
    (plain,) = tok().encode([LONG + " omega"], Truncate.START)
    np.testing.assert_array_equal(seq[-200:], plain[-200:])
