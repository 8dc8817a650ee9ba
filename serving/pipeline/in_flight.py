"""Requests in flight: the bound past which a request is refused at once (`InFlightLimit`), and one
request's place among those admitted that have not reached the encoders yet (`Ticket`)."""

from __future__ import annotations

from models.errors import Overloaded


class InFlightLimit:
    """A bounded number of requests in flight; past it, refuse at once (never queue)."""

    def __init__(self, limit: int, retry_after_s: float):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.count = 0

    def __enter__(self):
        if self.count >= self.limit:
            raise Overloaded(
                f"The server is at capacity ({self.limit} requests in flight). Retry shortly.",
                retry_after_s=self.retry_after_s,
            )
        self.count += 1
        return self

    def __exit__(self, *exc):
        self.count -= 1


class Ticket:
    """One request's place in a pipeline's `on_the_way`, given up once: when its encoder calls go
    out, or when it ends without any (cache hits, errors)."""

    __slots__ = ("pipeline",)

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def arrive(self) -> None:
        if self.pipeline is not None:
            self.pipeline.on_the_way -= 1
            self.pipeline = None
