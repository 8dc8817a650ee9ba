"""What the load generator sends: texts from the corpus the repository carries, their token
counts (the model's own tokenizer, computed once up front), a text-length mix and a share
of repeated texts.

Repeated texts are corpus texts verbatim, drawn from a "hot set" (so, once seen, the
service's cache answers them). Every other text is made unique by a prefix of two whole
words from the model's vocabulary: exactly two more tokens, so its token count is still
known without tokenizing it again (checked when the workload is built).
"""

from __future__ import annotations

import argparse
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from models.artifacts import ModelArtifacts
from models.corpus import read_jsonl
from models.specs import ModelSpec, resolve_model
from models.tokenizer import TextTokenizer

CORPUS_PATH = Path(__file__).parent / "data" / "corpus.jsonl"

# Named token-count buckets for --length-mix (tokens as the model sees them, specials included).
BUCKETS: dict[str, tuple[int, int]] = {"short": (1, 32), "medium": (33, 96), "long": (97, 1 << 30)}


def artifact_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("EMBEDSERVE_ARTIFACT_DIR")
    if env:
        return Path(env)
    from models.artifacts import default_artifact_dir

    return default_artifact_dir()


def load_tokenizer(model: str | ModelSpec, artifacts: str | Path | None = None) -> TextTokenizer:
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    return TextTokenizer(ModelArtifacts.load(artifact_dir(artifacts), spec).tokenizer_path, spec)


@dataclass(frozen=True)
class Corpus:
    """Texts and their token counts under one model's tokenizer (truncation included)."""

    texts: list[str]
    tokens: list[int]
    model: str
    max_length: int
    source: str = str(CORPUS_PATH)
    tokenizer: TextTokenizer | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        model: str = "all-MiniLM-L6-v2",
        artifacts: str | Path | None = None,
        path: str | Path = CORPUS_PATH,
        limit: int | None = None,
    ) -> "Corpus":
        spec = resolve_model(model)
        texts = [t for t in read_jsonl(Path(path)) if t]
        if limit is not None:
            texts = texts[:limit]
        if not texts:
            raise ValueError(f"no texts in {path}")
        tok = load_tokenizer(spec, artifacts)
        return cls(texts, tok.count(texts), spec.id, spec.max_seq_length, str(path), tok)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int) -> "Corpus":
        """The first n texts (repeating the corpus if n is larger than it)."""
        idx = [i % len(self.texts) for i in range(n)]
        return Corpus([self.texts[i] for i in idx], [self.tokens[i] for i in idx], self.model,
                      self.max_length, self.source, self.tokenizer)

    def stats(self) -> dict:
        t = np.asarray(self.tokens)
        return {
            "texts": int(t.size),
            "tokens_total": int(t.sum()),
            "tokens_mean": round(float(t.mean()), 1),
            "tokens_p50": float(np.percentile(t, 50)),
            "tokens_p90": float(np.percentile(t, 90)),
            "tokens_max": int(t.max()),
            "truncated_at": self.max_length,
            "source": self.source,
            "model": self.model,
        }


def parse_mix(spec: str | None) -> list[tuple[tuple[int, int], float]] | None:
    """`corpus` (or empty): the corpus' own length distribution. Otherwise comma-separated
    `bucket=weight` with bucket one of short (1-32 tokens), medium (33-96), long (97+)
    or a range `lo-hi`, e.g. `short=0.7,long=0.3` or `1-16=1,200-256=1`."""
    if spec is None or spec.strip() in ("", "corpus"):
        return None
    out = []
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name in BUCKETS:
            bounds = BUCKETS[name]
        elif m := re.fullmatch(r"(\d+)-(\d+)", name):
            bounds = (int(m[1]), int(m[2]))
        else:
            raise ValueError(f"unknown length bucket {name!r} (short, medium, long or lo-hi)")
        w = float(weight) if weight.strip() else 1.0
        if w < 0:
            raise ValueError(f"negative weight in length mix: {part!r}")
        out.append((bounds, w))
    if not out or sum(w for _, w in out) <= 0:
        raise ValueError(f"length mix {spec!r} has no positive weight")
    return out


class Uniquifier:
    """Makes a text unique with a two-word prefix from the vocabulary (+2 tokens, exactly)."""

    def __init__(self, tokenizer: TextTokenizer, salt: int = 0):
        vocab = tokenizer._by_side[next(iter(tokenizer._by_side))].get_vocab()
        candidates = sorted(w for w in vocab if re.fullmatch(r"[a-z]{3,12}", w))
        # Keep only words that are one token on their own (specials around them: 3 ids).
        counts = tokenizer.count(candidates)
        base = tokenizer.count(["x"])[0] - 1  # special tokens the tokenizer adds
        self.words = [w for w, n in zip(candidates, counts) if n == base + 1]
        if len(self.words) < 1000:
            raise RuntimeError(f"only {len(self.words)} single-token words in the vocabulary")
        self.tokenizer = tokenizer
        self.space = len(self.words) ** 2
        self.salt = salt % self.space

    def prefix(self, u: int) -> str:
        v = (self.salt + u) % self.space
        n = len(self.words)
        return f"{self.words[v % n]} {self.words[v // n]} "

    def make(self, text: str, tokens: int, u: int) -> tuple[str, int]:
        return self.prefix(u) + text, min(tokens + 2, self.tokenizer.max_length)

    def check(self, texts: list[str], tokens: list[int], sample: int = 64) -> None:
        """The +2 rule holds on a sample of the corpus (else the token counts would lie)."""
        made = [self.make(t, n, i) for i, (t, n) in enumerate(zip(texts[:sample], tokens[:sample]))]
        real = self.tokenizer.count([t for t, _ in made])
        bad = [(t, n, r) for (t, n), r in zip(made, real) if n != r]
        if bad:
            raise RuntimeError(f"unique-prefix token counts are off for {len(bad)} texts, e.g. {bad[0]!r}")


