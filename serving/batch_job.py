"""`embedserve batch`: embed a corpus offline, on Ray Data, with the service's engine.

    INPUT   JSONL, CSV or Parquet (a file, a folder or a glob) with a text column, or an
            OpenAI Batch API input file (lines of {"custom_id", "method", "url", "body"})
    OUTPUT  a folder:
              vectors/part-NNNNN.parquet   id, embedding, tokens            (text inputs)
              output.jsonl                 the OpenAI batch output file     (OpenAI batch inputs)
              errors.jsonl                 every record that gave no vector, and why
              summary.json                 rows in, vectors out, errors, tokens, texts/s, wall time
              _job.json, _shards/          the plan, and a manifest for each finished shard

The input is cut into shards (fixed ranges of records), planned once. Ray Data runs them
through `map_batches` on an actor pool sized to the cluster; each actor holds one engine
(models.encoder.Encoder, built from the service's Settings) and, for each shard, reads its
records, tokenizes them, embeds them longest first in rounds the size of the service's
batching rounds (each planned into runs of the engine by its cost model),
post-processes them (models.postprocess) and writes the shard's files atomically, its
manifest last. A rerun verifies the manifests and redoes only the shards without one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from models.artifacts import ModelArtifacts
from models.batching import DEFAULT_COST, RUNS_PER_ROUND, CostModel, round_tokens, split_sorted
from models.encoder import Encoder
from models.errors import EmbedError, InputTooLong
from models.postprocess import OutputOptions, parse_format, postprocess, validate_options
from models.prompts import prompt_table, resolve_prompt
from models.specs import ModelSpec, resolve_model
from models.tokenizer import Truncate
from serving import batch_io, batch_openai
from serving.batch_io import Columns, InputError, Problem, Shard
from serving.pipeline import EmbedJob, ModelRuntime, pool_units
from serving.settings import Settings, settings_error

JOB_VERSION = 2
# Every shard's runs are planned with this fixed cost model, never with the one an engine
# measures at load (its fit moves a little with each load's timings). Under bf16 a vector moves
# ~1e-4 with the shape of its run and its companions there, so the same rows give the same bytes
# only when they are cut into the same runs: with this, a shard's plan depends on its rows and
# the job's options alone, not on timing, workers or what else ran (README, "Bulk embedding").
JOB_COST = DEFAULT_COST
# Records a shard when --shard-rows is not given: about 1/64 of the input, a multiple of the
# first, at most the second; texts (text inputs) or requests (OpenAI batch files, up to 2,048
# texts each).
SHARD_BOUNDS = {"texts": (256, 4096), "openai": (8, 128)}
TOKENIZE_CHUNK = 256
# The progress bar's words while the workers start (load and compile the model).
STARTING = "loading the model"
# Settings fields that are flags of `embedserve batch` (the engine, and where Ray is).
ENGINE_SETTINGS = (
    "artifact_dir", "variant", "fidelity_min_cos", "fidelity_top10_kept", "cpu_features", "openvino_streams",
    "providers", "intra_op_threads", "max_batch_size", "max_batch_tokens", "encoder_num_cpus", "encoder_num_gpus",
    "max_inputs", "max_payload_bytes", "accept_token_ids", "ray_address", "object_store_mb",
    "prompts", "window_overlap_tokens", "max_windows_per_text",
)


class JobConflict(InputError):
    """OUTPUT holds another job (or something else): refused rather than mixed or clobbered."""


@dataclass(frozen=True)
class BatchOptions:
    input: str
    output: Path
    model: str
    text_column: str = "text"
    id_column: str | None = None  # None: "id" where the input has that column, else row numbers
    dimensions: int | None = None
    encoding_format: str = "float"
    truncate: str = "end"
    input_type: str | None = None  # picks the model's prompt, as on the APIs
    input_format: str = "auto"
    shard_rows: int | None = None
    workers: int | None = None  # None: as many as the cluster's free CPUs (or GPUs) allow
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Layout:
    """Where a job's files go under OUTPUT."""

    root: Path

    @property
    def job_file(self) -> Path:
        return self.root / "_job.json"

    @property
    def shards_dir(self) -> Path:
        return self.root / "_shards"

    @property
    def vectors_dir(self) -> Path:
        return self.root / "vectors"

    @property
    def errors_file(self) -> Path:
        return self.root / "errors.jsonl"

    @property
    def output_file(self) -> Path:
        return self.root / "output.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    def manifest(self, shard: Shard) -> Path:
        return self.shards_dir / f"{shard.name}.json"

    def shard_errors(self, shard: Shard) -> Path:
        return self.shards_dir / f"{shard.name}.errors.jsonl"

    def shard_vectors(self, shard: Shard) -> Path:
        return self.vectors_dir / f"{shard.name}.parquet"

    def shard_output(self, shard: Shard) -> Path:
        return self.shards_dir / f"{shard.name}.output.jsonl"

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def clear(self) -> None:
        """Remove a job's own files (and nothing else) for --overwrite."""
        import shutil

        for d in (self.shards_dir, self.vectors_dir):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.job_file, self.errors_file, self.output_file, self.summary_file):
            f.unlink(missing_ok=True)


