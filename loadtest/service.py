"""Start embedserve inside this process, the way `embedserve serve` does (own local Ray,
Ray Serve HTTP and gRPC proxies), on free loopback ports; several applications beside
each other (e.g. cache on and cache off); stop it all at the end. Also: the Ray replica
processes of an application, for their memory."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import psutil

from serving import launch, shutdown
from serving.launch import App
from serving.ports import free_port
from serving.settings import Settings


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
    """Ray Serve started in this process on free loopback ports, with applications beside
    each other (e.g. cache on and cache off)."""

    ingress: launch.IngressConfig
    apps: dict[str, App] = field(default_factory=dict)

    @classmethod
    def start(cls, num_cpus: int | None = None, object_store_mb: int = 256, ingress: str | None = None) -> "LocalService":
        """`ingress`: proxy, direct or haproxy (default: the service's own, Settings.ingress)."""
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self = cls(launch.IngressConfig(ingress or Settings().ingress, "127.0.0.1", free_port(), free_port()))
        # Logical CPUs: each encoder replica reserves one; several apps live side by side.
        launch.start_ray(num_cpus=num_cpus or max(4, os.cpu_count() or 1), object_store_mb=object_store_mb,
                         ingress=self.ingress)
        launch.start_serve(self.ingress)
        return self

    def deploy(self, name: str, route_prefix: str, timeout_s: float = 300, **overrides) -> App:
        app = launch.run_app(Settings(**overrides), name, route_prefix)
        self.apps[name] = app.wait_ready(timeout_s)
        return app

    def stop(self) -> None:
        shutdown.stop()


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
