"""Retry-After is the same on every transport: the error's wait in whole seconds, rounded up,
at least 1 (HTTP and gRPC once disagreed: 1.5 s gave "2" on HTTP and "1" on gRPC)."""

from __future__ import annotations

import grpc
import pytest

from models.errors import InvalidInput, NotReady, Overloaded
from serving.api import cohere_route, grpc_servicer, http_app
from serving.api.errors import retry_after


class RecordingContext:
    """What grpc_servicer.fail sets on a call's context (a unit test of the one error path)."""

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details

    def set_trailing_metadata(self, metadata):
        self.trailing = dict(metadata)


@pytest.mark.parametrize("wait, expected", [(1.5, "2"), (0.2, "1"), (0.0, "1"), (3, "3"), (2.01, "3")])
def test_every_transport_rounds_the_wait_up_to_whole_seconds(wait, expected):
    for err in (Overloaded("busy", retry_after_s=wait), NotReady("gone", retry_after_s=wait)):
        assert retry_after(err) == expected
        assert http_app.error_response(err).headers["retry-after"] == expected
        assert cohere_route.error_response(err).headers["retry-after"] == expected
        ctx = RecordingContext()
        grpc_servicer.fail(ctx, err)
        assert ctx.trailing["retry-after"] == expected


def test_an_error_without_a_wait_sends_no_retry_after():
    err = InvalidInput("bad")
    assert retry_after(err) is None
    assert "retry-after" not in http_app.error_response(err).headers
    assert "retry-after" not in cohere_route.error_response(err).headers
    ctx = RecordingContext()
    grpc_servicer.fail(ctx, err)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and not hasattr(ctx, "trailing")
