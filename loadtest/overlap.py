"""Overlapping rounds against one round at a time, in-process (loadtest/FINDINGS.md, "Overlapping
rounds"): the service's continuous batcher on the engine it runs, under a closed loop of callers
with no HTTP between (32 callers of one text, as `make bench`'s single-text row; 4 callers of 64
texts, as its bulk row), the two batchers taking turns pass by pass on the same corpus texts.
Texts/s, the process's CPU cores used, and texts per round.

    python -m loadtest.overlap ARTIFACT_DIR [--model all-MiniLM-L6-v2] [--passes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from loadtest.workload import Corpus
from models.artifacts import ModelArtifacts
from models.continuous_batcher import ContinuousBatcher
from models.encoder import Encoder, EncodeStats
from models.run_planner import round_tokens
from models.specs import resolve_model

LOADS = {"32 callers of 1 text": (32, 1), "4 callers of 64 texts": (4, 64)}


async def closed_loop(enc: Encoder, seqs: list, overlap: bool, clients: int, per_call: int,
                      wait_s: float, max_tokens: int) -> tuple[float, float, float]:
    """Texts/s, CPU cores and texts a round of `clients` callers sending `per_call` texts a call
    until every text of `seqs` is done."""
    rounds: list[int] = []

    def run_round(flat, each=None, started=None):
        rounds.append(len(flat))
        stats = EncodeStats()
        return enc.encode_ids(flat, stats, each=each, started=started), stats

    batcher = ContinuousBatcher(run_round, round_tokens(max_tokens), wait_s, overlap=overlap)
    starts = iter(range(0, len(seqs), per_call))

    async def client() -> None:
        for k in starts:
            await batcher.submit(seqs[k : k + per_call])

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    batcher.close()
    return len(seqs) / wall, cpu / wall, sum(rounds) / len(rounds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.overlap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact_dir")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--passes", type=int, default=3)
    a = p.parse_args(argv)
    from serving.settings import Settings

    settings = Settings(providers=["cpu"])
    spec = resolve_model(a.model)
    enc = Encoder(spec, ModelArtifacts.load(Path(a.artifact_dir), spec), **settings.encoder_options())
    print(enc.summary(), flush=True)
    if enc.session.streams < 2:
        print("one stream here: rounds cannot overlap", file=sys.stderr)
        return 2
    seqs = enc.tokenize(Corpus.load(spec.id, Path(a.artifact_dir)).texts)
    wait_s = settings.batch_wait_timeout_ms / 1000
    print("| load (pass) | one round at a time | overlapping rounds | overlapping / one at a time |", flush=True)
    print("|---|---:|---:|---:|", flush=True)
    for n in range(1, a.passes + 1):
        for name, (clients, per_call) in LOADS.items():
            cells, rates = [], []
            for overlap in (False, True):
                rate, cores, texts = asyncio.run(
                    closed_loop(enc, seqs, overlap, clients, per_call, wait_s, settings.max_batch_tokens))
                cells.append(f"{rate:.1f} texts/s, {cores:.2f} cores, {texts:.1f} texts a round")
                rates.append(rate)
            print(f"| {name} ({n}) | {cells[0]} | {cells[1]} | {rates[1] / rates[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
