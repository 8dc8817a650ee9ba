"""This machine's ports: which are free, which a server really listens on (and where), and the
check `embedserve serve` makes before it starts on them."""

from __future__ import annotations

import ipaddress
import random
import socket
import time


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bound(port: int) -> bool:
    """Some socket on this machine is bound to `port` (listening, connected or waiting to close),
    on any interface: a plain bind to it fails."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


# Where `free_port_blocks` draws from: below the OS's ephemeral ports (32768 up) and above Ray's
# worker ports (10002-19999), so that no outgoing connection or Ray worker takes a port of a block.
BLOCK_RANGE = (20000, 29999)


def free_port_blocks(n: int, span: int, avoid: tuple[int, ...] = (), rng=random) -> list[int]:
    """The first ports of `n` blocks of `span` + 1 ports each, in BLOCK_RANGE, that nothing on this
    machine holds now and that include none of `avoid`: ranges a server of this instance alone
    takes its ports from (servers that bind with SO_REUSEPORT would share a port silently)."""
    low, high = BLOCK_RANGE
    starts = list(range(low, high - span, span + 1))
    rng.shuffle(starts)
    found: list[int] = []
    for start in starts:
        block = range(start, start + span + 1)
        if any(port in block for port in avoid) or any(bound(port) for port in block):
            continue
        found.append(start)
        if len(found) == n:
            return found
    raise RuntimeError(f"no {n} free blocks of {span + 1} ports in {low}-{high}")


def listening(port: int) -> list:
    """The sockets of this machine in LISTEN state on `port` (psutil's sconn: laddr, pid)."""
    import psutil

    return [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def listens_at(port: int) -> str:
    """Where `port` really listens ("127.0.0.1:8000", "*:9000" for every interface), for the banner."""
    hosts = sorted({c.laddr.ip.removeprefix("::ffff:") for c in listening(port)})  # IPv4 on a dual-stack socket
    shown = ["*" if h in ("0.0.0.0", "::") else (f"[{h}]" if ":" in h else h) for h in hosts]
    return ", ".join(f"{h}:{port}" for h in dict.fromkeys(shown)) or f"nothing on {port}"


def stopping_embedserve(pid: int | None) -> bool:
    """`pid` is a process of a local Ray that is going away: a Ray worker or agent whose raylet
    is gone (the Ray of an embedserve that stopped: its orphaned workers close their ports only
    when they notice). A pid this user may not see (None) is not."""
    import psutil

    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        cmd = " ".join(proc.cmdline())
        if not (proc.name().startswith("ray::") or cmd.startswith("ray::") or "ray/dashboard/agent.py" in cmd):
            return False
        parent = proc.parent()
        return parent is None or parent.pid == 1 or parent.name() != "raylet" or parent.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone meanwhile: it was stopping
        return True


def listened_on(port: int) -> bool:
    """Something on this machine listens on `port`, on any interface, and serves: a socket in
    LISTEN state. Connections in TIME_WAIT (a server just stopped) are not (servers bind with
    SO_REUSEADDR), nor a listener of a local Ray that is going away (`stopping_embedserve`):
    `check_ports` waits for that one. Not a trial bind: gRPC servers and HAProxy bind with
    SO_REUSEPORT, so a second one on a taken port starts without complaint and the kernel splits
    the connections between the two."""
    return any(not stopping_embedserve(c.pid) for c in listening(port))


class PortInUse(RuntimeError):
    pass


# Most seconds `check_ports` waits for a stopping embedserve's Ray to let go of a port.
STOPPING_WAIT_S = 60


def check_ports(ports: dict[str, int], wait_s: float = STOPPING_WAIT_S, say=print) -> None:
    """Raises PortInUse naming every port of `ports` (a flag or setting: its port; 0 = off)
    that another process listens on, before anything starts on them. A port still held by a
    stopping embedserve (`stopping_embedserve`) is waited for, up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        taken = [f"{port} ({name})" for name, port in ports.items() if port and listened_on(port)]
        if taken:
            raise PortInUse(
                f"port {', '.join(taken)} already in use on this machine: another process would answer "
                "part of the requests sent there. Stop it, or choose other ports."
            )
        held = [port for port in ports.values() if port and listening(port)]
        if not held:
            return
        if time.monotonic() > deadline:
            raise PortInUse(f"port {', '.join(map(str, held))} still held by a stopping embedserve after {wait_s:.0f} s.")
        if not said:
            say(f"waiting for the embedserve that is stopping to release port {', '.join(map(str, held))}", flush=True)
            said = True
        time.sleep(0.2)
