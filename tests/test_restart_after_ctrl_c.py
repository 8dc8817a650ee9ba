"""`embedserve serve` started again at once after Ctrl-C, on the same ports, starts and serves:
the stopped one drains and lets go of its ports, and the port check tells a port that is
served from one left in TIME_WAIT or held by the stopping embedserve's own Ray processes. A
port another server listens on is still refused (tests/test_ingress_options.py)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request

import pytest

from serving.ports import listened_on
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
        finally:
            second.close()
    finally:
        kept.close()
        first.close()
