"""One real Ray Serve instance per test session, on free loopback ports, and helpers to
deploy the embedserve application under several settings beside each other."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc

from serving.cli import GRPC_SERVICERS
from serving.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifact_dir() -> Path:
    path = os.environ.get("EMBEDSERVE_ARTIFACT_DIR")
    assert path, "EMBEDSERVE_ARTIFACT_DIR is not set: run the tests with `make test` (it exports the models)"
    return Path(path)


@dataclass
class RayServe:
    http_port: int
    grpc_port: int

    @classmethod
    def start(cls) -> "RayServe":
        import ray
        from ray import serve
        from ray.serve.config import gRPCOptions, HTTPOptions

        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        ray.init(
            num_cpus=8,  # logical: several small apps share this 2-core machine in tests
            object_store_memory=200 << 20,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        self = cls(free_port(), free_port())
        serve.start(
            http_options=HTTPOptions(host="127.0.0.1", port=self.http_port),
            grpc_options=gRPCOptions(port=self.grpc_port, grpc_servicer_functions=GRPC_SERVICERS),
        )
        return self

    def stop(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@dataclass
class App:
    """A deployed embedserve application: where to call it and how it was configured."""

    name: str
    http_url: str  # base URL without a trailing slash, e.g. http://127.0.0.1:8000/app
    grpc_target: str
    settings: Settings

    @property
    def grpc_metadata(self) -> list[tuple[str, str]]:
        return [("application", self.name)]

    def grpc_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.grpc_target)

    def post(self, path: str, body, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, dict]:
        """(status, headers, json body) of a POST; never raises for an HTTP error status."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.http_url + path, data=data, headers={"content-type": "application/json", **(headers or {})}
        )
        return _send(req, timeout)

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
        return _send(urllib.request.Request(self.http_url + path, headers=headers or {}), timeout)


def _send(req, timeout) -> tuple[int, dict, dict]:
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


def deploy(ray_serve: RayServe, name: str, route_prefix: str, **overrides) -> App:
    """Deploy the application as `name` at `route_prefix` and wait until /ready says so."""
    from ray import serve

    from serving.app import build_app

    settings = Settings(artifact_dir=artifact_dir(), **overrides)
    serve.run(build_app(settings=settings), name=name, route_prefix=route_prefix, blocking=False)
    prefix = "" if route_prefix == "/" else route_prefix
    app = App(name, f"http://127.0.0.1:{ray_serve.http_port}{prefix}", f"127.0.0.1:{ray_serve.grpc_port}", settings)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            status, _, body = app.get("/ready", timeout=15)
            if status == 200:
                return app
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"app {name} did not become ready within 240 s")


def undeploy(name: str) -> None:
    from ray import serve

    serve.delete(name)
