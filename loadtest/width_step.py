"""Runs padded to a width step against exact widths, on service-like rounds (loadtest/FINDINGS.md,
"Fewer shapes"): random subsets of the corpus texts (32-160 a round, as the continuous batcher's
rounds are), planned and run by two engines built alike but for their width step, alternating
round by round so both see the same machine; one cost model for both (the first engine's), so
only the padding differs. Two passes over the same rounds; real tokens/s and padded share.

    python -m loadtest.width_step ARTIFACT_DIR [--step 16] [--rounds 60] [--model all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from loadtest.workload import Corpus
from models.artifacts import ModelArtifacts
from models.encoder import EncodeStats, Encoder
from models.specs import resolve_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.width_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact_dir")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--variant", default="auto")
    p.add_argument("--step", type=int, default=16)
    p.add_argument("--rounds", type=int, default=60)
    a = p.parse_args(argv)
    from serving.settings import Settings

    spec = resolve_model(a.model)
    options = Settings(variant=a.variant, providers=["cpu"]).encoder_options()
    exact, stepped = (Encoder(spec, ModelArtifacts.load(Path(a.artifact_dir), spec), **(options | {"width_step": s}))
                      for s in (1, a.step))
    stepped.cost = exact.cost
    seqs = exact.tokenize(Corpus.load(spec.id, Path(a.artifact_dir)).texts)
    print(f"{spec.id}: {exact.variant}, cost model {exact.cost}", flush=True)
    for n in (1, 2):
        rng = np.random.default_rng(0)
        took, stats, tokens = [0.0, 0.0], [EncodeStats(), EncodeStats()], 0
        for r in range(a.rounds):
            rows = [seqs[i] for i in rng.choice(len(seqs), size=int(rng.integers(32, 160)), replace=False)]
            tokens += sum(len(s) for s in rows)
            for k in ((0, 1) if r % 2 else (1, 0)):
                t = time.perf_counter()
                (exact, stepped)[k].encode_ids(rows, stats[k])
                took[k] += time.perf_counter() - t
        pad = [1 - s.tokens / s.padded_tokens for s in stats]
        print(f"pass {n}: exact widths {tokens / took[0]:,.0f} tokens/s (padding {pad[0]:.3f}), step {a.step} "
              f"{tokens / took[1]:,.0f} tokens/s (padding {pad[1]:.3f}): {took[0] / took[1]:.3f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
