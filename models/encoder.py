"""The encoder: tokenize -> run the graph -> pool. Knows nothing of Ray, HTTP or caches.

At load it picks the variant to run (models.variants: `auto` = the fastest this CPU runs natively
whose measured fidelity clears the floor), opens it on its runtime (models.backends), and times a
few batch shapes to fit that runtime's batching cost model (models.run_planner.CostModel).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from models import cpu as cpuinfo
from models import variant_fidelity as fidelity
from models.artifacts import ModelArtifacts
from models.backends import Batch, Each, Reduce, Session, Started, available_backends, open_session
from models.backends.onnxruntime import gpu_available
from models.run_planner import (
    DEFAULT_COST,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    PROBE_SHAPES,
    CostModel,
    fit_cost_model,
    pad_batch,
    plan_batches,
    stepped_width,
    width_step_for,
)
from models.head import Head
from models.packing import pack_rows, packed_units, packs_alike, pool_packed, probes, vectors_alone
from models.pooling import pool
from models.postprocess import OutputOptions, postprocess
from models.specs import ModelSpec
from models.tokenizer import TextTokenizer, Truncate
from models.variants import AUTO, Choice, FidelityFloor, Variant, choose

log = logging.getLogger(__name__)


# Told of one run's rows as soon as it is done: (their indices in the call, their results).
RunDone = Callable[[list[int], np.ndarray], None]


@dataclass
class EncodeStats:
    """What one `encode` call did, for metrics and timing headers."""

    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    inference_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class Encoder:
    def __init__(
        self,
        spec: ModelSpec,
        artifacts: ModelArtifacts,
        variant: str = AUTO,
        providers: list[str] | str = "auto",
        intra_op_threads: int = 0,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        *,
        width_step: int = 1,
        streams: int = 1,
        floor: FidelityFloor = FidelityFloor(),
        cpu: cpuinfo.CpuInfo | None = None,
        calibrate: bool = True,
        pack: bool = True,
    ):
        self.spec = spec
        self.artifacts = artifacts
        self.cpu = cpu or cpuinfo.detect()
        self.providers = providers
        self.threads = intra_op_threads
        self.streams = streams
        self.tokenizer = TextTokenizer(artifacts.tokenizer_path, spec)
        self.head = Head.load(spec.dense, artifacts.root)  # Dense layers after pooling (None: none)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.width_step = 1  # exact widths while the variant is chosen (and measured), then:
        self.cost: CostModel = DEFAULT_COST
        self.packing = False  # a row a text while the variant is chosen, then (models.packing):
        self.pack_capacity = 0  # tokens a packed row holds (0: the model's maximum; loadtest.packing varies it)
        self._opened: dict[str, Session] = {}
        self.choice: Choice = choose(
            variant,
            artifacts.manifest["variants"],
            self.cpu,
            floor,
            gpu=gpu_available(providers),
            available_backends=available_backends(),
            measure=self._measure_here if fidelity.has_references(artifacts.root) else None,
        )
        self.variant = self.choice.variant.name
        self.session = self._open(self.choice.variant)
        # Runs padded to a multiple of it (models.run_planner.stepped_width).
        self.width_step = width_step_for(self.session.backend, width_step)
        # Several texts a row where the graph allows it (models.packing), checked here first.
        self.packing = pack and self._pack()
        self._opened.clear()  # sessions opened only to be measured are let go
        if self.session.precision != self.choice.variant.precision:
            log.warning(
                "%s: variant %s asks for %s but %s runs %s on this CPU (%s)",
                spec.id, self.variant, self.choice.variant.precision, self.session.backend,
                self.session.precision, ", ".join(self.cpu.features) or "no reported features",
            )
        if calibrate and self.session.describe()["device"] == "CPU":
            self.cost = self.measure_cost_model()
        log.debug("%s", self.summary())

    def _pack(self) -> bool:
        """On OpenVINO, an embedding model's graph rewritten to take packed rows, kept as the session
        if it gives the exported graph's vectors for a few probe texts packed into shared rows;
        else (another runtime, a graph this cannot rewrite, other vectors) rows of one text. The
        graph as exported is let go before the rewritten one is compiled (one model's memory at a
        time: two at once nearly tripled all-mpnet-base-v2's peak at load)."""
        if self.spec.task != "embed" or self.session.backend != "openvino":
            return False
        limit, pad = self.spec.max_seq_length, self.spec.pad_token_id
        seqs = probes(self._probe_ids(), limit)
        want = vectors_alone(self.session, self._reduce, seqs, pad)
        self.session = None
        self._opened.clear()
        path = self.artifacts.root / self.artifacts.variant(self.variant)["file"]
        why = "packed rows did not give the graph's own vectors"
        for offset in dict.fromkeys((0, pad + 1)):  # RoBERTa counts positions from pad + 1
            try:
                session = open_session(path, self.choice.variant, providers=self.providers, threads=self.threads,
                                       streams=self.streams, packed=offset)
            except ValueError as exc:  # NotPackable: not a graph the rewrite knows
                why = str(exc)
                break
            if packs_alike(want, session, self._reduce_packed, seqs, pad, limit):
                self.session = session
                return True
            del session
        log.info("%s: texts not packed: %s", self.spec.id, why)
        self.session = self._open(self.choice.variant)
        return False

    def _probe_ids(self) -> tuple[int, int]:
        """The range of token ids probes draw from: 1000..1999, inside a small vocabulary too."""
        high = min(2000, self.tokenizer.vocab_size)
        return min(1000, high // 2), high

    @classmethod
    def from_artifact_dir(cls, spec: ModelSpec, artifact_dir: Path, **kw) -> "Encoder":
        return cls(spec, ModelArtifacts.load(artifact_dir, spec), **kw)

    def _open(self, variant: Variant) -> Session:
        if variant.name not in self._opened:
            self._opened[variant.name] = open_session(
                self.artifacts.root / self.artifacts.variant(variant.name)["file"], variant,
                providers=self.providers, threads=self.threads, streams=self.streams,
            )
        return self._opened[variant.name]

    def _measure_here(self, variant: Variant) -> dict:
        """Fidelity of `variant` measured on this machine (its manifest figure was taken at
        another precision, on a CPU without the units it needs)."""
        log.warning("%s: measuring %s on this CPU (the manifest's figure was not taken at %s)",
                    self.spec.id, variant.name, variant.precision)
        # Runs while the choice is being made; __init__ then sets the chosen session.
        self.session, self.variant = self._open(variant), variant.name
        return fidelity.measure(self, self.artifacts.root, "load")

    @property
    def checksum(self) -> str:
        return self.artifacts.checksum(self.variant)

    def tokenize(self, texts: list[str], truncate: Truncate = Truncate.END) -> list[np.ndarray]:
        return self.tokenizer.encode(texts, truncate)

    def encode_ids(
        self, seqs: list[np.ndarray], stats: EncodeStats | None = None, cost: CostModel | None = None,
        each: RunDone | None = None, started: Started | None = None,
    ) -> np.ndarray:
        """Pooled full-dimension vectors (float32, not normalized), in input order. The runs are
        planned with `cost`, else with the cost model measured at load (which varies a little
        from one load to the next: a caller that must give the same bytes for the same rows, like
        the bulk job, passes a fixed one). `each(indices, vectors)` is told of each run's rows as
        soon as the run is done (a continuous batcher hands them to their callers at once);
        `started()` once every run is under way and a stream is free for the next round's
        (models.backends.Session.run_reduced)."""
        out = np.empty((len(seqs), self.spec.dimension), dtype=np.float32)
        if not seqs:
            return out
        runs = self.runs(seqs, cost)
        told = None if each is None else lambda k, vectors: each(runs[k][0], vectors)
        for texts, vectors in run_batches(self.session, runs, self.reducer, stats, told, started):
            out[texts] = vectors
        return out

    def runs(self, seqs: list[np.ndarray], cost: CostModel | None = None) -> list[tuple[list[int], Batch]]:
        """The runs `encode_ids` makes of `seqs`, in order: each run's texts (in the order of the
        vectors its reduction gives) and its padded (ids, mask)."""
        limit = self.spec.max_seq_length
        lengths = [len(s) for s in seqs]
        # Packed: rows of several texts (models.packing), planned as rows; else a row a text.
        rows = pack_rows(lengths, self.pack_capacity or limit) if self.packing else [[i] for i in range(len(seqs))]
        units, masks = packed_units(seqs, rows) if self.packing else (seqs, None)
        # A few full rows: cut into a run a stream, so no stream idles while one runs the round.
        budget = self.max_batch_tokens
        if self.packing and self.session.streams > 1:  # packing runs on OpenVINO only
            budget = min(budget, max(limit, -(-sum(lengths) // self.session.streams)))
        plan = plan_batches([len(u) for u in units], self.max_batch_size, budget, cost or self.cost,
                            self.width_step, limit)
        return [([i for r in batch for i in rows[r]],
                 pad_batch([units[r] for r in batch], self.spec.pad_token_id,
                           stepped_width(max(len(units[r]) for r in batch), self.width_step, limit),
                           None if masks is None else [masks[r] for r in batch]))
                for batch in plan]

    @property
    def reducer(self) -> Reduce:
        """A run's token states and mask -> its texts' vectors, as `runs` laid them out."""
        return self._reduce_packed if self.packing else self._reduce

    def _reduce(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A batch's token states -> its vectors: pooling, then the Dense layers if any. A
        cross-encoder's graph gives one row of logits a pair already (models.rerank)."""
        if self.spec.task == "rerank":  # a copy: the states may live in the runtime's buffers
            return np.array(hidden, dtype=np.float32)
        pooled = pool(self.spec.pooling, hidden, mask)
        return pooled if self.head is None else self.head(pooled)

    def _reduce_packed(self, hidden: np.ndarray, segs: np.ndarray) -> np.ndarray:
        """A packed run's token states -> one vector a text, in row order (models.packing)."""
        pooled = pool_packed(self.spec.pooling, hidden, segs)
        return pooled if self.head is None else self.head(pooled)

    def embed(
        self, texts: list[str], opts: OutputOptions = OutputOptions(), truncate: Truncate = Truncate.END
    ):
        """Texts -> vectors as `opts` asks (unit-length float32 by default)."""
        pooled = self.encode_ids(self.tokenize(texts, truncate))
        return postprocess(pooled, self.spec, opts, self.artifacts.int8_scales)

    def measure_cost_model(self, min_s: float = 0.02, max_repeats: int = 10) -> CostModel:
        """Times a few batch shapes on the running session and fits its cost model (the fixed
        cost of a run against the cost of a token), so batch planning fits this backend. Each
        shape: one untimed run (allocations), then the fastest of runs repeated until `min_s`
        has passed (at least two, at most `max_repeats`): quick shapes get more samples. The
        first run of each shape tells what a new shape costs over its repeat (the runtime
        prepares each shape it meets: OpenVINO ~1.3x a repeat); its median goes into the fixed
        cost of a run (models.run_planner.fit_cost_model)."""
        rng = np.random.default_rng(0)
        low, high = self._probe_ids()
        timings, new_shape = [], []
        self.session.run(np.full((1, 4), low, dtype=np.int64), np.ones((1, 4), dtype=np.int64))  # allocations
        for rows, width in PROBE_SHAPES:
            width = min(width, self.spec.max_seq_length)
            ids = rng.integers(low, high, size=(rows, width), dtype=np.int64)
            mask = np.ones_like(ids)
            t = time.perf_counter()
            self.session.run(ids, mask)
            first = time.perf_counter() - t
            best, spent, n = float("inf"), 0.0, 0
            while n < 2 or (spent < min_s and n < max_repeats):
                t = time.perf_counter()
                self.session.run(ids, mask)
                took = time.perf_counter() - t
                best, spent, n = min(best, took), spent + took, n + 1
            timings.append((rows, width, best))
            new_shape.append(first - best)
        return fit_cost_model(timings, new_shape_s=float(np.median(new_shape)))

    def describe(self) -> dict:
        """What runs and why: for logs, /v1/models and gRPC ListModels."""
        return {
            "variant": self.variant,
            **self.session.describe(),
            "cpu": self.cpu.describe(),
            "choice": self.choice.reason,
            "considered": self.choice.considered,
            "fidelity": self.choice.fidelity,
            "cost_model": {"overhead_tokens": self.cost.overhead_tokens, "attention_tokens": self.cost.attention_tokens},
            "width_step": self.width_step,
            "packed_rows": self.packing,
        }

    def summary(self) -> str:
        d = self.describe()
        fid = d["fidelity"] or {}
        fid_text = f"min cosine {fid['min_cos']:.5f}, top-10 kept {fid['top10_kept']:.4f}" if "top10_kept" in fid else "fidelity not measured"
        return (
            f"{self.spec.id}: variant {self.variant} on {d['backend']} {d['version']} ({d['device']}, "
            f"{d['precision']}, {d['threads']} threads); CPU {self.cpu.model} "
            f"[{', '.join(self.cpu.features) or 'no reported features'}]; {self.choice.reason}; {fid_text}; "
            f"cost model {self.cost.overhead_tokens:g} tokens a run, attention {self.cost.attention_tokens:g}; "
            f"{'several texts a row' if self.packing else 'a row a text'}"
        )


def run_planned(session, seqs: list[np.ndarray], plan: list[list[int]], pad_token_id: int, reduce,
                stats: EncodeStats | None = None, width_step: int = 1,
                width_limit: int | None = None, each: RunDone | None = None) -> list[tuple[list[int], np.ndarray]]:
    """Each planned batch of `seqs` padded (to `stepped_width` of its longest row), run and
    reduced (`reduce(outputs, mask)`) by `session`: (the batch's indices, its rows), in plan
    order; `stats` counts time and tokens; `each(indices, rows)` hears of each batch when it is done."""
    runs = [(batch, pad_batch([seqs[i] for i in batch], pad_token_id,
                              stepped_width(max(len(seqs[i]) for i in batch), width_step, width_limit)))
            for batch in plan]
    return run_batches(session, runs, reduce, stats, None if each is None else lambda k, rows: each(plan[k], rows))


def run_batches(session, runs: list[tuple[list[int], Batch]], reduce, stats: EncodeStats | None = None,
                each: Each | None = None, started: Started | None = None) -> list[tuple[list[int], np.ndarray]]:
    """Runs (their texts, padded (ids, mask)) run and reduced by `session`: (texts, their rows), in
    order; `stats` counts time, texts and tokens; `each(k, rows)` hears of run k when it is done;
    `started()` as the session tells it."""
    t0 = time.perf_counter()
    pooled = session.run_reduced([batch for _, batch in runs], reduce, each, started)
    if stats is not None:
        stats.inference_s += time.perf_counter() - t0
        stats.batches += len(runs)
        for texts, (_, mask) in runs:
            stats.tokens += int(np.count_nonzero(mask))
            stats.padded_tokens += mask.size
            stats.batch_sizes.append(len(texts))
    return [(texts, rows) for (texts, _), rows in zip(runs, pooled)]
