"""Tokenization: the spec's max length, no fixed padding, truncation sides, token-id input."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InputTooLong, InvalidInput, InvalidOption
from models.tokenizer import Truncate
from tests.support.engine import encoder

LONG = "word " * 600


def tok():
    return encoder("all-MiniLM-L6-v2").tokenizer


def test_short_texts_are_not_padded():
    assert [len(s) for s in tok().encode(["hi", "hello there friend"])] == [3, 5]


def test_long_texts_stop_at_the_specs_max_length_keeping_special_tokens():
    (ids,) = tok().encode([LONG])
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]


def test_truncate_start_keeps_the_end():
    text = "alpha " * 300 + "omega"
    (end,) = tok().encode([text], Truncate.END)
    (start,) = tok().encode([text], Truncate.START)
    omega = tok().encode(["omega"])[0][1]
    assert omega in start and omega not in end


def test_truncate_none_refuses_long_texts_with_a_clear_error():
    with pytest.raises(InputTooLong, match="256 tokens"):
        tok().encode(["fine", LONG], Truncate.NONE)
    assert len(tok().encode(["fine"], Truncate.NONE)[0]) == 3


def test_unknown_truncate_option_is_a_typed_error():
    with pytest.raises(InvalidOption):
        Truncate.parse("middle")


def test_token_ids_embed_like_the_text_they_came_from():
    enc = encoder("all-MiniLM-L6-v2")
    ids = enc.tokenize(["the quick brown fox"])[0].tolist()
    from_ids = enc.encode_ids(enc.tokenizer.encode_ids([ids]))
    from_text = enc.encode_ids(enc.tokenize(["the quick brown fox"]))
    np.testing.assert_allclose(from_ids, from_text, atol=1e-6)


@pytest.mark.parametrize("ids", [[], [-1], [30522], [1, 2, 10**12]])
def test_token_ids_outside_the_vocabulary_are_refused(ids):
    with pytest.raises(InvalidInput):
        tok().encode_ids([ids])
