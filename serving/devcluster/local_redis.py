"""The development cluster's shared cache: one redis-server on a loopback port, as the chart's."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from serving.devcluster.processes import PortAllocator, children, finish


@dataclass
class LocalRedis:
    """The shared cache: one redis-server on a loopback port, set up as the chart's own Redis
    (maxmemory with LRU eviction, nothing saved), in the cluster's temp dir."""

    port: int
    dir: str
    pid: int | None = None
    maxmemory: str = "256mb"

    @classmethod
    def start(cls, dir: str | Path, port: int | None = None, timeout_s: float = 10) -> "LocalRedis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `make redis-server` (apt-get install redis-server)")
        self = cls(port or PortAllocator()(), str(dir))
        log = Path(dir) / "redis.log"
        proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--maxmemory", self.maxmemory,
             "--maxmemory-policy", "allkeys-lru", "--save", "", "--appendonly", "no", "--dir", str(dir),
             "--logfile", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = proc.pid
        children[proc.pid] = proc
        deadline = time.monotonic() + timeout_s
        while not self.ping():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        try:
            proc = psutil.Process(self.pid)
            if "redis-server" in proc.name():
                proc.terminate()
                finish([proc], 10)
        except (psutil.Error, TypeError):
            pass