class Workload(Protocol):
    def request(self, i: int) -> tuple[list[str], int]:
        """Texts of request number i and their total tokens."""

    def describe(self) -> dict: ...


@dataclass
class FixedWorkload:
    """A given list of requests, sent in order and cycled."""

    requests: list[list[str]]
    tokens: list[int]
    name: str = "fixed"

    @classmethod
    def chunked(cls, texts: list[str], tokens: list[int], per_request: int, name: str = "fixed") -> "FixedWorkload":
        reqs, toks = [], []
        for i in range(0, len(texts), per_request):
            reqs.append(texts[i : i + per_request])
            toks.append(int(sum(tokens[i : i + per_request])))
        return cls(reqs, toks, name)

    def __len__(self) -> int:
        return len(self.requests)

    def request(self, i: int) -> tuple[list[str], int]:
        j = i % len(self.requests)
        return self.requests[j], self.tokens[j]

    def hot_texts(self) -> list[str]:
        return [t for r in self.requests for t in r]

    def describe(self) -> dict:
        sizes = [len(r) for r in self.requests]
        return {"kind": self.name, "requests": len(sizes), "texts": sum(sizes),
                "texts_per_request": max(sizes), "tokens": sum(self.tokens)}


class CorpusWorkload:
    """Requests of `texts_per_request` texts drawn from the corpus by a length mix; a share
    `repeat_share` of the texts repeat (drawn from a hot set of `hot_set` corpus texts),
    the rest are unique. Deterministic for a given seed and request number."""

    def __init__(
        self,
        corpus: Corpus,
        texts_per_request: int = 1,
        length_mix: str | None = None,
        repeat_share: float = 0.0,
        hot_set: int | None = None,
        seed: int = 0,
        salt: int | None = None,
    ):
        if not 0.0 <= repeat_share <= 1.0:
            raise ValueError("repeat_share must be within 0..1")
        if texts_per_request < 1:
            raise ValueError("texts_per_request must be at least 1")
        self.corpus = corpus
        self.per_request = texts_per_request
        self.mix_spec = length_mix or "corpus"
        self.repeat_share = repeat_share
        self.seed = seed
        mix = parse_mix(length_mix)
        idx = list(range(len(corpus)))
        if mix is None:
            self.buckets = [idx]
            self.weights = [1.0]
        else:
            self.buckets, self.weights = [], []
            for (lo, hi), w in mix:
                members = [i for i in idx if lo <= corpus.tokens[i] <= hi]
                if not members and w > 0:
                    raise ValueError(f"no corpus text has {lo}-{hi} tokens")
                self.buckets.append(members)
                self.weights.append(w)
        # The hot set: a fixed, seeded sample of the mixed corpus; repeats come from it.
        rng = random.Random(seed)
        if hot_set is None:
            hot = [i for b in self.buckets for i in b]
            hot = sorted(set(hot))
        else:
            chosen: dict[int, None] = {}
            for _ in range(max(1, hot_set) * 50):
                if len(chosen) >= max(1, hot_set):
                    break
                chosen.setdefault(self._draw(rng))
            hot = list(chosen)
        self.hot = hot
        self.uniquifier: Uniquifier | None = None
        if repeat_share < 1.0:
            if corpus.tokenizer is None:
                raise ValueError("unique texts need the corpus' tokenizer")
            self.uniquifier = Uniquifier(corpus.tokenizer, salt if salt is not None else random.randrange(1 << 40))
            self.uniquifier.check(corpus.texts, corpus.tokens)

    def _draw(self, rng: random.Random) -> int:
        bucket = self.buckets[0] if len(self.buckets) == 1 else rng.choices(self.buckets, self.weights)[0]
        return bucket[rng.randrange(len(bucket))]

    def request(self, i: int) -> tuple[list[str], int]:
        rng = random.Random(self.seed * 1_000_003 + i)
        texts, tokens = [], 0
        for k in range(self.per_request):
            if self.repeat_share > 0 and (self.repeat_share >= 1 or rng.random() < self.repeat_share):
                j = self.hot[rng.randrange(len(self.hot))]
                texts.append(self.corpus.texts[j])
                tokens += self.corpus.tokens[j]
            else:
                j = self._draw(rng)
                text, n = self.uniquifier.make(self.corpus.texts[j], self.corpus.tokens[j], i * self.per_request + k)
                texts.append(text)
                tokens += n
        return texts, tokens

    def hot_texts(self) -> list[str]:
        return [self.corpus.texts[j] for j in self.hot]

    def describe(self) -> dict:
        return {
            "kind": "corpus",
            "texts_per_request": self.per_request,
            "length_mix": self.mix_spec,
            "repeat_share": self.repeat_share,
            "hot_set": len(self.hot),
            "seed": self.seed,
            "corpus": self.corpus.stats(),
        }


def run_parser(prog: str, doc: str | None, per: str) -> argparse.ArgumentParser:
    """A benchmark's parser with the flags every benchmark has: --quick, --runs, --texts."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: --texts 128 --runs 1 (figures are not the numbers)")
    p.add_argument("--runs", type=int, default=None, help=f"runs per {per}; the median is reported (default 3)")
    p.add_argument("--texts", type=int, default=None, help="first N corpus texts (default: all of them)")
    return p


def settle_runs(p, a):
    """A benchmark's --quick / --runs / --texts settled: --quick is 128 texts, 1 run; else 3 runs."""
    if a.runs is None:
        a.runs = 1 if a.quick else 3
    if a.texts is None and a.quick:
        a.texts = 128
    if a.runs < 1:
        p.error("--runs must be at least 1")
    return a
