"""Overlapping rounds (models.continuous_batcher with `overlap=True`, loadtest/FINDINGS.md
"Overlapping rounds"): on an OpenVINO engine of two streams, the next round starts beside the last
runs of the round before it. Every caller still gets its own vectors, at most two rounds are in
flight, and a failed round fails only its own callers."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import numpy as np
import pytest

from models.continuous_batcher import MAX_IN_FLIGHT, ContinuousBatcher
from models.encoder import Encoder, EncodeStats
from models.specs import resolve_model
from tests.support.engine import encoder, fidelity_texts
from tests.support.service import artifact_dir

ENC = "all-MiniLM-L6-v2"


@functools.cache
def two_streams() -> Encoder:
    enc = Encoder.from_artifact_dir(resolve_model(ENC), artifact_dir(), variant="openvino-fp32", providers="cpu",
                                    calibrate=False, streams=2)
    assert enc.session.streams == 2
    return enc


class TimedRounds:
    """The real two-stream encoder, recording when each round entered and left the engine."""

    def __init__(self, fail_when=None):
        self.enc = two_streams()
        self.spans: list[tuple[float, float]] = []
        self.fail_when = fail_when  # seqs -> True: this round fails once its runs are under way
        self._lock = threading.Lock()

    def __call__(self, seqs, each=None, started=None):
        began = time.perf_counter()
        stats = EncodeStats()
        vectors = self.enc.encode_ids(seqs, stats, each=each, started=started)
        with self._lock:
            self.spans.append((began, time.perf_counter()))
        if self.fail_when is not None and self.fail_when(seqs):
            raise RuntimeError("the engine failed this round")
        return vectors, stats

    def most_in_flight(self) -> int:
        return max(sum(b <= t < e for b, e in self.spans) for t, _ in self.spans)

    def overlapped(self) -> int:
        """Rounds that began before the round before them had ended."""
        spans = sorted(self.spans)
        return sum(spans[k][0] < spans[k - 1][1] for k in range(1, len(spans)))


def seqs_of(texts):
    return two_streams().tokenize(texts)


def test_two_calls_on_the_streams_at_once_each_get_their_own_results():
    enc = two_streams()
    texts = fidelity_texts()
    calls = [[b for _, b in enc.runs(seqs_of(texts[k::2]))] for k in range(2)]
    alone = [enc.session.run_reduced(batches, enc.reducer) for batches in calls]
    told = [threading.Event(), threading.Event()]
    got: list = [None, None]

    def call(k: int) -> None:
        got[k] = enc.session.run_reduced(calls[k], enc.reducer, started=told[k].set)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(t.is_set() for t in told)  # each was told its runs were under way
    for k in range(2):
        assert len(got[k]) == len(alone[k])
        for a, b in zip(got[k], alone[k]):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_failed_reduction_fails_its_call_and_the_streams_still_serve():
    enc = two_streams()
    batches = [b for _, b in enc.runs(seqs_of(fidelity_texts()[:40]))]
    assert len(batches) >= 2  # a run a stream

    def broken(hidden, mask):
        raise ValueError("a reduction that fails")

    with pytest.raises(ValueError, match="a reduction that fails"):
        enc.session.run_reduced(batches, broken)
    again = enc.session.run_reduced(batches, enc.reducer)
    assert [len(r) for r in again] == [len(ids_of) for ids_of, _ in enc.runs(seqs_of(fidelity_texts()[:40]))]


async def closed_loop(batcher: ContinuousBatcher, calls: list[list[str]], clients: int):
    """`clients` callers taking the next of `calls` as soon as they are answered."""
    pending = iter(range(len(calls)))
    out: dict[int, np.ndarray] = {}

    async def client():
        for k in pending:
            out[k], _ = await batcher.submit(seqs_of(calls[k]))

    await asyncio.gather(*(client() for _ in range(clients)))
    return out


def test_rounds_overlap_and_every_caller_gets_its_own_vectors():
    rounds = TimedRounds()
    batcher = ContinuousBatcher(rounds, max_round_tokens=16384, max_wait_s=0.005, overlap=True)
    texts = fidelity_texts()
    calls = [texts[k : k + 1 + k % 3] for k in range(96)]
    got = asyncio.run(closed_loop(batcher, calls, clients=16))
    batcher.close()
    alone = encoder(ENC)  # ONNX Runtime fp32, one call at a time
    for k, c in enumerate(calls):
        np.testing.assert_allclose(got[k], alone.encode_ids(alone.tokenize(c)), atol=2e-4)
    assert rounds.overlapped() >= 1  # a round began while the one before it still ran
    assert rounds.most_in_flight() <= MAX_IN_FLIGHT


def test_one_round_at_a_time_without_overlap():
    rounds = TimedRounds()
    batcher = ContinuousBatcher(rounds, max_round_tokens=16384, max_wait_s=0.005)
    calls = [fidelity_texts()[k : k + 2] for k in range(48)]
    asyncio.run(closed_loop(batcher, calls, clients=16))
    batcher.close()
    assert rounds.overlapped() == 0


def test_a_round_that_fails_after_its_runs_are_under_way_fails_only_its_callers():
    doomed = "a round the engine fails"
    rounds = TimedRounds(fail_when=lambda seqs: any(np.array_equal(s, seqs_of([doomed])[0]) for s in seqs))
    batcher = ContinuousBatcher(rounds, max_round_tokens=16384, max_wait_s=0, overlap=True)
    texts = fidelity_texts()[:6]

    async def scenario():
        with pytest.raises(RuntimeError, match="the engine failed this round"):
            await batcher.submit(seqs_of([doomed]))
        return await asyncio.gather(*(batcher.submit(seqs_of([t])) for t in texts))

    results = asyncio.run(scenario())
    batcher.close()
    for t, (vectors, _) in zip(texts, results):
        np.testing.assert_allclose(vectors, two_streams().encode_ids(seqs_of([t])), atol=1e-5)
