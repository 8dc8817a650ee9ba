"""Texts -> unit float vectors for `embedserve eval`, exactly as a user's search gets them.

Two sources, one contract (`Embedder.embed`): the in-process engine (models.encoder.Encoder and
the service's ModelRuntime, built from the same Settings as `embedserve serve` and `batch` build
them: prompts per input type, long-text windows, length-sorted rounds) or a running service
(`POST /v1/embeddings` with `input_type` and `truncate`, float vectors as base64). Either gives
full-dimension unit vectors; every `dimensions` and encoding is derived from them afterwards
with models.postprocess, the service's own post-processing (and its published int8 scales).
Vectors are cached per (texts, prompt, truncation) for the run: options that need the same
vectors (every encoding, every size, input types of a model without prompts) embed once.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.postprocess import OutputOptions, postprocess

REQUEST_INPUTS = 128  # texts per HTTP request


class ServiceError(RuntimeError):
    """The service refused or could not be reached: the message is one line."""


@dataclass
class Embedder:
    """What both sources share: the model's facts, and a vector cache for the run."""

    model_id: str
    variant: str
    dimension: int
    window_tokens: int
    int8_scales: dict[int, float]
    prompts: dict[str, str]  # input type -> prompt ({} when the model declares none)
    allows_dimensions: Callable[[int], bool]
    cache: dict = field(default_factory=dict, repr=False)
    windows: dict = field(default_factory=dict, repr=False)  # texts key -> windows per text, of the last window call

    def prompt(self, input_type: str | None) -> str:
        return self.prompts.get(input_type, "") if input_type else ""

    def embed(self, key: str, texts: list[str], input_type: str | None, truncate: str, tick=lambda n: None) -> np.ndarray:
        """Unit float32 vectors (full dimension) of `texts`, computed once for the same texts,
        prompt and truncation; `key` names the texts ("queries", "corpus") for `windows`."""
        ck = (key, hash(tuple(texts)), self.prompt(input_type), truncate)
        if ck not in self.cache:
            truncated = self.cache.get((*ck[:3], "end"), (None,))[0] if truncate == "window" else None
            self.cache[ck] = self._embed(texts, input_type, truncate, tick, truncated)
        else:
            tick(len(texts))
        vectors, windows = self.cache[ck]
        if truncate == "window":
            self.windows[key] = windows
        return vectors

    def _embed(self, texts, input_type, truncate, tick, truncated=None) -> tuple[np.ndarray, list[int]]:
        """(vectors, windows per text). `truncated`: the same texts' vectors with truncate=end,
        where known (a text that fits the window is one window: the same vector)."""
        raise NotImplementedError


class LocalEmbedder(Embedder):
    """The in-process engine, as `embedserve batch` builds it (serving/batch/)."""

    @classmethod
    def load(cls, model: str, variant: str, settings) -> "LocalEmbedder":
        from models.artifacts import ModelArtifacts
        from models.encoder import Encoder
        from models.specs import resolve_model
        from serving.batch.engine import runtime_for

        spec = resolve_model(model)
        options = settings.encoder_options() | {"variant": variant}
        encoder = Encoder(spec, ModelArtifacts.load(settings.artifact_dir, spec), **options)
        runtime = runtime_for(spec, settings, encoder.variant)
        self = cls(spec.id, encoder.variant, spec.dimension, spec.max_seq_length, dict(encoder.artifacts.int8_scales),
                   dict(runtime.prompts), spec.allows_dimensions)
        self.encoder, self.runtime, self.spec = encoder, runtime, spec
        return self

    def _embed(self, texts, input_type, truncate, tick, truncated=None):
        from models.prompts import resolve_prompt
        from models.tokenizer import Truncate
        from serving.batch.engine import encode_sorted
        from serving.pipeline.runtime import pool_units

        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        windows: list[int] = []
        prompt = resolve_prompt(self.runtime.prompts, input_type)
        step = 4096  # texts tokenized and embedded at a time: bounded memory on a large corpus
        for lo in range(0, len(texts), step):
            units = self.runtime.units(texts[lo:lo + step], Truncate.parse(truncate), prompt)
            windows += [len(u) for u in units]
            todo = list(range(len(units)))
            if truncated is not None:  # only the texts over the window need embedding again
                vectors[lo:lo + len(units)] = truncated[lo:lo + len(units)]
                todo = [i for i, u in enumerate(units) if len(u) > 1]
                tick(len(units) - len(todo))
            if not todo:
                continue
            units = [units[i] for i in todo]
            seqs = [s for unit in units for s in unit]
            ticks = tick if all(len(u) == 1 for u in units) else (lambda n: None)
            pooled = pool_units(encode_sorted(self.encoder, seqs, ticks), units)
            if ticks is not tick:
                tick(len(units))
            vectors[[lo + i for i in todo]] = postprocess(pooled, self.spec, OutputOptions())
        return vectors, windows


class ServiceEmbedder(Embedder):
    """A running embedserve, through its OpenAI-compatible route (`POST /v1/embeddings`)."""

    @classmethod
    def load(cls, url: str, model: str, api_key: str | None = None) -> "ServiceEmbedder":
        url = url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        cards = call(url + "/v1/models", None, headers)["data"]
        card = next((m for m in cards if model == m["id"] or model in m.get("aliases", [])), None)
        if card is None:
            raise ServiceError(f"{url} does not serve {model!r} (it serves {', '.join(m['id'] for m in cards)})")
        sizes = card.get("matryoshka_dimensions")
        sizes = None if sizes == "any" else set(sizes or ())
        self = cls(card["id"], (card.get("engine") or {}).get("variant", "service"), card["dimension"],
                   card["window_tokens"], {s["dimensions"]: s["scale"] for s in card["int8_scales"]},
                   dict(card.get("prompts") or {}),
                   lambda d, sizes=sizes, full=card["dimension"]: 1 <= d <= full and (sizes is None or d in sizes))
        self.url, self.headers = url, headers
        return self

    def _embed(self, texts, input_type, truncate, tick, truncated=None):
        out, windows = [], []
        for lo in range(0, len(texts), REQUEST_INPUTS):
            body = {"model": self.model_id, "input": texts[lo:lo + REQUEST_INPUTS], "encoding_format": "base64",
                    "truncate": truncate}
            if input_type:
                body["input_type"] = input_type
            data = sorted(call(self.url + "/v1/embeddings", body, self.headers)["data"], key=lambda d: d["index"])
            out += [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
            windows += [d.get("windows") or 1 for d in data]
            tick(len(data))
        return np.vstack(out).astype(np.float32) if out else np.empty((0, self.dimension), np.float32), windows


def call(url: str, body: dict | None, headers: dict, timeout: float = 300) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise ServiceError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"{url}: {getattr(exc, 'reason', exc)}") from None
