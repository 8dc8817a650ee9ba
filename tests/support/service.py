"""One real Ray Serve instance per test session, on free loopback ports, and helpers to
deploy the embedserve application under several settings beside each other."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serving import launch, shutdown
from serving.launch import App
from serving.ports import free_port
from serving.settings import Settings

__all__ = ["App", "ROOT", "RayServe", "artifact_dir", "deploy", "free_port", "undeploy"]

ROOT = Path(__file__).resolve().parents[2]


def artifact_dir() -> Path:
    path = os.environ.get("EMBEDSERVE_ARTIFACT_DIR")
    assert path, "EMBEDSERVE_ARTIFACT_DIR is not set: run the tests with `make test` (it exports the models)"
    return Path(path)


@dataclass
class RayServe:
    ingress: launch.IngressConfig
    metrics_port: int

    @classmethod
    def start(cls) -> "RayServe":
        """On the ingress the service runs by default (Settings.ingress), on free ports."""
        self = cls(launch.IngressConfig(Settings().ingress, "127.0.0.1", free_port(), free_port()), free_port())
        # 8 logical CPUs: several small apps share this 2-core machine in tests.
        launch.start_ray(num_cpus=8, object_store_mb=200, ingress=self.ingress, metrics_port=self.metrics_port)
        launch.start_serve(self.ingress)
        return self

    def stop(self) -> None:
        shutdown.stop()


def deploy(ray_serve: RayServe, name: str, route_prefix: str, **overrides) -> App:
    """Deploy the application as `name` at `route_prefix` and wait until /ready says so."""
    settings = Settings(**{"artifact_dir": artifact_dir(), **overrides})  # a test's own artifact_dir may override
    return launch.run_app(settings, name, route_prefix).wait_ready()


def undeploy(name: str) -> None:
    from ray import serve

    serve.delete(name)
