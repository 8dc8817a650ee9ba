"""Continuous batching: concurrent encode calls share encoder rounds.

A round starts the moment the encoder is free and takes every call queued by then (up to a
token budget, first come first served), so the calls that arrive while one round runs ride
the next one together. Each call is answered as soon as the runs that hold its rows are done,
not when the whole round ends, so its caller can come back while the round still runs.

When does a round wait? Only when company is on its way:
- an idle encoder whose caller says more calls follow (`submit(..., coming=n)`: requests
  admitted upstream that have not reached the encoder yet) waits for them, at most `max_wait_s`;
- after a round of several calls (one round at a time), the next one waits for that round's
  callers to come back (a closed loop of k clients sends k requests again), at most `max_wait_s`
  or 5% of the last round's time, whichever is longer. Without it, 4 clients of 32 rerank pairs
  each rode rounds of 1, 3, 1, 3 calls; with it, 4, 4, 4 (loadtest/FINDINGS.md, "Rounds that wait
  for their callers").
A call nobody follows, and the first call after a pause, start at once.

Rounds overlap where the engine has several streams (`overlap=True`): the next round is gathered
as soon as every run of the current one is under way and a stream is free (the engine tells it:
`run_round(..., started=)`), and its runs start beside the current round's last ones, so no
stream idles while a round ends and its callers come back (loadtest/FINDINGS.md, "Overlapping
rounds"). At most two rounds are in flight, and the next one does not wait for callers to come
back: a stream is free.

Why not a batch window alone (Ray Serve's `@serve.batch`): that forms a batch from whatever
arrives within the window of its first call and then queues the batch behind the running
one; under load it queues many small batches instead of one full one (measured: rounds of
1.8 texts with 32 single-text callers waiting).

Plain asyncio plus a worker thread a round in flight for the inference; it knows nothing of Ray.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from models.encoder import EncodeStats

# A round's work: token id arrays -> one result per array (pooled vectors, or a list), and what
# the runs did. It may tell `each(indices, rows)` of each run as soon as it is done (from its own
# thread; models.encoder.RunDone): a call whose rows are all done is answered then, not when the
# whole round ends, so its caller can come back while the round still runs.
RoundFn = Callable[..., tuple[Any, EncodeStats]]


# The callers of a round that come back within this long of its end count as returning (a
# closed loop: each answer is followed by the next request); a round after a longer pause
# waits for nobody.
RETURN_WINDOW_S = 0.05
# How long the next round may wait for them, as a share of the last round's time (or the
# batcher's `max_wait_s`, if longer): a few percent of the engine's time against rounds that
# hold every client's request rather than alternating small ones.
RETURN_PATIENCE = 0.05
# Rounds in flight at once when they overlap: the one whose last runs are running, and the next.
MAX_IN_FLIGHT = 2


@dataclass
class _Call:
    seqs: list[np.ndarray]
    tokens: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class RoundInfo:
    """What the round a call rode in looked like (the caller sees it in timing headers)."""

    texts: int
    calls: int
    inference_s: float
    queue_s: float  # this call's wait from submit to the start of its round


def _tell(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)


def take_round(queue: deque, max_tokens: int) -> list:
    """Calls from the head of `queue` while they fit in `max_tokens` (always at least one).
    First come, first served: a call that does not fit stays at the head for the next round."""
    taken, tokens = [], 0
    while queue:
        call = queue[0]
        if call.future.cancelled():  # its caller gave up; do no work for it
            queue.popleft()
            continue
        if taken and tokens + call.tokens > max_tokens:
            break
        taken.append(queue.popleft())
        tokens += call.tokens
    return taken


class _Round:
    """The calls of one round, answered as their rows come back run by run."""

    def __init__(self, calls: list[_Call], texts: int):
        self.calls, self.texts = calls, texts
        self.started = time.perf_counter()
        self.owner: list[tuple[int, int]] = [(ci, k) for ci, c in enumerate(calls) for k in range(len(c.seqs))]
        self.left = [len(c.seqs) for c in calls]
        self.rows: list[list] = [[None] * len(c.seqs) for c in calls]

    def info(self, call: _Call, inference_s: float) -> RoundInfo:
        return RoundInfo(self.texts, len(self.calls), inference_s, self.started - call.queued_at)

    def done(self, indices: list[int], rows) -> None:
        """On the event loop: one run's rows (indices into the round's sequences)."""
        for i, row in zip(indices, rows):
            ci, k = self.owner[i]
            self.rows[ci][k] = row
            self.left[ci] -= 1
            call = self.calls[ci]
            if self.left[ci] == 0 and not call.future.done():
                got = self.rows[ci]
                result = np.stack(got) if isinstance(got[0], np.ndarray) else got
                call.future.set_result((result, self.info(call, time.perf_counter() - self.started)))


class ContinuousBatcher:
    def __init__(
        self,
        run_round: RoundFn,
        max_round_tokens: int,
        max_wait_s: float,
        on_round: Callable[[EncodeStats], None] | None = None,
        overlap: bool = False,
    ):
        self.run_round = run_round
        self.overlap = overlap  # run_round takes `started=`: the next round may start then
        self.on_round = on_round
        self.max_round_tokens = max_round_tokens
        self.max_wait_s = max_wait_s
        self.queue: deque[_Call] = deque()
        # One round at a time (two overlapping), each in its own thread; the runtime
        # parallelizes inside a run and runs a round's runs side by side on its streams.
        self._pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT if overlap else 1, thread_name_prefix="rounds")
        self._in_flight: set[asyncio.Task] = set()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._coming = 0  # what the latest caller said: calls still on their way after it

    @property
    def queued_tokens(self) -> int:
        return sum(c.tokens for c in self.queue)

    async def submit(self, seqs: list[np.ndarray], coming: int = 0) -> tuple[np.ndarray, RoundInfo]:
        """Pooled vectors for `seqs` (in order), computed in a shared round. `coming`: how many
        more calls the caller knows to be on their way (an idle encoder waits for them)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._loop())
        call = _Call(seqs, sum(len(s) for s in seqs), loop.create_future())
        self.queue.append(call)
        self._coming = coming
        self._arrived.set()
        return await call.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        # Under load (a round of several calls), its callers come back at once (a closed loop of
        # k clients sends k again): the next round waits a little for them (for `returning`
        # calls queued in all, at most `patience` seconds) rather than run a small round now
        # and a small one after it. A lone caller, or a round after a pause, waits for nobody.
        returning, patience, idle, ended = 0, 0.0, True, 0.0
        while True:
            if not self.queue:
                self._arrived.clear()
                await self._arrived.wait()
                idle = True
                if loop.time() - ended > max(RETURN_WINDOW_S, patience):  # a pause: nobody is returning
                    returning = 0
            coming = self._coming if idle else 0  # requests admitted upstream, on their way
            if self.max_wait_s > 0 and (coming > 0 or len(self.queue) < returning):
                await self._gather(loop, returning, idle, max(self.max_wait_s, patience))
            while len(self._in_flight) >= MAX_IN_FLIGHT:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            calls = take_round(self.queue, self.max_round_tokens)
            idle = not calls
            if calls:
                started = loop.time()
                await self._start(loop, calls)
                ended = loop.time()
                # Overlapping, a free stream would idle while the next round waits for callers:
                # it takes whoever is back (measured in-process: waiting cost single texts 5%).
                returning = len(calls) + len(self.queue) if len(calls) > 1 and not self.overlap else 0
                patience = RETURN_PATIENCE * (ended - started)

    async def _gather(self, loop: asyncio.AbstractEventLoop, returning: int, idle: bool, wait_s: float) -> None:
        """Wait up to `wait_s` for the calls on their way: until `returning` calls are queued
        and (on an idle encoder) the latest caller says no more are coming, or a round's worth
        is queued."""
        deadline = loop.time() + wait_s
        while ((idle and self._coming > 0) or len(self.queue) < returning) and self.queued_tokens < self.max_round_tokens:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def _start(self, loop: asyncio.AbstractEventLoop, calls: list[_Call]) -> None:
        """Run a round of `calls`; return when it has ended, or (overlapping) when the engine
        can start the next one beside it."""
        ready = loop.create_future() if self.overlap else None
        task = loop.create_task(self._run(loop, calls, ready))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        await asyncio.wait([task] if ready is None else [task, ready], return_when=asyncio.FIRST_COMPLETED)

    async def _run(self, loop: asyncio.AbstractEventLoop, calls: list[_Call], ready: asyncio.Future | None) -> None:
        flat = [s for c in calls for s in c.seqs]
        round_ = _Round(calls, len(flat))
        kw: dict[str, Any] = {}
        if len(calls) > 1:  # a lone call is answered when its round ends anyway
            kw["each"] = lambda indices, rows: loop.call_soon_threadsafe(round_.done, indices, rows)
        if ready is not None:
            kw["started"] = lambda: loop.call_soon_threadsafe(_tell, ready)
        try:
            vectors, stats = await loop.run_in_executor(self._pool, functools.partial(self.run_round, flat, **kw))
        except Exception as exc:  # noqa: BLE001 (every caller of the round gets the error)
            for c in calls:
                if not c.future.done():
                    c.future.set_exception(exc)
            return
        if self.on_round is not None:
            self.on_round(stats)
        start = 0
        for c in calls:  # the calls not answered run by run
            n = len(c.seqs)
            if not c.future.done():
                c.future.set_result((vectors[start : start + n], round_.info(c, stats.inference_s)))
            start += n

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
