"""The bulk job's Ray Data actor (a `map_batches` callable class): one engine; for each shard it
reads the records, tokenizes them, embeds them (serving.batch.engine), post-processes them and
writes the shard's files atomically, its manifest last."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import orjson

from models.errors import InputTooLong
from models.postprocess import postprocess
from models.prompts import prompt_table, resolve_prompt
from models.specs import resolve_model
from models.tokenizer import Truncate
from serving.batch import openai_file, outputs
from serving.batch.engine import (
    build_encoder, encode_sorted, export_identity, output_options, runtime_for, too_long_message,
)
from serving.batch.inputs import Columns, Shard
from serving.batch.plan import Layout
from serving.batch.sparse_job import build_sparse_model, encode_sparse_sorted, engine_record
from serving.batch.records import Problem, read_lines, read_records, record_location
from serving.pipeline.embed import EmbedJob
from serving.pipeline.runtime import pool_units
from serving.settings import Settings

TOKENIZE_CHUNK = 256


class ShardWorker:
    """A Ray Data actor (`map_batches` callable class): one engine; shards in, manifests out."""

    def __init__(self, job: dict, progress=None):
        import ray

        self.job = job
        self.layout = Layout(Path(job["output"]))
        s = Settings(**job["settings"])
        self.spec = resolve_model(job["model"])
        self.sparse = self.spec.task == "sparse"
        self.encoder = build_sparse_model(self.spec, s) if self.sparse else build_encoder(self.spec, s)
        here = export_identity(self.encoder.artifacts)
        if here != job["export"]:
            raise RuntimeError(
                f"the {self.spec.id} export on this node ({here[:12]}) is not the one the job was planned "
                f"with ({job['export'][:12]}): every node needs the same export"
            )
        c = job["columns"]
        self.columns = Columns(c["text"], c["id"], tuple(c["csv_header"]) if c["csv_header"] else None)
        if self.sparse:  # its own tokenizer; prompts as the service's LocalSparse has them (text inputs only)
            self.truncate = Truncate.parse(job["options"]["truncate"])
            table = prompt_table(self.spec.prompts, self.encoder.artifacts.prompts, s.prompts_for(self.spec))
            self.prompt = resolve_prompt(table, job["options"].get("input_type"))
            self.top_k = job["options"].get("top_k")
        else:
            self.runtime = runtime_for(self.spec, s, self.encoder.variant)
            if job["kind"] == "texts":
                self.options, self.width = output_options(self.spec, job["options"])
                self.truncate = Truncate.parse(job["options"]["truncate"])
                self.prompt = resolve_prompt(self.runtime.prompts, job["options"].get("input_type"))
            else:
                self.requests = openai_file.RequestChecker(self.runtime, s.max_inputs, s.max_payload_bytes,
                                                            s.accept_token_ids)
        self.progress = progress
        self.node_id = ray.get_runtime_context().get_node_id()
        # What the bytes depend on besides the rows and the job's plan (_job.json).
        if self.sparse:
            self.engine = engine_record(self.encoder)
        else:
            session = self.encoder.session.describe()
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
            outputs.atomic_write(self.layout.manifest(shard), orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
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
            "ids_sha256": outputs.ids_digest(ids), "files": files,
        }

    # -- text inputs -> Parquet --

    def run_texts(self, shard: Shard) -> dict:
        recs = read_records(shard, self.columns)
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
        tokens = [sum(len(s) for s in unit) for unit in units]
        if self.sparse:  # one sequence a text (no windows)
            vectors = encode_sparse_sorted(self.encoder, seqs, self.top_k, self.tick)
            table = outputs.sparse_table([recs.ids[i] for i in kept], vectors, tokens)
        else:
            pooled = pool_units(encode_sorted(self.encoder, seqs, self.tick), units)
            vectors = postprocess(pooled, self.spec, self.options, self.encoder.artifacts.int8_scales)
            table = outputs.vectors_table([recs.ids[i] for i in kept], vectors, tokens, self.width)
        errors = [{**record_location(shard, i), "id": recs.ids[i], "code": p.code, "message": p.message}
                  for i, p in sorted(problems.items())]
        lay = self.layout
        files = {
            lay.rel(lay.shard_vectors(shard)): outputs.atomic_write(lay.shard_vectors(shard), outputs.parquet_bytes(table)),
            lay.rel(lay.shard_errors(shard)): outputs.atomic_write(lay.shard_errors(shard), outputs.jsonl_bytes(errors)),
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
                out.extend(self.units(chunk))
            except InputTooLong:
                for text in chunk:
                    try:
                        out.extend(self.units([text]))
                    except InputTooLong as exc:
                        out.append(Problem(InputTooLong.code, too_long_message(exc, self.spec, self.truncate)))
        return out

    def units(self, texts: list[str]) -> list[list[np.ndarray]]:
        if self.sparse:
            return [[s] for s in self.encoder.tokenize(texts, self.truncate, self.prompt)]
        return self.runtime.units(texts, self.truncate, self.prompt)

    # -- OpenAI batch input file -> OpenAI batch output file --

    def run_openai(self, shard: Shard) -> dict:
        lines = read_lines(shard)
        out: dict[int, bytes] = {}  # line position -> output line (200)
        bad: dict[int, bytes] = {}  # line position -> error line
        custom_ids: list = []
        accepted: list[tuple[int, str, EmbedJob, int, int]] = []  # position, custom_id, job, its units
        units: list[list[np.ndarray]] = []
        for i, raw in enumerate(lines):
            row = shard.first_row + i
            ids = openai_file.line_ids(self.job["fingerprint"], shard.path, row)
            custom_id, body, problem = openai_file.parse_request(raw)
            custom_ids.append(custom_id)
            if problem:
                bad[i] = openai_file.problem_line(ids, custom_id, problem, row + 1)
                continue
            try:
                job, request_units = self.requests.check(body)
            except Exception as exc:  # the route answers every failure (4xx bad input, 500 else)
                bad[i] = openai_file.refusal_line(ids, custom_id, exc)
                continue
            accepted.append((i, custom_id, job, len(units), len(units) + len(request_units)))
            units.extend(request_units)
        seqs = [s for unit in units for s in unit]
        pooled = pool_units(encode_sorted(self.encoder, seqs), units)  # every request's texts together
        for i, custom_id, job, lo, hi in accepted:
            ids = openai_file.line_ids(self.job["fingerprint"], shard.path, shard.first_row + i)
            vectors = postprocess(pooled[lo:hi], self.spec, job.options, self.encoder.artifacts.int8_scales)
            tokens = int(sum(len(s) for unit in units[lo:hi] for s in unit))
            windows = [len(u) for u in units[lo:hi]] if job.truncate is Truncate.WINDOW else None
            out[i] = openai_file.answer_line(ids, custom_id, self.spec, vectors, tokens, job.options.encoding_format,
                                              windows)
        self.tick(len(lines))
        lay = self.layout
        files = {
            lay.rel(lay.shard_output(shard)): outputs.atomic_write(lay.shard_output(shard), b"".join(out[i] for i in sorted(out))),
            lay.rel(lay.shard_errors(shard)): outputs.atomic_write(lay.shard_errors(shard), b"".join(bad[i] for i in sorted(bad))),
        }
        return self.manifest(shard, custom_ids, len(out), len(bad), len(seqs), int(sum(len(s) for s in seqs)), files)
