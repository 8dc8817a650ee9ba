"""What every front door shares beyond the pipeline: model descriptions, readiness, stats, keys,
and each call counted (metrics) with its failure as a core error."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from models.errors import EmbedError, NotReady
from models.prompts import accepted_input_types
from serving.api.admission import Served, admit
from serving.api.auth import check_bearer
from serving.api.errors import as_embed_error
from serving.pipeline.embed import EmbedJob, EmbedOutcome, Pipeline
from serving.pipeline.runtime import Admitted, ModelRuntime
from serving.pipeline.reranking import RerankJob, RerankOutcome, rerank
from serving.pipeline.sparse import SparseJob, SparseOutcome, SparseService, describe_sparse

INT8_RULE = "q = clip(round(x * 127 / scale), -127, 127) on the unit vector of the requested dimensions; x ~= q * scale / 127; uint8 = q + 128"


def variant_figures(rt: ModelRuntime) -> list[dict]:
    """Every exported variant with its measured fidelity (from the manifest)."""
    out = []
    for name, info in rt.artifacts.manifest["variants"].items():
        fid = info.get("fidelity") or {}
        out.append({
            "variant": name,
            "backend": info.get("backend", "onnxruntime"),
            "precision": info.get("precision", "int8" if name == "int8" else "fp32"),
            "fidelity": {k: fid[k] for k in FIDELITY_KEYS if k in fid} or None,
        })
    return out


FIDELITY_KEYS = ("min_cos", "mean_cos", "top10_kept", "texts", "long_texts", "precision", "measured_at",
                 "max_abs_diff", "ranking_equal", "pairs")  # the last three: a rerank model's
ENGINE_KEYS = ("variant", "backend", "version", "device", "precision", "threads", "streams", "choice")


def describe_engine(engine: dict) -> dict:
    """The running engine, as /v1/models and ListModels report it."""
    out = {k: engine.get(k) for k in ENGINE_KEYS}
    out["streams"] = out["streams"] or 1
    out["cpu"] = engine["cpu"]
    fid = engine.get("fidelity") or {}
    out["fidelity"] = {k: fid[k] for k in FIDELITY_KEYS if k in fid} or None
    return out


def describe_model(rt: ModelRuntime, engine: dict | None = None) -> dict:
    spec = rt.spec
    return {
        "id": spec.id,
        "aliases": list(spec.aliases),
        "task": spec.task,  # embed, rerank (a cross-encoder: dimension is its labels) or sparse (dimension: its vocabulary)
        "dimension": spec.dimension,
        "max_input_tokens": spec.max_seq_length,
        "matryoshka_dimensions": "any" if spec.matryoshka_dims is None else list(spec.matryoshka_dims),
        "matryoshka_trained": spec.matryoshka_trained,
        # How the model makes a vector (read from a user's folder at export; models.model_folder).
        "pooling": spec.pooling,
        "dense_layers": [f"{d.in_features}->{d.out_features} {d.activation.rsplit('.', 1)[-1]}" for d in spec.dense],
        "normalized_by_model": spec.normalize,
        "architecture": spec.architecture or None,
        "similarity": spec.similarity,
        "user_model": spec.user,
        "variant": rt.variant,
        "int8_scale_rule": INT8_RULE,
        "int8_scales": [{"dimensions": d, "scale": s} for d, s in sorted(rt.artifacts.int8_scales.items())],
        "quality": rt.artifacts.quality,
        "engine": describe_engine(engine) if engine else None,
        "variants": variant_figures(rt),
        "prompts": dict(rt.prompts),
        "input_types": accepted_input_types(rt.prompts),
        "prompts_declared": bool(rt.prompts),
        "window_tokens": spec.max_seq_length,
        "window_overlap_tokens": rt.window_overlap,
        "max_windows_per_text": rt.max_windows,
    }


@dataclass
class Frontend:
    pipeline: Pipeline
    api_keys: frozenset[str] = frozenset()
    max_payload_bytes: int = 8 << 20
    # POST /v1/embeddings takes token ids (Settings.accept_token_ids).
    accept_token_ids: bool = False
    # Probes one model's encoders end to end; True when they answered.
    probe: Callable[[str], Awaitable[bool]] | None = None
    # Describes what runs one model (models.encoder.Encoder.describe, wherever it runs).
    engine: Callable[[str], Awaitable[dict]] | None = None
    ready_ttl_s: float = 2.0
    # Records each outcome (serving.metrics.IngressMetrics in a replica; None in plain tests).
    metrics: object | None = None
    _ready_cache: dict = field(default_factory=dict)
    # The sparse (SPLADE) models served (serving.pipeline.sparse); None: none.
    sparse: SparseService | None = None

    @property
    def served(self) -> Served:
        """What this replica admits requests to (serving.api.admission)."""
        sparse = self.sparse.models if self.sparse is not None else None
        return Served(self.pipeline.runtimes, sparse, self.pipeline.max_inputs)

    def admit(self, job: EmbedJob | RerankJob | SparseJob, transport: str) -> Admitted:
        """serving.api.admission.admit on this replica's models; a refusal is counted as `_counted`
        counts any failure."""
        try:
            return admit(self.served, job)
        except Exception as exc:
            raise self._failed(transport, exc) from None

    def _failed(self, transport: str, exc: Exception) -> EmbedError:
        """`exc` as a core error (Ray's included), counted. Labels stay bounded: "none" with the
        error code, never the caller's model string."""
        err = as_embed_error(exc)
        if self.metrics is not None:
            self.metrics.record("none", transport, status=err.code or "error")
        return err

    async def _counted(self, transport: str, call, items: int):
        """`call()`'s outcome, for either transport: any failure leaves as a core error, and every
        outcome is counted (the served model's id on success)."""
        try:
            outcome = await call()
        except Exception as exc:
            raise self._failed(transport, exc) from None
        if self.metrics is not None:
            self.metrics.record(outcome.model_id, transport, outcome, "ok", items)
        return outcome

    async def embed(self, admitted: Admitted, transport: str) -> EmbedOutcome:
        """The dense pipeline on an admitted job, counted as `_counted` says."""
        return await self._counted(transport, lambda: self.pipeline.embed(admitted), admitted.job.count)

    async def embed_sparse(self, admitted: Admitted, transport: str) -> SparseOutcome:
        """Sparse vectors (serving.pipeline.sparse), counted as `embed`."""
        return await self._counted(transport, lambda: self.sparse.embed(admitted), len(admitted.job.texts))

    async def rerank(self, admitted: Admitted, transport: str) -> RerankOutcome:
        """serving.pipeline.reranking, counted as `embed`."""
        return await self._counted(transport, lambda: rerank(self.pipeline, admitted), len(admitted.job.documents))

    def authenticate(self, header: str | None) -> None:
        check_bearer(self.api_keys, header)

    async def models(self) -> list[dict]:
        out = []
        for key, rt in self.pipeline.runtimes.items():
            out.append(describe_model(rt, await self.engine(key) if self.engine else None))
        out.extend(describe_sparse(local) for local in (self.sparse.models.values() if self.sparse else ()))
        return out

    async def readiness(self) -> dict[str, bool]:
        """Every model loaded and answering (probed at most every `ready_ttl_s`)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._ready_cache and now - self._ready_cache["at"] < self.ready_ttl_s:
            return self._ready_cache["state"]
        state = {}
        for key, rt in self.pipeline.runtimes.items():
            try:
                state[rt.spec.id] = bool(self.probe and await asyncio.wait_for(self.probe(key), 10))
            except Exception:  # a probe that fails says "not ready", never raises
                state[rt.spec.id] = False
        for local in (self.sparse.models.values() if self.sparse else ()):
            state[local.spec.id] = True  # loaded in this replica (its session opened at start)
        self._ready_cache = {"at": now, "state": state}
        return state

    async def require_ready(self) -> dict[str, bool]:
        state = await self.readiness()
        if not all(state.values()):
            missing = ", ".join(m for m, ok in state.items() if not ok)
            raise NotReady(f"Not ready: {missing} not answering yet.")
        return state

    def stats(self) -> dict:
        cache = self.pipeline.cache.stats()
        p = self.pipeline
        return {
            "in_flight": p.in_flight.count,
            "encoder_calls": p.encoder_calls,
            "encoded_texts": p.encoded_texts,
            "cache": cache,
        }
