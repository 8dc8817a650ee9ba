"""Starting Ray and Ray Serve on this machine (or joining a cluster) and running the
application on them. Used by `embedserve serve`, the tests and the benchmark alike."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from serving.settings import Settings

GRPC_SERVICERS = [
    "serving.grpc_api.add_embedding_service",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 512) -> None:
    """Join the Ray cluster at `address`, or start a local one without a dashboard, its object
    store capped."""
    import ray

    from serving.proxy import CALLBACK

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's proxies (started by the Ray this process starts) wrap their HTTP app in ours.
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", CALLBACK)
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        object_store_memory=object_store_mb << 20,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )


def start_serve(host: str, http_port: int, grpc_port: int) -> None:
    """Ray Serve's HTTP proxy, and its gRPC proxy unless grpc_port is 0."""
    from ray import serve
    from ray.serve.config import gRPCOptions, HTTPOptions

    serve.start(
        http_options=HTTPOptions(host=host, port=http_port),
        # No servicer functions: Ray starts no gRPC server.
        grpc_options=gRPCOptions(port=grpc_port or 9000, grpc_servicer_functions=GRPC_SERVICERS if grpc_port else []),
    )


def stop() -> None:
    """Drain and stop the applications, then Ray."""
    import ray
    from ray import serve

    try:
        # serve.shutdown() alone tears the proxies down with requests in flight (their clients
        # get a closed connection). Deleting the applications first lets every replica finish
        # what it holds (graceful_shutdown_timeout_s) while the proxies carry the answers back.
        for name in serve.status().applications:
            serve.delete(name, _blocking=True)
        serve.shutdown()
    finally:
        ray.shutdown()


@dataclass
class App:
    """A running embedserve application: where to call it and how it was configured."""

    name: str
    http_url: str  # base URL, no trailing slash (the route prefix included)
    grpc_target: str
    settings: Settings

    @property
    def grpc_metadata(self) -> list[tuple[str, str]]:
        """Ray routes a gRPC call to an application by this metadata (needed with several)."""
        return [("application", self.name)]

    def grpc_channel(self):
        import grpc

        return grpc.insecure_channel(self.grpc_target)

    def post(self, path: str, body, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, object]:
        """(status, headers, JSON body) of a POST; an HTTP error status is returned, not raised."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.http_url + path, data=data, headers={"content-type": "application/json", **(headers or {})}
        )
        return _send(req, timeout)

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, object]:
        return _send(urllib.request.Request(self.http_url + path, headers=headers or {}), timeout)

    def wait_ready(self, timeout_s: float = 240) -> "App":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.get("/ready", timeout=15)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"application {self.name} was not ready within {timeout_s:.0f} s")


def _send(req, timeout) -> tuple[int, dict, object]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        return err.code, dict(err.headers), body


def run_app(
    settings: Settings, name: str = "embedserve", route_prefix: str = "/", http_port: int | None = None,
    grpc_port: int | None = None,
) -> App:
    """Deploy the application on the running Ray Serve (returns at once; see App.wait_ready)."""
    from ray import serve

    from serving.app import application

    serve.run(application(settings), name=name, route_prefix=route_prefix, blocking=False)
    prefix = "" if route_prefix == "/" else route_prefix
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    http_port = http_port or settings.http_port
    grpc_port = grpc_port or settings.grpc_port
    return App(name, f"http://{host}:{http_port}{prefix}", f"{host}:{grpc_port}", settings)
