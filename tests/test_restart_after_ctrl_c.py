"""`embedserve serve` started again at once after Ctrl-C, on the same ports, starts and serves:
the stopped one drains and lets go of its ports, and the port check tells a port that is
served from one left in TIME_WAIT or held by the stopping embedserve's own Ray processes. A
port another server listens on is still refused (tests/test_ingress_options.py)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from serving.ports import PortInUse, check_ports, listened_on
from tests.support.cli import Serve
from tests.support.redis_server import quiet_ports

pytestmark = pytest.mark.integration


def embed(port: int, text: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", headers={"content-type": "application/json"},
                                 data=json.dumps({"model": "all-MiniLM-L6-v2", "input": text}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_a_port_in_time_wait_is_not_in_use():
    (port,) = quiet_ports(1)
    server = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    client.close()
    server.close()
    assert not listened_on(port)


LISTEN_THEN_EXIT = (
    "import socket, sys, time; s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); "
    "print('listening', flush=True); time.sleep(float(sys.argv[2]))"
)


def listener(port: int, seconds: float, name: str) -> subprocess.Popen:
    """A process that listens on `port` for `seconds`; `name` is its argv[0] (a Ray worker's
    is "ray::<actor>"), its parent this test, not a raylet: as a stopping embedserve's orphan."""
    proc = subprocess.Popen(["bash", "-c", f'exec -a "{name}" "{sys.executable}" -c "{LISTEN_THEN_EXIT}" {port} {seconds}'],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def test_a_port_held_by_a_stopping_embedserve_is_waited_for_and_another_server_is_not():
    (port,) = quiet_ports(1)
    orphan = listener(port, 3, "ray::ServeReplica:embedserve:Ingress")
    said = []
    t0 = time.monotonic()
    check_ports({"--http-port": port}, say=lambda *a, **k: said.append(a[0]))  # returns once it let go
    assert time.monotonic() - t0 >= 1 and orphan.wait(timeout=10) == 0
    assert said and f"release port {port}" in said[0]
    other = listener(port, 30, sys.executable)
    try:
        with pytest.raises(PortInUse, match=f"port {port} \\(--http-port\\) already in use"):
            check_ports({"--http-port": port})
    finally:
        other.kill()
        other.wait()


def test_serve_starts_again_right_after_ctrl_c(tmp_path):
    ports = quiet_ports(3)
    first = Serve(tmp_path / "first.log", *ports)
    # A client that keeps its connection open (the OpenAI client's pool does): when the server
    # closes it at the stop, the server's end waits in FIN_WAIT2 for the client, up to a minute.
    kept = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=60)
    try:
        first.wait_banner()
        kept.request("POST", "/v1/embeddings", json.dumps({"model": "all-MiniLM-L6-v2", "input": "before Ctrl-C"}),
                     {"content-type": "application/json"})
        assert kept.getresponse().status == 200
        first.ctrl_c()
        assert first.proc.wait(timeout=120) == 0, first.output()[-3000:]
        second = Serve(tmp_path / "second.log", *ports)
        try:
            banner = second.wait_banner()
            assert f"http://127.0.0.1:{ports[0]}/v1/embeddings" in banner, banner  # the same port, not the next one
            assert len(embed(ports[0], "after the restart")["data"]) == 1
            # SIGTERM to the whole group (`kill -TERM -<pgid>`, systemd's control-group stop)
            # reaches Ray's own processes too: with its GCS gone there is nothing to drain, and
            # it stops at once, not after a minute of waiting on the dead GCS.
            os.killpg(second.proc.pid, signal.SIGTERM)
            assert second.proc.wait(timeout=30) == 0, second.output()[-3000:]
            assert "stopped with the same signal: nothing left to drain" in second.output(), second.output()[-3000:]
        finally:
            second.close()
    finally:
        kept.close()
        first.close()
