"""`embedserve batch`: the bulk job (see serving.batch.command), by what each part does:
inputs (files, formats, shards), records (one shard's rows), outputs (atomic files), plan (options,
layout, resume), engine (the service's encoder), worker (the Ray Data actor), driver (the run),
openai_file (the OpenAI Batch API format) and command (the CLI subcommand)."""
