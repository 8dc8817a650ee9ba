"""How far a text's vector moves with the run it rides in.

The same text is embedded alone (a run of one), then in runs of 2..64 rows beside short
companions and beside long ones (the run padded to the longest row), and each vector is
compared with its vector alone: max abs difference and min cosine of the unit vectors. A run
of the same rows in the same shape is also repeated, which must give the same bytes (the bulk
job's promise rests on it). Exact fp32 moves by float rounding only (the GEMMs' blocking
changes with the run's shape); bf16 rounds every activation to 8 bits of mantissa, so a
text's vector moves ~1e-4 with its companions.

Knows only the engine (models.encoder): `python -m loadtest.batch_variance` prints the
published table, tests/test_batch_variance.py holds the bounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.run_planner import CostModel
from models.pooling import l2_normalize

RUN_SIZES = (2, 4, 8, 16, 32, 64)
# A planner that never splits: every call of the measurement is one run of the engine.
ONE_RUN = CostModel(overhead_tokens=1e12, attention_tokens=1e6)


@dataclass(frozen=True)
class Variance:
    """One variant's figures: each probe text against its vector alone."""

    variant: str
    precision: str  # what really ran
    probes: int
    runs: int  # runs measured (probes x sizes x companion kinds)
    max_abs_short: float  # beside short companions (rows of ~10-20 tokens)
    min_cos_short: float
    max_abs_long: float  # beside long companions (padded to the model's window)
    min_cos_long: float
    repeat_identical: bool  # the same run again: the same bytes

    def to_dict(self) -> dict:
        return asdict(self)


def one_run(encoder, seqs: list[np.ndarray]) -> np.ndarray:
    """Unit vectors of `seqs` embedded as exactly one run of the engine. The encoder must take
    a run of 64 rows of its window (its max_batch_size and max_batch_tokens set so)."""
    return l2_normalize(encoder.encode_ids(seqs, cost=ONE_RUN))


def measure(encoder, probes: list[str], short: list[str], long: list[str], sizes: tuple[int, ...] = RUN_SIZES) -> Variance:
    """Each probe alone, then first in a run of each size filled with short, then long,
    companions; and one mixed run of the largest size repeated."""
    need = max(sizes) - 1
    if len(short) < need or len(long) < need:
        raise ValueError(f"need {need} short and {need} long companion texts")
    probe_seqs, short_seqs, long_seqs = encoder.tokenize(probes), encoder.tokenize(short), encoder.tokenize(long)
    alone = np.stack([one_run(encoder, [s])[0] for s in probe_seqs])
    worst = {}
    runs = 0
    for kind, companions in (("short", short_seqs), ("long", long_seqs)):
        max_abs, min_cos = 0.0, 1.0
        for n in sizes:
            for p, seq in enumerate(probe_seqs):
                v = one_run(encoder, [seq, *companions[: n - 1]])[0]
                max_abs = max(max_abs, float(np.abs(v - alone[p]).max()))
                min_cos = min(min_cos, float(v @ alone[p]))
                runs += 1
        worst[kind] = (max_abs, min_cos)
    mixed = [*probe_seqs, *short_seqs, *long_seqs][: max(sizes)]
    first, again = one_run(encoder, mixed), one_run(encoder, mixed)
    return Variance(
        variant=encoder.variant, precision=encoder.session.precision, probes=len(probes), runs=runs,
        max_abs_short=worst["short"][0], min_cos_short=worst["short"][1],
        max_abs_long=worst["long"][0], min_cos_long=worst["long"][1],
        repeat_identical=first.tobytes() == again.tobytes(),
    )


def sample_texts(encoder, texts: list[str], probes: int = 12) -> tuple[list[str], list[str], list[str]]:
    """From one corpus: probes of every length, short companions (under 24 tokens) and long
    ones (filling the model's window)."""
    window = encoder.spec.max_seq_length
    by_len = sorted(zip((len(s) for s in encoder.tokenize(texts)), texts), key=lambda x: x[0])
    step = max(1, len(by_len) // probes)
    picked = [t for _, t in by_len[::step]][:probes]
    taken = set(picked)
    short = [t for n, t in by_len if n < 24 and t not in taken]
    long = [t for n, t in by_len if n >= window and t not in taken]
    return picked, short, long
