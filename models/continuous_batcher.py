"""Continuous batching: concurrent encode calls share ONNX Runtime rounds.

A round starts the moment the encoder is free and takes every call queued by then (up to a
token budget, first come first served), so the calls that arrive while one round runs ride
the next one together. Only when the encoder has been idle, and a caller says that more
calls are on their way (`submit(..., coming=n)`: e.g. requests admitted upstream that have
not reached the encoder yet), does the first call wait a little (at most `max_wait_s`) for
them; a call nobody follows starts at once.

Why not a batch window alone (Ray Serve's `@serve.batch`): that forms a batch from whatever
arrives within the window of its first call and then queues the batch behind the running
one; under load it queues many small batches instead of one full one (measured: rounds of
1.8 texts with 32 single-text callers waiting).

Plain asyncio plus one worker thread for the inference; it knows nothing of Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.encoder import EncodeStats

# A round's work: token id arrays -> one pooled vector per array, and what the runs did.
RoundFn = Callable[[list[np.ndarray]], tuple[np.ndarray, EncodeStats]]


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


class ContinuousBatcher:
    def __init__(
        self,
        run_round: RoundFn,
        max_round_tokens: int,
        max_wait_s: float,
        on_round: Callable[[EncodeStats], None] | None = None,
    ):
        self.run_round = run_round
        self.on_round = on_round
        self.max_round_tokens = max_round_tokens
        self.max_wait_s = max_wait_s
        self.queue: deque[_Call] = deque()
        # One inference at a time; ONNX Runtime parallelizes inside the run.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort")
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
        busy = False  # did a round just end? Then whatever is queued goes at once.
        while True:
            if not self.queue:
                self._arrived.clear()
                await self._arrived.wait()
                busy = False
            if not busy and self.max_wait_s > 0 and self._coming > 0:
                await self._gather(loop)  # idle encoder, company on its way: wait for it
            calls = take_round(self.queue, self.max_round_tokens)
            busy = bool(calls)
            if calls:
                await self._run(loop, calls)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait up to `max_wait_s` for the calls on their way: until the latest caller says no
        more are coming, or a round's worth is queued."""
        deadline = loop.time() + self.max_wait_s
        while self._coming > 0 and self.queued_tokens < self.max_round_tokens:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def _run(self, loop: asyncio.AbstractEventLoop, calls: list[_Call]) -> None:
        flat = [s for c in calls for s in c.seqs]
        started = time.perf_counter()
        try:
            vectors, stats = await loop.run_in_executor(self._pool, self.run_round, flat)
        except Exception as exc:  # noqa: BLE001 (every caller of the round gets the error)
            for c in calls:
                if not c.future.done():
                    c.future.set_exception(exc)
            return
        if self.on_round is not None:
            self.on_round(stats)
        start = 0
        for c in calls:
            n = len(c.seqs)
            if not c.future.done():
                info = RoundInfo(len(flat), len(calls), stats.inference_s, started - c.queued_at)
                c.future.set_result((vectors[start : start + n], info))
            start += n

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
