"""The engine of the bulk job, as the service builds and runs it: the encoder and the model's
runtime from the same Settings, and a shard's texts embedded in runs planned by a fixed cost model."""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import numpy as np
import orjson

from models.artifacts import ModelArtifacts
from models.run_planner import DEFAULT_COST, RUNS_PER_ROUND, CostModel, round_tokens, split_sorted
from models.encoder import Encoder
from models.errors import InputTooLong
from models.postprocess import OutputOptions, parse_format, validate_options
from models.specs import ModelSpec
from models.tokenizer import Truncate
from serving.pipeline.runtime import ModelRuntime
from serving.settings import Settings

# Every shard's runs are planned with this fixed cost model, never with the one an engine
# measures at load (its fit moves a little with each load's timings). Under bf16 a vector moves
# ~1e-4 with the shape of its run and its companions there, so the same rows give the same bytes
# only when they are cut into the same runs: with this, a shard's plan depends on its rows and
# the job's options alone, not on timing, workers or what else ran (README, "Bulk embedding").
JOB_COST = DEFAULT_COST


def export_identity(artifacts: ModelArtifacts) -> str:
    """The export a job's vectors come from: every variant's file checksum and the tokenizer's.
    (Which variant runs is the engine's choice on each node, recorded in each shard's manifest.)"""
    m = artifacts.manifest
    held = {"variants": {k: v.get("sha256") for k, v in m["variants"].items()}, "tokenizer": m.get("tokenizer_sha256")}
    return hashlib.sha256(orjson.dumps(held, option=orjson.OPT_SORT_KEYS)).hexdigest()


def run_plan(s: Settings) -> dict:
    """What cuts a shard's texts into the engine's runs; with the rows, all a shard's bytes
    depend on (beside the engine each manifest records)."""
    return {"max_batch_size": s.max_batch_size, "max_batch_tokens": s.max_batch_tokens,
            "runs_per_round": RUNS_PER_ROUND, "cost_model": asdict(JOB_COST)}


def build_encoder(spec: ModelSpec, s: Settings) -> Encoder:
    """The engine as serving/app.py's LocalEncoder builds it, from the same Settings. Inference
    threads default to the actor's CPUs (not every core: the pool fills the cores)."""
    options = s.encoder_options()
    if not s.intra_op_threads and not s.encoder_num_gpus:
        options["intra_op_threads"] = max(1, int(s.encoder_num_cpus))
    return Encoder(spec, ModelArtifacts.load(s.artifact_dir, spec), **options)


def runtime_for(spec: ModelSpec, s: Settings, variant: str) -> ModelRuntime:
    """The model's runtime as the service holds it: tokenizer, prompts, long-text windows."""
    return ModelRuntime.load(spec, ModelArtifacts.load(s.artifact_dir, spec), variant, prompts=s.prompts_for(spec),
                             window_overlap=s.window_overlap_tokens, max_windows=s.max_windows_per_text)


def encode_sorted(encoder: Encoder, seqs: list[np.ndarray], tick=lambda n: None, cost: CostModel = JOB_COST) -> np.ndarray:
    """Pooled full-dimension vectors, in input order. Longest first, cut into rounds of the
    service's size (RUNS_PER_ROUND runs' worth of tokens); the engine plans each round into
    runs at the least cost by the job's fixed model (Encoder.encode_ids), so the same rows are
    always cut into the same runs."""
    out = np.empty((len(seqs), encoder.spec.dimension), dtype=np.float32)
    rounds = split_sorted([len(s) for s in seqs], RUNS_PER_ROUND * encoder.max_batch_size,
                          round_tokens(encoder.max_batch_tokens))
    for group in rounds:
        out[group] = encoder.encode_ids([seqs[i] for i in group], cost=cost)
        tick(len(group))
    return out


def output_options(spec: ModelSpec, options: dict) -> tuple[OutputOptions, int]:
    """The post-processing options of a text job, checked against the model, and the width
    of a stored vector (bytes for packed bits)."""
    opts = OutputOptions(options["dimensions"], parse_format(options["encoding_format"]))
    Truncate.parse(options["truncate"])
    dims = validate_options(spec, opts)
    return opts, dims // 8 if opts.encoding_format.is_bits else dims


def too_long_message(exc: InputTooLong, spec: ModelSpec, truncate: Truncate) -> str:
    if truncate is Truncate.WINDOW:  # more windows than --max-windows-per-text allows
        return exc.message.replace("input[0] has", "the text has")
    return f"the text is longer than the model's maximum of {spec.max_seq_length} tokens and --truncate is none"
