"""Ray Serve's own servers in this process, bound as `embedserve serve` promises: on
EMBEDSERVE_HOST, their ports reusable at once after a stop. Imported by the processes Ray starts
for us (serving.app: the replicas; serving.replica_loss: Ray's proxy actors)."""

from __future__ import annotations

import os
import socket

HOST_ENV = "EMBEDSERVE_HOST"


def adapt_ray_listeners() -> None:
    """Ray Serve's servers in this process, as `embedserve serve` promises them:
    - its gRPC servers (a direct-ingress replica's, the gRPC proxy's) listen on [::], every
      interface, whatever HTTPOptions.host says: they bind EMBEDSERVE_HOST instead, as HTTP does;
    - a direct-ingress replica binds its HTTP port without SO_REUSEADDR, so for a minute after a
      stop (the old server's connections in TIME_WAIT / FIN_WAIT2) the port cannot be bound, and
      the replica silently takes the next one: its sockets get SO_REUSEADDR, as uvicorn's and
      gRPC's own do (a second listener on a port is still refused).
    Called where they start: on import of serving.app (the replicas) and serving.replica_loss (Ray's
    proxy actors)."""
    from ray.serve._private import default_impl, http_util

    original = default_impl.add_grpc_address
    if getattr(original, "binds_host", False):
        return

    def add_grpc_address(server, address: str):
        host = os.environ.get(HOST_ENV, "")
        if host not in ("", "0.0.0.0", "::") and address.startswith("[::]:"):
            port = address.rsplit(":", 1)[1]
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return original(server, address)

    add_grpc_address.binds_host = True
    default_impl.add_grpc_address = add_grpc_address
    http_util.socket = _ReusedAddresses(socket)


class _ReusedAddresses:
    """The socket module, except that its sockets are made with SO_REUSEADDR."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def socket(self, *args, **kwargs):
        sock = self._module.socket(*args, **kwargs)
        sock.setsockopt(self._module.SOL_SOCKET, self._module.SO_REUSEADDR, 1)
        return sock
