"""Tokenization with `tokenizers`: truncation from the model spec, no padding (batches pad
to their own longest row), token-id input checked against the vocabulary, prompts put
before texts, and long texts cut into windows (models.windows)."""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.errors import InputTooLong, InvalidInput, InvalidOption
from models.specs import ModelSpec
from models.windows import window_count, window_spans


class Truncate(str, enum.Enum):
    END = "end"  # keep the beginning (sentence-transformers' behaviour)
    START = "start"  # keep the end
    NONE = "none"  # too long is an error
    WINDOW = "window"  # too long is cut into overlapping windows, pooled back into one vector

    @classmethod
    def parse(cls, value: str) -> "Truncate":
        try:
            return cls(value)
        except ValueError:
            raise InvalidOption(
                f"'{value}' is not a valid truncate option. Use end, start, none or window.", param="truncate"
            ) from None


def load_tokenizer(path: Path, max_length: int | None, direction: str = "right") -> Tokenizer:
    """No padding; truncation at `max_length` tokens (None: none)."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=max_length, direction=direction)
    return tok


def special_tokens(tok: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The ids the tokenizer puts before and after one text (e.g. [CLS] / [SEP], <s> / </s>)."""
    inner = tok.encode("a", add_special_tokens=False).ids
    outer = tok.encode("a").ids
    for i in range(len(outer) - len(inner) + 1):
        if outer[i : i + len(inner)] == inner:
            return np.asarray(outer[:i], dtype=np.int64), np.asarray(outer[i + len(inner) :], dtype=np.int64)
    raise ValueError("the tokenizer's post-processor does not wrap a text in special tokens")


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
        # Whole texts without special tokens: for windows, and for a prompt kept under truncate start.
        self._whole = load_tokenizer(path, None)
        self.vocab_size = self._by_side[Truncate.END].get_vocab_size()
        self.prefix, self.suffix = special_tokens(self._by_side[Truncate.END])

    def content_size(self, prompt_tokens: int = 0) -> int:
        """Text tokens one sequence holds beside the special tokens and the prompt."""
        return self.max_length - len(self.prefix) - len(self.suffix) - prompt_tokens

    def encode(self, texts: list[str], truncate: Truncate = Truncate.END, prompt: str = "") -> list[np.ndarray]:
        """One sequence per text, `prompt` before it, truncated as `truncate` says
        (Truncate.WINDOW: see `windows`)."""
        if truncate is Truncate.WINDOW:
            raise ValueError("windows come from TextTokenizer.windows")
        if prompt and truncate is Truncate.START:
            # Cutting the start of "prompt + text" would cut the prompt: keep it, cut the text.
            return [self._wrap(head, body[len(body) - min(len(body), self.content_size(len(head))) :])
                    for head, body in self._split_prompt(texts, prompt)]
        tok = self._by_side[truncate]
        encodings = tok.encode_batch_fast([prompt + t for t in texts] if prompt else texts)
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
        if truncate is Truncate.WINDOW:
            raise InvalidOption("truncate 'window' applies to text input, not token ids.", param="truncate")
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

    def windows(self, texts: list[str], overlap: int, max_windows: int, prompt: str = "") -> list[list[np.ndarray]]:
        """Per text, its windows as sequences: `prompt` and the special tokens around each run
        of at most `content_size` text tokens, overlapping by `overlap`. A text that fits is one
        sequence, the same as `encode` gives. More than `max_windows` windows is an error,
        raised before anything is embedded."""
        split = self._split_prompt(texts, prompt)
        size = self.content_size(len(split[0][0]) if split else 0)
        if size <= overlap:
            raise InvalidOption(
                f"the prompt leaves {max(size, 0)} tokens a window, not more than the overlap of {overlap}.",
                param="input_type",
            )
        out = []
        for i, (head, body) in enumerate(split):
            n = window_count(len(body), size, overlap)
            if n > max_windows:
                raise InputTooLong(
                    f"input[{i}] has {len(body)} tokens: {n} windows of {size} tokens (overlap {overlap}), "
                    f"over the limit of {max_windows} windows per text.",
                    param="input",
                )
            out.append([self._wrap(head, body[a:b]) for a, b in window_spans(len(body), size, overlap)])
        return out

    def _split_prompt(self, texts: list[str], prompt: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(prompt ids, text ids) per text, no special tokens, nothing cut. The text is
        tokenized together with the prompt, as sentence-transformers does, so that a text that
        fits gives exactly the sequence `encode` gives."""
        encodings = self._whole.encode_batch_fast([prompt + t for t in texts], add_special_tokens=False)
        head = np.asarray(self._whole.encode(prompt, add_special_tokens=False).ids if prompt else [], dtype=np.int64)
        out = []
        for text, e in zip(texts, encodings):
            ids = np.asarray(e.ids, dtype=np.int64)
            if not np.array_equal(ids[: len(head)], head):  # the prompt merged into the text's first word
                ids = np.concatenate([head, np.asarray(self._whole.encode(text, add_special_tokens=False).ids, dtype=np.int64)])
            out.append((head, ids[len(head) :]))
        return out

    def _wrap(self, head: np.ndarray, body: np.ndarray) -> np.ndarray:
        return np.concatenate([self.prefix, head, body, self.suffix]).astype(np.int64)
