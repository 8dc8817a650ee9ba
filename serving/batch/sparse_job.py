"""The bulk job with a sparse (SPLADE) model: the options it takes, its engine (models.sparse, built
from the same Settings as the service's LocalSparse) and a shard's texts encoded in runs cut by a
fixed plan, so the same rows always give the same bytes (as serving.batch.engine does for dense
vectors). Its Parquet rows: `id`, `indices` (list<uint32>, ascending), `values` (list<float32>),
`tokens` (serving.batch.outputs.sparse_table)."""

from __future__ import annotations

import numpy as np

from models import cpu
from models.artifacts import ModelArtifacts
from models.run_planner import RUNS_PER_ROUND, round_tokens, split_sorted
from models.sparse import SPARSE_VARIANTS, SparseModel, SparseVector, check_top_k
from models.specs import ModelSpec
from models.tokenizer import Truncate
from serving.batch.inputs import InputError
from serving.settings import Settings


def sparse_options(spec: ModelSpec, dimensions: int | None, encoding_format: str, truncate: str,
                   input_type: str | None, top_k: int | None) -> dict:
    """A sparse job's options, or an InputError naming the flag that does not apply."""
    given = [f for f, v in (("--dimensions", dimensions is not None), ("--encoding-format", encoding_format != "float"))
             if v]
    if given:
        raise InputError(f"{', '.join(given)}: {spec.id} is a sparse model; its vectors are stored as indices and "
                         "values (--top-k keeps the largest weights)")
    if Truncate.parse(truncate) is Truncate.WINDOW:
        raise InputError(f"--truncate window is for dense vectors; {spec.id} is a sparse model (end, start or none)")
    check_top_k(top_k, "--top-k")
    return {"truncate": truncate, "input_type": input_type, "top_k": top_k}


def build_sparse_model(spec: ModelSpec, s: Settings) -> SparseModel:
    """The engine as serving.app's LocalSparse builds it, from the same Settings; inference
    threads default to the actor's CPUs, as for a dense job's engine."""
    threads = s.intra_op_threads or max(1, int(s.encoder_num_cpus))
    return SparseModel(spec, ModelArtifacts.load(s.artifact_dir, spec),
                       variant=s.variant if s.variant in SPARSE_VARIANTS else "auto", providers=s.providers,
                       intra_op_threads=threads, max_batch_size=s.max_batch_size, max_batch_tokens=s.max_batch_tokens)


def engine_record(model: SparseModel) -> dict:
    """What a shard's bytes depend on besides its rows and the job's plan (its manifest's `engine`)."""
    session = model.session.describe()
    return {"variant": model.variant, "sha256": model.checksum,
            **{k: session.get(k) for k in ("backend", "version", "precision", "threads")},
            "cpu_features": list(cpu.detect().features)}


def encode_sparse_sorted(model: SparseModel, seqs: list[np.ndarray], top_k: int | None,
                         tick=lambda n: None) -> list[SparseVector]:
    """Sparse vectors in input order. Longest first, in rounds of the service's size, each cut
    into runs by the fixed cost model models.sparse plans with: the same rows, the same runs."""
    out: list[SparseVector] = [None] * len(seqs)  # type: ignore[list-item]
    rounds = split_sorted([len(s) for s in seqs], RUNS_PER_ROUND * model.max_batch_size,
                          round_tokens(model.max_batch_tokens))
    for group in rounds:
        for i, v in zip(group, model.encode_ids([seqs[i] for i in group], top_k)):
            out[i] = v
        tick(len(group))
    return out
