"""POST /tokenize answers what the model reads: the tokens after truncation to the model's
maximum, with `truncated` saying which inputs were cut, and the prompt of `input_type` included
(tests/test_prompts_per_input_type.py shows a prompt's tokens)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"


def test_counts_are_after_truncation_and_say_so(service):
    status, _, body = service.post("/tokenize", {"model": M, "input": ["short text", "word " * 400]})
    assert status == 200, body
    assert body["max_input_tokens"] == 256
    assert body["counts"] == [4, 256] and body["truncated"] == [False, True]
    assert [len(t) for t in body["tokens"]] == body["counts"]


def test_a_text_of_exactly_the_maximum_is_not_truncated(service):
    text = "word " * 254  # 254 tokens and [CLS] [SEP]
    body = service.post("/tokenize", {"model": M, "input": text})[2]
    assert body["counts"] == [256] and body["truncated"] == [False]


def test_input_type_is_checked_as_on_embeddings(service):
    status, _, body = service.post("/tokenize", {"model": M, "input": "x", "input_type": "no_such_type"})
    assert status == 400 and body["error"]["param"] == "input_type", body
    ok = service.post("/tokenize", {"model": M, "input": "x", "input_type": "search_query"})
    assert ok[0] == 200 and ok[2]["counts"] == [3]  # this model declares no prompts: the plain text
