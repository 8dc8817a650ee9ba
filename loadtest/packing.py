"""Packed rows against a row a text, in-process (loadtest/FINDINGS.md, "Packed rows"): the corpus
texts in random rounds of 8 / 24 / 64 texts (single texts at 32 clients ride rounds of ~24; bulk
requests of 64) and all at once, each round run by engines alike but for packing and streams,
taking turns round by round so all see the same machine. Two passes; texts/s and padded share.

    python -m loadtest.packing ARTIFACT_DIR [--model all-MiniLM-L6-v2] [--passes 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from loadtest.workload import Corpus
from models.artifacts import ModelArtifacts
from models.encoder import Encoder, EncodeStats
from models.specs import resolve_model

ENGINES = {  # name: (pack, streams, tokens a packed row holds: 0 = the model's maximum)
    "a row a text, 2 streams": (False, 0, 0),
    "packed, 2 streams (default)": (True, 0, 0),
    "packed, 1 stream": (True, 1, 0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.packing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact_dir")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto")
    p.add_argument("--passes", type=int, default=2)
    a = p.parse_args(argv)
    from serving.settings import Settings

    spec = resolve_model(a.model)
    artifacts = ModelArtifacts.load(Path(a.artifact_dir), spec)
    options = Settings(variant=a.variant, providers=["cpu"]).encoder_options()
    engines = {}
    for name, (pack, streams, capacity) in ENGINES.items():
        engines[name] = Encoder(spec, artifacts, **(options | {"pack": pack, "streams": streams}))
        engines[name].pack_capacity = capacity
    for name, enc in engines.items():
        print(f"{name}: {enc.summary()}", flush=True)
    seqs = next(iter(engines.values())).tokenize(Corpus.load(spec.id, Path(a.artifact_dir)).texts)
    print("| rounds of | " + " | ".join(engines) + " |", flush=True)
    for n in range(1, a.passes + 1):
        for size in (8, 24, 64, len(seqs)):
            order = np.random.default_rng(n).permutation(len(seqs))
            rounds = [[seqs[i] for i in order[k : k + size]] for k in range(0, len(seqs), size)]
            took, stats = dict.fromkeys(engines, 0.0), {name: EncodeStats() for name in engines}
            for r, texts in enumerate(rounds):
                names = list(engines)
                for name in names[r % len(names):] + names[: r % len(names)]:  # each goes first in turn
                    t = time.perf_counter()
                    engines[name].encode_ids(texts, stats[name])
                    took[name] += time.perf_counter() - t
            cells = [f"{len(seqs) / took[k]:.1f} ({1 - stats[k].tokens / stats[k].padded_tokens:.0%} padding)"
                     for k in engines]
            label = "all at once" if size == len(seqs) else f"{size} texts"
            print(f"| {label} (pass {n}) | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
