"""Continuous batching: calls that arrive while a round runs share the next round; every
caller gets its own vectors, in order; a failed round fails only its own callers."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import numpy as np
import pytest

from models.continuous_batcher import ContinuousBatcher, take_round
from models.encoder import EncodeStats
from tests.support.engine import encoder, fidelity_texts

ENC = "all-MiniLM-L6-v2"


class HeldRounds:
    """The real encoder, recording each round's calls; the first round waits for `release`
    so that later calls pile up behind it."""

    def __init__(self):
        self.enc = encoder(ENC)
        self.rounds: list[int] = []  # texts per round
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, seqs, each=None):
        self.started.set()
        if not self.rounds:
            self.release.wait(30)
        self.rounds.append(len(seqs))
        stats = EncodeStats()
        return self.enc.encode_ids(seqs, stats, each=each), stats


def seqs_of(texts):
    return encoder(ENC).tokenize(texts)


async def submit_while_held(batcher: ContinuousBatcher, held: HeldRounds, first, later):
    """Submit `first`; once its round runs, submit each of `later`; then let the round end."""
    first_task = asyncio.ensure_future(batcher.submit(first))
    while not held.started.is_set():
        await asyncio.sleep(0.001)
    later_tasks = [asyncio.ensure_future(batcher.submit(s)) for s in later]
    await asyncio.sleep(0.05)  # they are queued now
    held.release.set()
    return await first_task, await asyncio.gather(*later_tasks)


def test_calls_that_arrive_during_a_round_share_the_next_round():
    held = HeldRounds()
    batcher = ContinuousBatcher(held, max_round_tokens=16384, max_wait_s=0)
    texts = fidelity_texts()[:21]
    calls = [seqs_of([t]) for t in texts[1:]]

    (first, _), later = asyncio.run(submit_while_held(batcher, held, seqs_of(texts[:1]), calls))
    assert held.rounds == [1, 20]
    expected = encoder(ENC).encode_ids(seqs_of(texts))
    np.testing.assert_allclose(first, expected[:1], atol=1e-5)
    for i, (vectors, info) in enumerate(later):
        np.testing.assert_allclose(vectors, expected[i + 1 : i + 2], atol=1e-5)
        assert (info.texts, info.calls) == (20, 20)
        assert info.queue_s > 0.04  # waited behind the held round
    batcher.close()


def test_a_round_takes_calls_first_come_first_served_within_its_token_budget():
    held = HeldRounds()
    texts = fidelity_texts()[:7]
    calls = [seqs_of([t]) for t in texts[1:]]
    per_call = [int(sum(len(s) for s in c)) for c in calls]
    budget = sum(per_call[:3])  # room for the first three queued calls, not the fourth
    batcher = ContinuousBatcher(held, max_round_tokens=budget, max_wait_s=0)

    _, later = asyncio.run(submit_while_held(batcher, held, seqs_of(texts[:1]), calls))
    assert held.rounds[1] == 3
    assert sum(held.rounds) == 7
    assert [info.calls for _, info in later[:3]] == [3, 3, 3]
    batcher.close()


def test_an_idle_encoder_waits_for_the_calls_said_to_be_on_their_way():
    held = HeldRounds()
    held.release.set()
    batcher = ContinuousBatcher(held, max_round_tokens=16384, max_wait_s=2.0)
    texts = fidelity_texts()[:5]

    async def staggered():
        tasks = []
        for i, t in enumerate(texts):  # each caller says how many are still behind it
            tasks.append(asyncio.ensure_future(batcher.submit(seqs_of([t]), coming=len(texts) - 1 - i)))
            await asyncio.sleep(0.01)
        return await asyncio.gather(*tasks)

    results = asyncio.run(staggered())
    assert held.rounds == [5]
    assert {info.calls for _, info in results} == {5}
    # The round started when the last one came, not when the wait ran out.
    assert max(info.queue_s for _, info in results) < 1.0
    batcher.close()


def test_a_lone_call_with_nobody_coming_starts_at_once():
    held = HeldRounds()
    held.release.set()
    batcher = ContinuousBatcher(held, max_round_tokens=16384, max_wait_s=2.0)

    async def one():
        return await batcher.submit(seqs_of(["a search query"]), coming=0)

    _, info = asyncio.run(one())
    assert held.rounds == [1]
    assert info.queue_s < 1.0  # did not sit out the 2 s wait for company
    batcher.close()


def test_a_failed_round_fails_its_callers_and_the_next_round_still_runs():
    enc = encoder(ENC)

    def run_round(seqs, each=None):
        stats = EncodeStats()
        return enc.encode_ids(seqs, stats, each=each), stats

    batcher = ContinuousBatcher(run_round, max_round_tokens=16384, max_wait_s=0)
    out_of_vocabulary = [np.array([101, 10**9, 102], dtype=np.int64)]  # ONNX Runtime refuses the id

    async def scenario():
        with pytest.raises(Exception):
            await batcher.submit(out_of_vocabulary)
        return await batcher.submit(seqs_of(["still serving"]))

    vectors, info = asyncio.run(scenario())
    np.testing.assert_allclose(vectors, enc.encode_ids(seqs_of(["still serving"])), atol=1e-5)
    assert info.texts == 1
    batcher.close()


def test_a_cancelled_call_is_not_computed():
    held = HeldRounds()
    batcher = ContinuousBatcher(held, max_round_tokens=16384, max_wait_s=0)
    texts = fidelity_texts()[:4]

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(seqs_of(texts[:1])))
        while not held.started.is_set():
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(batcher.submit(seqs_of(texts[1:3])))
        kept = asyncio.ensure_future(batcher.submit(seqs_of(texts[3:])))
        await asyncio.sleep(0.01)
        gone.cancel()  # its caller gave up (e.g. a client disconnect or a deadline)
        held.release.set()
        await first
        return await kept

    _, info = asyncio.run(scenario())
    assert held.rounds == [1, 1]
    assert info.calls == 1
    batcher.close()


def test_take_round_always_takes_one_call_even_past_the_budget():
    class Call:
        def __init__(self, tokens):
            self.tokens = tokens
            self.future = asyncio.Future(loop=asyncio.new_event_loop())

    queue = deque([Call(500), Call(10)])
    assert [c.tokens for c in take_round(queue, max_tokens=100)] == [500]
    assert [c.tokens for c in take_round(queue, max_tokens=100)] == [10]
    assert not queue


def test_calls_are_answered_run_by_run_before_their_round_ends():
    """A call whose rows are all done is answered at once (its caller can come back while the
    round still runs): here the shared round's runs are all done, and it is held from returning."""
    enc = encoder(ENC)
    release = threading.Event()

    def run_round(seqs, each=None):
        stats = EncodeStats()
        vectors = enc.encode_ids(seqs, stats, each=each)
        if len(seqs) > 1:  # the shared round: done, but not returned
            release.wait(30)
        return vectors, stats

    batcher = ContinuousBatcher(run_round, max_round_tokens=16384, max_wait_s=0)
    texts = fidelity_texts()[:40]
    calls = [texts[1:2], texts[2:25], texts[25:40]]

    async def scenario():
        head = asyncio.ensure_future(batcher.submit(seqs_of(texts[:1])))  # a lone call's round
        await asyncio.sleep(0)
        tasks = [asyncio.ensure_future(batcher.submit(seqs_of(c))) for c in calls]  # the next round
        await head
        for _ in range(3000):
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        early = all(t.done() for t in tasks)
        release.set()
        return early, await asyncio.gather(*tasks)

    early, results = asyncio.run(scenario())
    assert early
    for c, (vectors, info) in zip(calls, results):
        assert info.calls == 3 and info.texts == 39
        np.testing.assert_allclose(vectors, enc.encode_ids(seqs_of(c)), atol=2e-4)
    batcher.close()


