"""`embedserve batch`: embed a corpus offline, on Ray Data, with the service's engine.

    INPUT   JSONL, CSV or Parquet (a file, a folder or a glob) with a text column, or an
            OpenAI Batch API input file (lines of {"custom_id", "method", "url", "body"})
    OUTPUT  a folder:
              vectors/part-NNNNN.parquet   id, embedding, tokens            (text inputs)
                                           id, indices, values, tokens      (a sparse model's)
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
import sys
from pathlib import Path

from models.errors import EmbedError
from serving.batch.driver import run_batch
from serving.batch.inputs import FORMATS, InputError
from serving.batch.plan import ENGINE_SETTINGS, BatchOptions
from serving.settings import Settings, settings_error


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
    p.add_argument("--top-k", type=int, default=None,
                   help="a sparse (SPLADE) model: keep each text's k largest weights [all non-zero ones]")
    p.add_argument("--input-format", default="auto", choices=["auto", *FORMATS],
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
        top_k=args.top_k, input_format=args.input_format,
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
