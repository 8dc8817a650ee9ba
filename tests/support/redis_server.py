"""A real, throw-away ``redis-server`` on a loopback port, for tests.

``RedisServer`` can be stopped and started again on the same port (to test Redis
going away and coming back) and paused with SIGSTOP (to test a hung Redis).
With ``tls=True`` it serves TLS only, with a fresh self-signed certificate for
127.0.0.1 (``ca_file``). The ``redis_server`` fixture yields one per test module and
always stops it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NOT_INSTALLED = (
    "redis-server is not installed (needed by the cache tests): "
    "apt-get install -y redis-server"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_ports(n: int, low: int = 20000, high: int = 29999) -> list[int]:
    """n ports in [low, high] that nothing listens on now (nothing on this machine draws from there)."""
    ports = []
    for port in random.sample(range(low, high), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free ports in {low}-{high}")


class RedisServer:
    """One ``redis-server`` process: no persistence, loopback only, its own temp dir."""

    def __init__(self, port: int | None = None, password: str | None = None,
                 extra_args: list[str] | None = None, tls: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError(NOT_INSTALLED)
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args or [])
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.ca_file = self.dir / "cert.pem"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self):
        """A plain synchronous redis client (for assertions)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=2, ssl=self.tls, ssl_ca_certs=str(self.ca_file))

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += self._tls_args()
        self.proc = subprocess.Popen(args + self.extra_args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        self._wait_ready(timeout_s)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout_s``) and wait; no-op when not running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # in case it was paused
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel but never answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up:\n{self._log_tail()}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in {timeout_s}s:\n{self._log_tail()}")

    def _tls_args(self) -> list[str]:
        key = self.dir / "key.pem"
        if not self.ca_file.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(self.ca_file)],
                check=True, capture_output=True)
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.ca_file),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "no"]

    def _answers_ping(self) -> bool:
        try:
            with self._connect() as sock:
                if self.password:
                    pw = self.password.encode()
                    sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw))
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    def _log_tail(self) -> str:
        try:
            return "\n".join((self.dir / "redis.log").read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server for the module; fails (not skips) without the binary."""
    if shutil.which("redis-server") is None:
        pytest.fail(NOT_INSTALLED)
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()