class CountedRounds:
    """The real encoder, recording the texts of each round (one text a call in these tests)."""

    def __init__(self):
        self.enc = encoder(ENC)
        self.rounds: list[int] = []

    def __call__(self, seqs, each=None):
        self.rounds.append(len(seqs))
        stats = EncodeStats()
        return self.enc.encode_ids(seqs, stats, each=each), stats


async def closed_loop(batcher: ContinuousBatcher, clients: int, requests: int, think_s):
    """`clients` callers, each sending its next request `think_s(client)` seconds after its answer."""
    seqs = seqs_of(["a closed loop of callers"])

    async def client(i: int):
        infos = []
        for _ in range(requests):
            _, info = await batcher.submit(seqs)
            infos.append(info)
            await asyncio.sleep(think_s(i))
        return infos

    return await asyncio.gather(*(client(i) for i in range(clients)))


def test_a_round_waits_for_the_callers_of_the_round_before_it():
    """Three callers that come back 5, 10 and 15 ms after their answers ride together every time
    (without the wait: a round of the first one back, then one of the other two)."""
    rounds = CountedRounds()
    batcher = ContinuousBatcher(rounds, max_round_tokens=16384, max_wait_s=0.1)
    asyncio.run(closed_loop(batcher, 3, 4, lambda i: 0.005 * (i + 1)))
    assert rounds.rounds == [3, 3, 3, 3]
    batcher.close()


def test_a_lone_caller_waits_for_nobody():
    rounds = CountedRounds()
    batcher = ContinuousBatcher(rounds, max_round_tokens=16384, max_wait_s=0.5)
    (infos,) = asyncio.run(closed_loop(batcher, 1, 4, lambda i: 0.001))
    assert rounds.rounds == [1, 1, 1, 1]
    assert max(info.queue_s for info in infos) < 0.1  # far under the 0.5 s it would wait for company
    batcher.close()
