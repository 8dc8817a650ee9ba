"""The bulk job's plan: its options, where its files go under OUTPUT, the shards planned once
(kept in _job.json), and on a rerun the shards whose manifests verify, which are not redone."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from models.artifacts import ModelArtifacts
from models.prompts import prompt_table, resolve_prompt
from models.specs import resolve_model
from serving.batch import outputs
from serving.batch.engine import export_identity, output_options, run_plan
from serving.batch.inputs import Columns, InputError, Shard, detect_format, find_inputs
from serving.batch.inputs import plan as plan_shards
from serving.batch.sparse_job import sparse_options
from serving.settings import Settings
from serving.pipeline.tasks import ROUTES, WHAT

JOB_VERSION = 2
# Records a shard when --shard-rows is not given: about 1/64 of the input, a multiple of the
# first, at most the second; texts (text inputs) or requests (OpenAI batch files, up to 2,048
# texts each).
SHARD_BOUNDS = {"texts": (256, 4096), "openai": (8, 128)}

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
    top_k: int | None = None  # a sparse model: keep each text's k largest weights
    input_format: str = "auto"
    shard_rows: int | None = None
    workers: int | None = None  # None: as many as the cluster's free CPUs (or GPUs) allow
    overwrite: bool = False
    progress: bool = True


def _under(name: str) -> property:
    """A Layout property: the path `name` under OUTPUT."""
    return property(lambda self: self.root / name)


@dataclass(frozen=True)
class Layout:
    """Where a job's files go under OUTPUT."""

    root: Path

    job_file = _under("_job.json")
    shards_dir = _under("_shards")
    vectors_dir = _under("vectors")
    errors_file = _under("errors.jsonl")
    output_file = _under("output.jsonl")
    summary_file = _under("summary.json")

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
    options: dict  # dimensions, encoding_format, truncate (text inputs); truncate, top_k (a sparse model's)
    settings: dict

    def wire(self) -> dict:
        """The job as plain data for the actors' constructor."""
        return {
            "kind": self.kind, "output": str(self.layout.root), "fingerprint": self.fingerprint,
            "model": self.model, "export": self.export, "columns": asdict(self.columns),
            "options": self.options, "settings": self.settings,
        }




def prepare(opts: BatchOptions, s: Settings) -> Job:
    """Find and check the input, then plan the job, or take up the plan already in OUTPUT."""
    files = find_inputs(opts.input)
    fmt = detect_format(files, opts.input_format)
    kind = "openai" if fmt == "openai" else "texts"
    spec = resolve_model(opts.model)
    if spec.task == "rerank" or (spec.task == "sparse" and kind == "openai"):
        raise InputError(
            f"{spec.id} is {WHAT.get(spec.task, spec.task)}: the bulk job embeds texts with a dense or sparse model"
            + (" (an OpenAI batch file: a dense one)" if kind == "openai" else "")
            + f"; serve it and use {ROUTES.get(spec.task, 'its own routes')}")
    if opts.top_k is not None and spec.task != "sparse":
        raise InputError(f"--top-k is for sparse models; {spec.id} gives dense vectors")
    export = export_identity(ModelArtifacts.load(s.artifact_dir, spec))
    if kind == "texts" and spec.task == "sparse":
        options = sparse_options(spec, opts.dimensions, opts.encoding_format, opts.truncate, opts.input_type,
                                 opts.top_k)
        artifacts = ModelArtifacts.load(s.artifact_dir, spec)
        resolve_prompt(prompt_table(spec.prompts, artifacts.prompts, s.prompts_for(spec)), opts.input_type)
    elif kind == "texts":
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
        shards, columns = plan_shards(files, fmt, opts.shard_rows, SHARD_BOUNDS[kind], opts.text_column,
                                        opts.id_column or "id", opts.id_column is not None)
        record = {"identity": identity, "fingerprint": fingerprint, "columns": asdict(columns),
                  "shards": [sh.to_dict() for sh in shards]}
        outputs.atomic_write(layout.job_file, orjson.dumps(record, option=orjson.OPT_INDENT_2))
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
            if outputs.sha256_file(job.layout.root / rel) != digest:
                return None
        except OSError:
            return None
    return m
