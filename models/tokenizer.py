"""Tokenization with `tokenizers`: truncation from the model spec, no padding (batches pad
to their own longest row), and token-id input checked against the vocabulary."""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.errors import InputTooLong, InvalidInput, InvalidOption
from models.specs import ModelSpec


class Truncate(str, enum.Enum):
    END = "end"  # keep the beginning (sentence-transformers' behaviour)
    START = "start"  # keep the end
    NONE = "none"  # too long is an error

    @classmethod
    def parse(cls, value: str) -> "Truncate":
        try:
            return cls(value)
        except ValueError:
            raise InvalidOption(
                f"'{value}' is not a valid truncate option. Use end, start or none.", param="truncate"
            ) from None


def load_tokenizer(path: Path, max_length: int, direction: str = "right") -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length, direction=direction)
    return tok


class TextTokenizer:
    """Texts or token ids -> int64 id arrays of at most `spec.max_seq_length` tokens."""

    def __init__(self, path: Path, spec: ModelSpec):
        self.spec = spec
        self.max_length = spec.max_seq_length
        # One configured instance per truncation side: their settings are global to the object,
        # so switching them per request would race between threads.
        self._by_side = {
            Truncate.END: load_tokenizer(path, self.max_length, "right"),
            Truncate.START: load_tokenizer(path, self.max_length, "left"),
            # One token over the limit is enough to tell "too long" without tokenizing megabytes.
            Truncate.NONE: load_tokenizer(path, self.max_length + 1, "right"),
        }
        self.vocab_size = self._by_side[Truncate.END].get_vocab_size()

    def encode(self, texts: list[str], truncate: Truncate = Truncate.END) -> list[np.ndarray]:
        tok = self._by_side[truncate]
        encodings = tok.encode_batch_fast(texts)
        seqs = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        if truncate is Truncate.NONE:
            for i, s in enumerate(seqs):
                if len(s) > self.max_length:
                    raise InputTooLong(
                        f"input[{i}] is longer than the model's maximum of {self.max_length} tokens "
                        "and truncate is 'none'. Shorten it or use truncate 'end'.",
                        param="input",
                    )
        return seqs

    def encode_ids(self, id_lists: list[list[int]], truncate: Truncate = Truncate.END) -> list[np.ndarray]:
        """Token ids are taken as given (special tokens included), then truncated like text."""
        seqs = []
        for i, ids in enumerate(id_lists):
            try:
                arr = np.asarray(ids, dtype=np.int64)
            except OverflowError:
                raise InvalidInput(
                    f"input[{i}] has a token id outside the vocabulary (0..{self.vocab_size - 1}).", param="input"
                ) from None
            if arr.ndim != 1 or arr.size == 0:
                raise InvalidInput(f"input[{i}] must be a non-empty list of token ids.", param="input")
            if arr.min() < 0 or arr.max() >= self.vocab_size:
                raise InvalidInput(
                    f"input[{i}] has a token id outside the vocabulary (0..{self.vocab_size - 1}).",
                    param="input",
                )
            if arr.size > self.max_length:
                if truncate is Truncate.NONE:
                    raise InputTooLong(
                        f"input[{i}] has {arr.size} tokens, over the model's maximum of "
                        f"{self.max_length}, and truncate is 'none'.",
                        param="input",
                    )
                arr = arr[: self.max_length] if truncate is Truncate.END else arr[-self.max_length :]
            seqs.append(arr)
        return seqs

    def count(self, texts: list[str]) -> list[int]:
        return [len(s) for s in self.encode(texts)]
