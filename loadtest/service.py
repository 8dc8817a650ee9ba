"""Start embedserve inside this process, the way `embedserve serve` does (own local Ray,
Ray Serve HTTP and gRPC proxies), on free loopback ports; several applications beside
each other (e.g. cache on and cache off); stop it all at the end. Also: the Ray replica
processes of an application, for their memory."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from serving.cli import GRPC_SERVICERS
from serving.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    name: str
    http_url: str
    grpc_target: str
    settings: Settings

    @property
    def grpc_metadata(self) -> list[tuple[str, str]]:
        return [("application", self.name)]

    def get_json(self, path: str, timeout: float = 15) -> tuple[int, dict | None]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None

    def replica_pids(self) -> dict[str, int]:
        """{deployment: pid} of this application's Ray Serve replica processes."""
        return replica_pids(self.name)


def replica_pids(app: str) -> dict[str, int]:
    """Ray names a replica's worker process "ray::ServeReplica:<app>:<deployment>[.<method>]";
    only processes this one started (the local Ray's workers) count, never another user's."""
    found = {}
    prefix = f"ray::ServeReplica:{app}:"
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].startswith(prefix):
            deployment = cmd[0][len(prefix):].split(".", 1)[0].split(" ", 1)[0]
            found[f"{deployment}#{proc.pid}"] = proc.pid
    return found


def proxy_pids() -> list[int]:
    """Ray Serve's HTTP/gRPC proxy processes of this process's local Ray."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].startswith("ray::ProxyActor"):
            out.append(proc.pid)
    return out


@dataclass
class LocalService:
    http_port: int
    grpc_port: int
    apps: dict[str, App] = field(default_factory=dict)

    @classmethod
    def start(cls, num_cpus: int | None = None, object_store_mb: int = 256) -> "LocalService":
        import ray
        from ray import serve
        from ray.serve.config import gRPCOptions, HTTPOptions

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        ray.init(
            # Logical CPUs: each encoder replica reserves one; several apps live side by side.
            num_cpus=num_cpus or max(4, os.cpu_count() or 1),
            object_store_memory=object_store_mb << 20,
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

    def deploy(self, name: str, route_prefix: str, timeout_s: float = 300, **overrides) -> App:
        from ray import serve

        from serving.app import build_app

        settings = Settings(**overrides)
        serve.run(build_app(settings=settings), name=name, route_prefix=route_prefix, blocking=False)
        prefix = "" if route_prefix == "/" else route_prefix
        app = App(name, f"http://127.0.0.1:{self.http_port}{prefix}", f"127.0.0.1:{self.grpc_port}", settings)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if app.get_json("/ready")[0] == 200:
                    self.apps[name] = app
                    return app
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"app {name} was not ready within {timeout_s:.0f} s")

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()


class RssSampler:
    """Peak resident memory of a set of processes (summed), sampled in a background thread,
    and the CPU time they used while it ran."""

    def __init__(self, pids: list[int] | None = None, interval_s: float = 0.05, cpu_only_pids: list[int] = ()):
        self.pids = pids or [os.getpid()]
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._procs = [psutil.Process(p) for p in self.pids]
        self._cpu_procs = self._procs + [psutil.Process(p) for p in cpu_only_pids]

    def sample(self) -> int:
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._cpu_procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> "RssSampler":
        self.sample()
        self._cpu0 = self.cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.cpu_s = self.cpu_seconds() - self._cpu0  # CPU the processes used meanwhile
