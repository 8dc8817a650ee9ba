"""Cross-encoders: one relevance score a (query, document) pair, as sentence-transformers'
`CrossEncoder.predict` gives it.

A pair is tokenized as one sequence by the tokenizer's pair template ([CLS] q [SEP] d [SEP] for
BERT), truncated as sentence-transformers does (`longest_first`: tokens come off the longer side
first, so an over-long document is cut before the query is touched). The graph (optimum's
text-classification export) gives logits; the model's own activation turns them into scores
(sigmoid for one label, identity for several, or what its config names).

A pair's segment (token type) rides in the id array itself, in bit SEGMENT_SHIFT of each id, so
a pair is one int64 sequence like any text's: the batcher, the chunking and the padding need no
change, and the session splits ids from segments when it feeds the graph (models.backends.feed).
Knows nothing of Ray, HTTP or caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.errors import InvalidInput, InvalidOption
from models.head import ACTIVATIONS
from models.specs import ModelSpec

SEGMENT_SHIFT = 32
ID_MASK = (1 << SEGMENT_SHIFT) - 1
# sentence-transformers' defaults (CrossEncoder.get_default_activation_fn).
SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"


def default_activation(num_labels: int) -> str:
    return SIGMOID if num_labels == 1 else IDENTITY


def pack(ids: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """One int64 sequence: each id with its segment in bit SEGMENT_SHIFT."""
    return np.asarray(ids, dtype=np.int64) | (np.asarray(segments, dtype=np.int64) << SEGMENT_SHIFT)


def unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids, segments) of a padded batch; segments None when no id carries one (a text)."""
    segments = packed >> SEGMENT_SHIFT
    if not segments.any():
        return packed, None
    return packed & ID_MASK, segments


def activate(spec: ModelSpec, logits: np.ndarray) -> np.ndarray:
    """The model's own activation on its logits: (n,) scores for one label, (n, labels) else."""
    fn = ACTIVATIONS[spec.extra.get("activation") or default_activation(spec.dimension)]
    scores = np.asarray(fn(logits.astype(np.float32)), dtype=np.float32)
    return scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores


@dataclass
class Pairs:
    """One request's pairs as the model reads them."""

    seqs: list[np.ndarray]  # packed ids, one sequence a document
    tokens: int  # tokens the model reads, special tokens included


class PairTokenizer:
    """(query, documents) -> one packed sequence a pair, at most `spec.max_seq_length` tokens."""

    def __init__(self, path: Path, spec: ModelSpec):
        self.spec = spec
        self.max_length = spec.max_seq_length
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_length, strategy="longest_first")
        self._plain = Tokenizer.from_file(str(path))  # for max_tokens_per_doc: text tokens only
        self._plain.no_padding()
        self._plain.no_truncation()

    def cut(self, documents: list[str], max_tokens: int) -> list[str]:
        """Each document cut after its first `max_tokens` tokens (Cohere's max_tokens_per_doc)."""
        out = []
        for doc, e in zip(documents, self._plain.encode_batch(documents, add_special_tokens=False)):
            out.append(doc if len(e.offsets) <= max_tokens else doc[: e.offsets[max_tokens - 1][1]])
        return out

    def encode(self, query: str, documents: list[str], max_tokens_per_doc: int | None = None) -> Pairs:
        if max_tokens_per_doc is not None:
            if max_tokens_per_doc < 1:
                raise InvalidOption("max_tokens_per_doc must be at least 1.", param="max_tokens_per_doc")
            documents = self.cut(documents, max_tokens_per_doc)
        encodings = self._tok.encode_batch([(query, d) for d in documents])
        seqs = [pack(np.asarray(e.ids), np.asarray(e.type_ids)) for e in encodings]
        return Pairs(seqs, sum(len(s) for s in seqs))


def check_pairs(query: str, documents: list[str], max_documents: int) -> None:
    """What every front door refuses before anything is tokenized."""
    if not query or not query.strip():
        raise InvalidInput("query must be a non-empty string.", param="query")
    if not documents:
        raise InvalidInput("documents must not be empty.", param="documents")
    if len(documents) > max_documents:
        raise InvalidInput(
            f"documents has {len(documents)} items; at most {max_documents} are allowed per request.",
            param="documents",
        )
    for i, d in enumerate(documents):
        if not d or not d.strip():
            raise InvalidInput(f"documents[{i}] is an empty or blank string.", param="documents")


def rank(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Document indices, best first (ties: input order), the first `top_n` of them."""
    key = scores if scores.ndim == 1 else scores.max(axis=1)
    order = np.argsort(-key, kind="stable").tolist()
    return order if top_n is None else order[:top_n]


class Reranker:
    """A cross-encoder run in this process: tokenize the pairs, run the encoder, activate.
    For notebooks and tests; the service splits these steps between ingress and encoders."""

    def __init__(self, encoder):
        self.encoder = encoder  # models.encoder.Encoder of a task="rerank" spec
        self.pairs = PairTokenizer(encoder.artifacts.tokenizer_path, encoder.spec)

    def score(self, query: str, documents: list[str], max_tokens_per_doc: int | None = None) -> np.ndarray:
        pairs = self.pairs.encode(query, documents, max_tokens_per_doc)
        return activate(self.encoder.spec, self.encoder.encode_ids(pairs.seqs))

    def predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Scores of arbitrary (query, document) pairs, as CrossEncoder.predict takes them."""
        seqs = [s for q, d in pairs for s in self.pairs.encode(q, [d]).seqs]
        return activate(self.encoder.spec, self.encoder.encode_ids(seqs))
