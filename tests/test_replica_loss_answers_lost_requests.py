"""Ray's HTTP proxy answers nothing for a request whose Ingress replica died with it (uvicorn
then sends a bare 500); serving/replica_loss.py's middleware, which every proxy runs (set by
serving.launch and the Helm chart), makes that a 503 `unavailable` with Retry-After in
OpenAI's error shape. Unit test of that one path with stand-in proxy apps; the node-loss test
(tests/test_cluster_node_loss.py) shows it with real replicas dying."""

from __future__ import annotations

import asyncio
import json

from serving.replica_loss import CALLBACK, AnswerLostRequests, middlewares


def call(app) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(AnswerLostRequests(app)({"type": "http", "method": "POST", "path": "/v1/embeddings"}, receive, send))
    return sent


async def silent_proxy(scope, receive, send):
    """Ray's proxy when the replica died: it returns without a response."""


async def answering_proxy(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok": true}'})


def test_a_request_the_proxy_left_unanswered_gets_503_with_retry_after():
    start, body = call(silent_proxy)
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert int(headers[b"retry-after"]) >= 1
    error = json.loads(body["body"])["error"]
    assert (error["type"], error["code"]) == ("server_error", "unavailable")
    assert "retry" in error["message"]


def test_an_answered_request_passes_untouched():
    sent = call(answering_proxy)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"ok": true}'


def test_rays_proxy_callback_gets_the_middleware():
    from ray.serve._private.http_util import validate_http_proxy_callback_return
    from ray.serve._private.utils import call_function_from_import_path

    (mw,) = validate_http_proxy_callback_return(call_function_from_import_path(CALLBACK))
    assert mw.cls is AnswerLostRequests
    assert middlewares()[0].cls is AnswerLostRequests
