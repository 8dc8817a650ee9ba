"""What Ray Serve's HTTP proxy gets from embedserve: one ASGI middleware, installed on every node
through Ray's proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serving.replica_loss:middlewares,
set by serving.launch for a local Ray and by the Helm chart on every Ray pod).

When an Ingress replica dies with requests in flight (its node lost, the replica killed), Ray's
proxy answers those requests nothing, and uvicorn sends a bare `500 Internal Server Error`. The
Ingress itself always answers (its errors are mapped once, serving/api/errors.py), so a request the
proxy left unanswered is one whose replica went away: it gets what any other request lost to a
vanished replica gets, a 503 `unavailable` in OpenAI's error shape with Retry-After.
"""

from __future__ import annotations

import json

from starlette.middleware import Middleware

from models.errors import NotReady
from serving.api.errors import error_body, retry_after
from serving.ray_listeners import adapt_ray_listeners

CALLBACK = "serving.replica_loss:middlewares"
adapt_ray_listeners()  # this process's Ray servers: on EMBEDSERVE_HOST, their ports reusable at once
LOST = NotReady("The replica serving this request went away (a node was lost or a replica restarted); retry it.")


class AnswerLostRequests:
    """Answer 503 + Retry-After where the wrapped proxy sent no response at all."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, receive, tracked)
        if not started:
            body = json.dumps(error_body(LOST)).encode()
            await send({
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", retry_after(LOST).encode()),
                ],
            })
            await send({"type": "http.response.body", "body": body})


def middlewares() -> list[Middleware]:
    """Ray's HTTP proxy callback: the middlewares it wraps its ASGI app in."""
    return [Middleware(AnswerLostRequests)]
