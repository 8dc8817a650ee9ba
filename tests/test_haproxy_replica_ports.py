"""`embedserve serve --ingress haproxy` puts its replicas on port ranges of its own. Replicas bind
with SO_REUSEPORT: on Ray's default ranges, or on ranges inherited from a parent's environment (a
test session's own direct-ingress Ray), another Ray's replica would hold the same port and the
kernel would hand it part of HAProxy's connections (once in CI, a keyless gRPC call was answered
by another instance's replica that had no API keys)."""

from __future__ import annotations

import random
import socket

import pytest

from serving.launch import DIRECT_PORT_SPAN, IngressConfig
from serving.ports import BLOCK_RANGE, free_port_blocks

RANGES = ("HTTP", "GRPC")


def reuseport_listener(port: int) -> socket.socket:
    """A listener as Ray's replicas and HAProxy bind them: SO_REUSEPORT, on loopback."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def replica_ranges(env: dict[str, str]) -> dict[str, range]:
    return {kind: range(int(env[f"RAY_SERVE_DIRECT_INGRESS_MIN_{kind}_PORT"]),
                        int(env[f"RAY_SERVE_DIRECT_INGRESS_MAX_{kind}_PORT"]) + 1) for kind in RANGES}


def test_haproxy_sets_replica_ranges_of_its_own_over_inherited_ones(monkeypatch):
    # A parent's direct-ingress ranges in this process's environment (what a test session leaves).
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "45000")
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "45100")
    config = IngressConfig("haproxy", "127.0.0.1", 21500, 21600, state_dir="/tmp/esh-test")
    ranges = replica_ranges(config.env())
    http, grpc = ranges["HTTP"], ranges["GRPC"]
    assert len(http) == len(grpc) == DIRECT_PORT_SPAN + 1
    assert not set(http) & set(grpc)
    for block in (http, grpc):
        assert BLOCK_RANGE[0] <= block.start and block.stop - 1 <= BLOCK_RANGE[1], block
        assert 21500 not in block and 21600 not in block  # HAProxy's own ports, not bound yet
        assert 30000 not in block and 40000 not in block  # Ray's defaults


@pytest.mark.parametrize("kind", ["proxy", "direct"])
def test_only_haproxy_draws_ranges(kind):
    env = IngressConfig(kind, "127.0.0.1", 21500, 21600).env()
    if kind == "direct":  # the user's ports and up, as documented
        assert replica_ranges(env) == {"HTTP": range(21500, 21500 + DIRECT_PORT_SPAN + 1),
                                       "GRPC": range(21600, 21600 + DIRECT_PORT_SPAN + 1)}
    else:
        assert not any(k.startswith("RAY_SERVE_DIRECT_INGRESS_M") for k in env)


def test_a_block_with_a_reuseport_listener_or_an_avoided_port_is_passed_over():
    first_two = free_port_blocks(2, DIRECT_PORT_SPAN, rng=random.Random(7))
    # Someone takes a port in the first block, as another Ray's replica would (SO_REUSEPORT).
    held = reuseport_listener(first_two[0] + 5)
    try:
        again = free_port_blocks(2, DIRECT_PORT_SPAN, rng=random.Random(7))
        assert first_two[0] not in again and again[0] == first_two[1], (first_two, again)
        # A port to avoid (the front ports, free until HAProxy binds them) rules its block out too.
        avoided = free_port_blocks(1, DIRECT_PORT_SPAN, avoid=(first_two[1] + DIRECT_PORT_SPAN,), rng=random.Random(7))
        assert avoided[0] not in first_two
    finally:
        held.close()


def test_no_free_block_is_a_clear_error(monkeypatch):
    import serving.ports as ports

    monkeypatch.setattr(ports, "bound", lambda port: True)
    with pytest.raises(RuntimeError, match="no 1 free blocks of 65 ports in 20000-29999"):
        free_port_blocks(1, DIRECT_PORT_SPAN)