@dataclass(frozen=True)
class Job:
    """A planned job: what the driver and every actor need to know."""

    kind: str  # "texts" or "openai"
    layout: Layout
    fingerprint: str
    model: str
    export: str  # export_identity() of the model's artifacts
    columns: Columns
    shards: tuple[Shard, ...]
    options: dict  # dimensions, encoding_format, truncate (text inputs)
    settings: dict

    def wire(self) -> dict:
        """The job as plain data for the actors' constructor."""
        return {
            "kind": self.kind, "output": str(self.layout.root), "fingerprint": self.fingerprint,
            "model": self.model, "export": self.export, "columns": asdict(self.columns),
            "options": self.options, "settings": self.settings,
        }


# ---- planning and resuming ----------------------------------------------------------------


def prepare(opts: BatchOptions, s: Settings) -> Job:
    """Find and check the input, then plan the job, or take up the plan already in OUTPUT."""
    files = batch_io.find_inputs(opts.input)
    fmt = batch_io.detect_format(files, opts.input_format)
    kind = "openai" if fmt == "openai" else "texts"
    spec = resolve_model(opts.model)
    export = export_identity(ModelArtifacts.load(s.artifact_dir, spec))
    if kind == "texts":
        options = {"dimensions": opts.dimensions, "encoding_format": opts.encoding_format, "truncate": opts.truncate,
                   "input_type": opts.input_type}
        output_options(spec, options)  # refuse bad options before any work
        artifacts = ModelArtifacts.load(s.artifact_dir, spec)
        resolve_prompt(prompt_table(spec.prompts, artifacts.prompts, s.prompts_for(spec)), opts.input_type)
    else:
        given = [f for f, v in (("--dimensions", opts.dimensions), ("--encoding-format", opts.encoding_format != "float"),
                                ("--truncate", opts.truncate != "end"), ("--input-type", opts.input_type)) if v]
        if given:
            raise InputError(f"{', '.join(given)}: an OpenAI batch file carries its options in each request's body")
        options = {}
    identity = {
        "version": JOB_VERSION, "kind": kind, "format": fmt,
        "inputs": [{"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files],
        "model": spec.id, "variant": s.variant, "export": export, "options": options,
        "text_column": opts.text_column, "id_column": opts.id_column, "shard_rows": opts.shard_rows,
        "plan": run_plan(s),
    }
    fingerprint = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    layout = Layout(Path(opts.output).expanduser().resolve())
    if opts.overwrite and layout.job_file.is_file():
        layout.clear()
    stored = read_job_file(layout)
    if stored is not None:
        if stored["identity"] != identity:
            differ = sorted(k for k in identity if stored["identity"].get(k) != identity[k])
            raise JobConflict(
                f"{layout.root} holds another job (it differs in: {', '.join(differ)}); "
                "use another OUTPUT, or --overwrite to start this one there"
            )
        shards = [Shard(**d) for d in stored["shards"]]
        c = stored["columns"]
        columns = Columns(c["text"], c["id"], tuple(c["csv_header"]) if c["csv_header"] else None)
    else:
        if layout.root.exists() and any(layout.root.iterdir()):
            raise JobConflict(f"{layout.root} is not empty and holds no embedserve batch job; give a new or empty folder")
        shards, columns = batch_io.plan(files, fmt, opts.shard_rows, SHARD_BOUNDS[kind], opts.text_column,
                                        opts.id_column or "id", opts.id_column is not None)
        record = {"identity": identity, "fingerprint": fingerprint, "columns": asdict(columns),
                  "shards": [sh.to_dict() for sh in shards]}
        batch_io.atomic_write(layout.job_file, orjson.dumps(record, option=orjson.OPT_INDENT_2))
    settings = s.model_dump(mode="json", include=set(ENGINE_SETTINGS))
    settings["models"] = [spec.id]
    return Job(kind, layout, fingerprint, spec.id, export, columns, tuple(shards), options, settings)


def read_job_file(layout: Layout) -> dict | None:
    try:
        return json.loads(layout.job_file.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        raise JobConflict(f"{layout.job_file} is damaged; use --overwrite to start again") from None


def verified(job: Job, shard: Shard) -> dict | None:
    """The shard's manifest when the shard is complete: written by this job, every file it
    lists present with the checksum it records. None means the shard must be (re)done."""
    try:
        m = json.loads(job.layout.manifest(shard).read_bytes())
    except (OSError, ValueError):
        return None
    if m.get("job") != job.fingerprint or m.get("shard") != shard.index or m.get("rows") != shard.rows:
        return None
    for rel, digest in m.get("files", {}).items():
        try:
            if batch_io.sha256_file(job.layout.root / rel) != digest:
                return None
        except OSError:
            return None
    return m


# ---- the engine, as the service builds and runs it ---------------------------------------


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


# ---- the Ray Data actor -------------------------------------------------------------------


class ShardWorker:
    """A Ray Data actor (`map_batches` callable class): one engine; shards in, manifests out."""

    def __init__(self, job: dict, progress=None):
        import ray

        self.job = job
        self.layout = Layout(Path(job["output"]))
        s = Settings(**job["settings"])
        self.spec = resolve_model(job["model"])
        self.encoder = build_encoder(self.spec, s)
        here = export_identity(self.encoder.artifacts)
        if here != job["export"]:
            raise RuntimeError(
                f"the {self.spec.id} export on this node ({here[:12]}) is not the one the job was planned "
                f"with ({job['export'][:12]}): every node needs the same export"
            )
        c = job["columns"]
        self.columns = Columns(c["text"], c["id"], tuple(c["csv_header"]) if c["csv_header"] else None)
        self.runtime = runtime_for(self.spec, s, self.encoder.variant)
        if job["kind"] == "texts":
            self.options, self.width = output_options(self.spec, job["options"])
            self.truncate = Truncate.parse(job["options"]["truncate"])
            self.prompt = resolve_prompt(self.runtime.prompts, job["options"].get("input_type"))
        else:
            self.requests = batch_openai.RequestChecker(self.runtime, s.max_inputs, s.max_payload_bytes,
                                                        s.accept_token_ids)
        self.progress = progress
        self.node_id = ray.get_runtime_context().get_node_id()
        session = self.encoder.session.describe()
        # What the bytes depend on besides the rows and the job's plan (_job.json).
        self.engine = {"variant": self.encoder.variant, "sha256": self.encoder.checksum,
                       **{k: session.get(k) for k in ("backend", "version", "precision", "threads")},
                       "cpu_features": list(self.encoder.cpu.features)}

    def __call__(self, batch: dict) -> dict:
        manifests = []
        for item in batch["shard"]:
            shard = Shard(**json.loads(item))
            t0 = time.perf_counter()
            manifest = self.run_texts(shard) if self.job["kind"] == "texts" else self.run_openai(shard)
            manifest["seconds"] = round(time.perf_counter() - t0, 3)
            manifest["node_id"] = self.node_id
            manifest["engine"] = self.engine
            batch_io.atomic_write(self.layout.manifest(shard), orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            manifests.append(orjson.dumps(manifest).decode())
        return {"manifest": np.array(manifests, dtype=object)}

    def tick(self, n: int) -> None:
        if self.progress is not None and n:
            self.progress.add.remote(n)

    def manifest(self, shard: Shard, ids: list, ok: int, errors: int, texts: int, tokens: int, files: dict) -> dict:
        assert ok + errors == shard.rows, (shard.name, ok, errors, shard.rows)
        return {
            "job": self.job["fingerprint"], "shard": shard.index, "file": shard.path, "first_row": shard.first_row,
            "rows": shard.rows, "ok": ok, "errors": errors, "texts": texts, "tokens": tokens,
            "ids_sha256": batch_io.ids_digest(ids), "files": files,
        }

    # -- text inputs -> Parquet --

    def run_texts(self, shard: Shard) -> dict:
        recs = batch_io.read_records(shard, self.columns)
        problems = dict(recs.problems)
        good = [i for i, t in enumerate(recs.texts) if t is not None]
        kept, units = [], []
        for i, unit in zip(good, self.tokenize([recs.texts[i] for i in good])):
            if isinstance(unit, Problem):
                problems[i] = unit
            else:
                kept.append(i)
                units.append(unit)
        self.tick(len(problems))
        seqs = [s for unit in units for s in unit]  # a long text's windows ride as ordinary sequences
        pooled = pool_units(encode_sorted(self.encoder, seqs, self.tick), units)
        vectors = postprocess(pooled, self.spec, self.options, self.encoder.artifacts.int8_scales)
        tokens = [sum(len(s) for s in unit) for unit in units]
        table = batch_io.vectors_table([recs.ids[i] for i in kept], vectors, tokens, self.width)
        errors = [{**batch_io.record_location(shard, i), "id": recs.ids[i], "code": p.code, "message": p.message}
                  for i, p in sorted(problems.items())]
        lay = self.layout
        files = {
            lay.rel(lay.shard_vectors(shard)): batch_io.atomic_write(lay.shard_vectors(shard), batch_io.parquet_bytes(table)),
            lay.rel(lay.shard_errors(shard)): batch_io.atomic_write(lay.shard_errors(shard), batch_io.jsonl_bytes(errors)),
        }
        return self.manifest(shard, recs.ids, len(kept), len(errors), len(kept), sum(tokens), files)

    def tokenize(self, texts: list[str]) -> list[list[np.ndarray] | Problem]:
        """The sequences of each text (one, or a long text's windows), as the service makes
        them; a text too long for --truncate none, or with more windows than allowed, is a
        Problem (found text by text only in a chunk that has one)."""
        out: list[list[np.ndarray] | Problem] = []
        for i in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = texts[i : i + TOKENIZE_CHUNK]
            try:
                out.extend(self.runtime.units(chunk, self.truncate, self.prompt))
            except InputTooLong:
                for text in chunk:
                    try:
                        out.extend(self.runtime.units([text], self.truncate, self.prompt))
                    except InputTooLong as exc:
                        out.append(Problem(InputTooLong.code, too_long_message(exc, self.spec, self.truncate)))
        return out

    # -- OpenAI batch input file -> OpenAI batch output file --

    def run_openai(self, shard: Shard) -> dict:
        lines = batch_io.read_lines(shard)
        out: dict[int, bytes] = {}  # line position -> output line (200)
        bad: dict[int, bytes] = {}  # line position -> error line
        custom_ids: list = []
        accepted: list[tuple[int, str, EmbedJob, int, int]] = []  # position, custom_id, job, its units
        units: list[list[np.ndarray]] = []
        for i, raw in enumerate(lines):
            row = shard.first_row + i
            ids = batch_openai.line_ids(self.job["fingerprint"], shard.path, row)
            custom_id, body, problem = batch_openai.parse_request(raw)
            custom_ids.append(custom_id)
            if problem:
                bad[i] = batch_openai.problem_line(ids, custom_id, problem, row + 1)
                continue
            try:
                job, request_units = self.requests.check(body)
            except Exception as exc:  # the route answers every failure (4xx bad input, 500 else)
                bad[i] = batch_openai.refusal_line(ids, custom_id, exc)
                continue
            accepted.append((i, custom_id, job, len(units), len(units) + len(request_units)))
            units.extend(request_units)
        seqs = [s for unit in units for s in unit]
        pooled = pool_units(encode_sorted(self.encoder, seqs), units)  # every request's texts together
        for i, custom_id, job, lo, hi in accepted:
            ids = batch_openai.line_ids(self.job["fingerprint"], shard.path, shard.first_row + i)
            vectors = postprocess(pooled[lo:hi], self.spec, job.options, self.encoder.artifacts.int8_scales)
            tokens = int(sum(len(s) for unit in units[lo:hi] for s in unit))
            windows = [len(u) for u in units[lo:hi]] if job.truncate is Truncate.WINDOW else None
            out[i] = batch_openai.answer_line(ids, custom_id, self.spec, vectors, tokens, job.options.encoding_format,
                                              windows)
        self.tick(len(lines))
        lay = self.layout
        files = {
            lay.rel(lay.shard_output(shard)): batch_io.atomic_write(lay.shard_output(shard), b"".join(out[i] for i in sorted(out))),
            lay.rel(lay.shard_errors(shard)): batch_io.atomic_write(lay.shard_errors(shard), b"".join(bad[i] for i in sorted(bad))),
        }
        return self.manifest(shard, custom_ids, len(out), len(bad), len(seqs), int(sum(len(s) for s in seqs)), files)


# ---- the driver ---------------------------------------------------------------------------


@dataclass
class Summary:
    output: str
    kind: str
    rows_in: int
    ok: int  # vectors (text inputs) or 200 responses (OpenAI batch files)
    errors: int
    texts: int  # vectors embedded
    tokens: int
    shards: int
    shards_resumed: int  # verified from an earlier run, not redone
    texts_this_run: int
    wall_s: float  # this run, all of it: planning or verifying, Ray's start, the shards, the final files
    ray_start_s: float = 0.0  # starting a local Ray (about 0 when joining one)
    ray_stop_s: float = 0.0  # stopping the local Ray this run started
    shards_s: float = 0.0  # the Ray Data run: actors starting, then reading, embedding and writing shards
    variants: dict = field(default_factory=dict)  # shards each engine variant embedded (`auto` picks per node)

    @property
    def texts_per_s(self) -> float:
        return self.texts_this_run / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "texts_per_s": round(self.texts_per_s, 2)}

    def render(self) -> str:
        what = (f"{self.rows_in:,} rows in, {self.ok:,} vectors out, {self.errors:,} errors"
                if self.kind == "texts" else
                f"{self.rows_in:,} requests in, {self.ok:,} answered ({self.texts:,} vectors), {self.errors:,} errors")
        resumed = f"; {self.shards_resumed} of {self.shards} shards verified from an earlier run" if self.shards_resumed else ""
        ray = f" ({self.ray_start_s:.1f} s of it starting Ray)" if self.ray_start_s >= 0.1 else ""
        engines = ", ".join(f"{v} ({n} shards)" if len(self.variants) > 1 else v for v, n in self.variants.items())
        return (f"embedserve batch: {what}, {self.tokens:,} tokens; variant {engines}\n"
                f"  this run: {self.texts_this_run:,} texts in {self.wall_s:.1f} s{ray}, {self.texts_per_s:,.1f} texts/s{resumed}\n"
                f"  output: {self.output}")


class ProgressCounter:
    """A tiny Ray actor the workers tell as they go (texts embedded, bad rows found)."""

    def __init__(self):
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n

    def get(self) -> int:
        return self.done


def run_batch(opts: BatchOptions, s: Settings | None = None) -> Summary:
    """Plan (or take up) the job, run the shards that are not done on Ray Data, then write
    errors.jsonl, output.jsonl (OpenAI batch files) and summary.json."""
    s = s or Settings()
    t0 = time.perf_counter()
    job = prepare(opts, s)
    done = {sh.index: m for sh in job.shards if (m := verified(job, sh)) is not None}
    pending = [sh for sh in job.shards if sh.index not in done]
    texts_before = sum(m["texts"] for m in done.values())
    timings = {}
    if pending:
        for sh in pending:  # a shard's old files, if any, are not trusted
            job.layout.manifest(sh).unlink(missing_ok=True)
        for folder in (job.layout.shards_dir, job.layout.vectors_dir):  # writes a killed run left half done
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        fresh = run_on_ray(job, pending, done, opts, s, timings)
        done.update({m["shard"]: m for m in fresh})
    return finish(job, done, len(job.shards) - len(pending), texts_before, time.perf_counter() - t0, timings)


def run_on_ray(job: Job, pending: list[Shard], done: dict, opts: BatchOptions, s: Settings, timings: dict) -> list[dict]:
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from tqdm import tqdm

    from serving.launch import start_ray

    started = not ray.is_initialized()
    t0 = time.perf_counter()
    if started:  # else: this process is connected already (tests, notebooks): use that cluster
        start_ray(s.ray_address, object_store_mb=s.object_store_mb)
    timings["ray_start_s"] = round(time.perf_counter() - t0, 3)
    try:
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts texts
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        progress = ray.remote(num_cpus=0)(ProgressCounter).remote()
        size = pool_size(opts.workers, s, len(pending))
        ds = ray.data.from_items([{"shard": json.dumps(sh.to_dict())} for sh in pending],
                                 override_num_blocks=len(pending))
        ds = ds.map_batches(
            ShardWorker,
            batch_size=1,
            compute=ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"job": job.wire(), "progress": progress},
            num_cpus=s.encoder_num_cpus,
            num_gpus=s.encoder_num_gpus or None,
        )
        unit = "texts" if job.kind == "texts" else "requests"
        # Until the first shard's texts are done the workers load the model (most of a small job):
        # the bar says so, rather than sit at 0 without a word.
        bar = tqdm(total=sum(sh.rows for sh in job.shards), initial=sum(m["rows"] for m in done.values()),
                   unit=f" {unit}", disable=not opts.progress, dynamic_ncols=True, smoothing=0.1, file=sys.stderr,
                   desc=f"{STARTING} ({size} worker{'s' if size > 1 else ''})")
        stop = threading.Event()

        def follow() -> None:
            if bar.disable:  # --no-progress: nothing to show (a disabled bar has no description either)
                return
            base = bar.n

            def catch_up() -> None:
                n = ray.get(progress.get.remote())
                if n and bar.desc:
                    bar.set_description_str("")
                bar.update(base + n - bar.n)

            while not stop.wait(0.5):
                catch_up()
            catch_up()  # the last shards' count: a job that ends between two looks ended below its total

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        try:
            manifests = [json.loads(row["manifest"]) for row in ds.iter_rows()]
            timings["shards_s"] = round(time.perf_counter() - t0, 3)
        finally:
            stop.set()
            watcher.join()
            bar.close()
        return manifests
    finally:
        if started:
            t0 = time.perf_counter()
            ray.shutdown()
            timings["ray_stop_s"] = round(time.perf_counter() - t0, 3)


def pool_size(requested: int | None, s: Settings, pending: int) -> int:
    """Actors: as asked, else as many as the cluster's free CPUs (GPUs with
    encoder_num_gpus > 0) hold; never more than there are shards to do."""
    import ray

    if requested:
        n = requested
    else:
        free = ray.available_resources()
        if s.encoder_num_gpus > 0:
            n = int(free.get("GPU", 0) // s.encoder_num_gpus)
        elif s.encoder_num_cpus > 0:
            n = int(free.get("CPU", 0) // s.encoder_num_cpus)
        else:
            n = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(n, pending))


def finish(job: Job, manifests: dict, resumed: int, texts_before: int, wall_s: float, timings: dict) -> Summary:
    lay = job.layout
    ordered = [manifests[sh.index] for sh in job.shards]
    batch_io.concat_files([lay.shard_errors(sh) for sh in job.shards], lay.errors_file)
    if job.kind == "openai":
        batch_io.concat_files([lay.shard_output(sh) for sh in job.shards], lay.output_file)
    total = lambda key: sum(m[key] for m in ordered)  # noqa: E731
    summary = Summary(
        output=str(lay.root), kind=job.kind, rows_in=total("rows"), ok=total("ok"), errors=total("errors"),
        texts=total("texts"), tokens=total("tokens"), shards=len(ordered), shards_resumed=resumed,
        texts_this_run=total("texts") - texts_before, wall_s=round(wall_s, 3), **timings,
        variants=dict(Counter(m.get("engine", {}).get("variant", "unknown") for m in ordered)),
    )
    if summary.rows_in != summary.ok + summary.errors or summary.rows_in != sum(sh.rows for sh in job.shards):
        raise RuntimeError(f"rows do not add up: {summary}")  # a bug, never a bad row
    batch_io.atomic_write(lay.summary_file, orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    return summary


# ---- the CLI subcommand -------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="JSONL, CSV or Parquet (a file, a folder or a glob) with a text column, or an "
                                 "OpenAI batch input file")
    p.add_argument("output", help="output folder (vectors/*.parquet or output.jsonl, errors.jsonl, summary.json); "
                                  "rerun the same command to resume")
    p.add_argument("--model", default=None, help="model id or alias, a user's exported model name, or NAME=PATH "
                   "(default: the first of EMBEDSERVE_MODELS)")
    p.add_argument("--text-column", default="text", help="column (JSON key) holding the text [text]")
    p.add_argument("--id-column", default=None, help="column holding the id [id, where the input has it; "
                                                     "else the row number]")
    p.add_argument("--dimensions", type=int, default=None, help="Matryoshka truncation to this many dimensions")
    p.add_argument("--encoding-format", default="float", choices=["float", "int8", "uint8", "binary", "ubinary"],
                   help="how vectors are stored [float]")
    p.add_argument("--truncate", default="end", choices=["end", "start", "none", "window"],
                   help="texts over the model's maximum: cut the end, cut the start, an error row, or embed the "
                        "whole text in overlapping windows pooled back into one vector [end]")
    p.add_argument("--input-type", default=None,
                   help="the model's prompt for this input type (search_query, search_document, classification, "
                        "clustering, or the model's own names), as on the APIs [none: the plain text]")
    p.add_argument("--input-format", default="auto", choices=["auto", *batch_io.FORMATS],
                   help="auto: from the file names (a JSONL file whose records have custom_id is an OpenAI batch file)")
    p.add_argument("--shard-rows", type=int, default=None,
                   help="records a shard, the unit of work and of resume [about 1/64 of the input: "
                        "256 to 4,096 texts, 8 to 128 OpenAI requests]")
    p.add_argument("--workers", type=int, default=None,
                   help="encoder actors [as many as the cluster's free CPUs hold at --encoder-num-cpus each, "
                        "or GPUs at --encoder-num-gpus]")
    p.add_argument("--overwrite", action="store_true", help="start over in an OUTPUT that holds another job")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def command(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in ENGINE_SETTINGS and v is not None}
    if args.model:  # the job's settings name its model: a user's model is then found in every worker
        overrides["models"] = [args.model]
    try:
        s = Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError: e.g. a model neither shipped nor exported
        print(f"embedserve batch: {settings_error(exc)}", file=sys.stderr)
        return 2
    opts = BatchOptions(
        input=args.input, output=Path(args.output), model=s.models[0],
        text_column=args.text_column, id_column=args.id_column, dimensions=args.dimensions,
        encoding_format=args.encoding_format, truncate=args.truncate, input_type=args.input_type,
        input_format=args.input_format,
        shard_rows=args.shard_rows, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress,
    )
    try:
        summary = run_batch(opts, s)
    except (InputError, EmbedError) as exc:
        print(f"embedserve batch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embedserve batch: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.render(), flush=True)
    return 0
