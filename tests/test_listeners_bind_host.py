"""Every port `embedserve serve` opens (HTTP, gRPC, Prometheus metrics) listens on
EMBEDSERVE_HOST (127.0.0.1 by default) and nowhere else: a call to the machine's other
addresses is refused, and the banner says where each one listens. Ray's own "Application ...
is ready at <the idle proxy's port>" line is not printed."""

from __future__ import annotations

import socket

import psutil
import pytest

from tests.support.cli import Serve
from tests.support.redis_server import quiet_ports

pytestmark = pytest.mark.integration


def other_addresses() -> list[tuple[int, str]]:
    """(family, address) of this machine's addresses that are not loopback (may be none)."""
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6) and not a.address.startswith(("127.", "::1", "fe80")):
                out.append((a.family, a.address.split("%")[0]))
    return out


def refused(family: int, address: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect((address, port))
        except ConnectionRefusedError:
            return True
        return False


def test_every_port_listens_on_the_host_only(tmp_path):
    http_port, grpc_port, metrics_port = quiet_ports(3)
    serve = Serve(tmp_path / "serve.log", http_port, grpc_port, metrics_port)
    try:
        banner = serve.wait_banner()
        for name, port in serve.ports.items():
            bound = {c.laddr.ip.removeprefix("::ffff:") for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
            assert bound == {"127.0.0.1"}, (name, bound)
            assert f"listens on 127.0.0.1:{port}" in banner, banner
            assert not refused(socket.AF_INET, "127.0.0.1", port), name
            for family, address in other_addresses() + [(socket.AF_INET6, "::1")]:
                try:
                    assert refused(family, address, port), f"{name} port {port} answers on {address}"
                except OSError as exc:  # no IPv6 on this machine: nothing can answer there
                    assert exc.errno in (97, 99, 101), exc
        assert " is ready at " not in banner, banner
    finally:
        serve.close()
