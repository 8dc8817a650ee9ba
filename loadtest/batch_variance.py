"""The published batch-variance table: how far one text's vector moves with its run's
companions, per variant, on this machine (models.batch_variance).

    EMBEDSERVE_ARTIFACT_DIR=.artifacts python -m loadtest.batch_variance [--model all-MiniLM-L6-v2]

Prints a Markdown table with the CPU it ran on (model and bf16 flags) and the command.
"""

from __future__ import annotations

import argparse
import sys

from models import cpu as cpuinfo
from models.batch_variance import RUN_SIZES, measure, sample_texts
from models.corpus import evaluation_texts
from models.encoder import Encoder
from models.specs import resolve_model
from models.variants import VARIANTS
from serving.settings import Settings

MEASURED = ("fp32", "openvino-fp32", "openvino-bf16")


def variance_encoder(model: str, variant: str) -> Encoder:
    """The engine as served, except that one call is always one run, up to 64 rows of the window."""
    spec = resolve_model(model)
    return Encoder.from_artifact_dir(spec, Settings().artifact_dir, variant=variant, providers="cpu", calibrate=False,
                                     max_batch_size=max(RUN_SIZES), max_batch_tokens=max(RUN_SIZES) * spec.max_seq_length)


def table(model: str, variants: tuple[str, ...] = MEASURED) -> str:
    cpu = cpuinfo.detect()
    rows = []
    for name in variants:
        enc = variance_encoder(model, name)
        probes, short, long = sample_texts(enc, evaluation_texts())
        v = measure(enc, probes, short, long)
        rows.append(f"| {v.variant} ({VARIANTS[name].backend}) | {v.precision} | {v.max_abs_short:.1e} | {v.min_cos_short:.6f} "
                    f"| {v.max_abs_long:.1e} | {v.min_cos_long:.6f} | {'yes' if v.repeat_identical else 'NO'} |")
    flags = ", ".join(cpu.features) or "no bf16 units"
    return "\n".join([
        f"Batch variance of {model}: {len(probes)} texts of every length, each alone and then first in runs of "
        f"{', '.join(map(str, RUN_SIZES))} rows beside short (< 24 tokens) and long (the whole window) companions; "
        f"unit vectors against the text's vector alone. CPU: {cpu.model} [{flags}]. "
        f"`python -m loadtest.batch_variance --model {model}`",
        "",
        "| variant | ran at | max abs, short companions | min cosine | max abs, long companions | min cosine | same run again: same bytes |",
        "|---|---|---:|---:|---:|---:|---|",
        *rows,
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    args = p.parse_args(argv)
    print(table(args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
