"""What a load run is: its configuration (LoadConfig), the hard bounds every run stops within,
and the check that a target is this machine's loopback interface and nothing else."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

# Hard bounds: whatever the caller asks, a run stops within these.
MAX_DURATION_S = 1800.0
MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 1024
MAX_RATE = 20_000.0
MAX_TIMEOUT_S = 300.0
MAX_WARMUP_S = 300.0
DEFAULT_DURATION_S = 10.0
HTTP_CLIENTS = ("lean", "httpx")  # the load generator's HTTP clients (loadtest.transports)


def add_http_client_flag(parser) -> None:
    """`--http-client`, as every load-driving command takes it."""
    parser.add_argument("--http-client", choices=HTTP_CLIENTS, default=HTTP_CLIENTS[0],
                        help="the load generator's HTTP client: lean (loadtest.lean_http, little client CPU) or "
                             "httpx (~1.5 ms more a request on loopback)")


class NotLoopback(ValueError):
    pass


def check_loopback(host: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    host = host.strip("[]")
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        if host.lower() != "localhost":
            raise NotLoopback(f"refusing target host {host!r}: only loopback (127.0.0.0/8, ::1, localhost)") from None
        infos = socket.getaddrinfo(host, None)
        addrs = [ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos]
    bad = [str(a) for a in addrs if not a.is_loopback]
    if not addrs or bad:
        raise NotLoopback(f"refusing target host {host!r}: resolves to non-loopback {bad}")


def check_http_target(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    check_loopback(parts.hostname)


def check_grpc_target(target: str) -> None:
    host = target.split("://", 1)[-1]
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    check_loopback(host)


@dataclass
class LoadConfig:
    transport: Literal["http", "grpc"] = "http"
    url: str = "http://127.0.0.1:8000"  # HTTP base URL; requests go to {url}/v1/embeddings
    grpc_target: str = "127.0.0.1:9000"
    grpc_metadata: list[tuple[str, str]] = field(default_factory=list)  # e.g. [("application", "embedserve")]
    grpc_method: Literal["embed", "stream"] = "embed"
    # HTTP client: "lean" (loadtest.lean_http, ~1.5 ms less client time a request than httpx on
    # loopback) or "httpx" (for https, or to compare)
    http_client: str = HTTP_CLIENTS[0]  # one of HTTP_CLIENTS (checked by validate)
    model: str = "all-MiniLM-L6-v2"
    encoding_format: str = "float"
    api_key: str | None = None
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8  # closed loop: clients, each with one request in flight
    rate: float | None = None  # open loop: requests per second
    arrival: Literal["uniform", "poisson"] = "uniform"
    max_in_flight: int = 1024  # open loop: past it an arrival is dropped (error "client_backlog")
    duration_s: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    warmup_requests: int = 0
    prime_cache: bool = False  # send the workload's hot set once before measuring
    timeout_s: float = 60.0
    verify: bool = True  # parse answers: count embeddings, read usage tokens
    keep_samples: bool = False  # per-request records in the report (for profiling)
    progress: bool = True
    label: str = ""
    seed: int = 0

    def validate(self) -> "LoadConfig":
        if self.transport == "http":
            check_http_target(self.url)
            if self.http_client not in HTTP_CLIENTS:
                raise ValueError(f"unknown http_client {self.http_client!r} ({' or '.join(HTTP_CLIENTS)})")
        elif self.transport == "grpc":
            check_grpc_target(self.grpc_target)
        else:
            raise ValueError(f"unknown transport {self.transport!r}")
        if self.mode == "open":
            if not self.rate or self.rate <= 0:
                raise ValueError("open loop needs a positive rate")
            if self.rate > MAX_RATE:
                raise ValueError(f"rate is capped at {MAX_RATE}/s")
        elif self.mode != "closed":
            raise ValueError(f"unknown mode {self.mode!r}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be within 1..{MAX_CONCURRENCY}")
        if not 1 <= self.max_in_flight <= 100_000:
            raise ValueError("max_in_flight must be within 1..100000")
        if self.duration_s is None and self.requests is None:
            self.duration_s = DEFAULT_DURATION_S
        if self.duration_s is not None and not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration must be within (0, {MAX_DURATION_S}] s")
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise ValueError(f"requests must be within 1..{MAX_REQUESTS}")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be within (0, {MAX_TIMEOUT_S}] s")
        if not 0 <= self.warmup_s <= MAX_WARMUP_S or not 0 <= self.warmup_requests <= 10_000:
            raise ValueError(f"warm-up is bounded by {MAX_WARMUP_S} s and 10000 requests")
        return self

    @property
    def time_limit_s(self) -> float:
        """The measured window stops issuing requests after this long, whatever the count."""
        return min(self.duration_s or MAX_DURATION_S, MAX_DURATION_S)
