"""A multi-node Ray cluster on one machine: a head that does no serving work (`--num-cpus 0`, as
in the Helm chart) and N worker nodes, each its own `ray start` (its own raylet), joined with
token authentication (RAY_AUTH_MODE=token and the head's token, passed to every node
explicitly; ~/.ray/auth_token is never read or written). Every port a node opens is an explicit
free one and the cluster lives in a temp dir of its own, so it runs beside other Ray
instances on the same machine. `make cluster` and the cluster tests use it alike.

    cluster = LocalCluster.start(workers=2, cpus_per_worker=1)
    subprocess.run(["serve", "deploy", "config.yaml", "-a", cluster.dashboard_url],
                   env={**os.environ, **cluster.env})
    cluster.kill_worker(0)       # SIGKILL its raylet: the node is lost
    cluster.restart_worker(0)    # the node joins again (new raylet, same Serve proxy ports)
    cluster.stop()

Each node is one `ray start --block` process (its own process group): it starts the node's
processes, stops them all on SIGTERM, and kills them all when one dies (so a SIGKILLed raylet
takes its node down, as a lost machine would). Worker nodes run Serve proxies on ports of their
own (RAY_SERVE_WORKER_PROXY_HTTP_PORT / _GRPC_PORT); the head's proxy takes the ports of the
Serve config.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

NODE_LABEL = "embedserve.local/node"  # head, worker-0, worker-1, ...
WORKER_PORTS_PER_NODE = 32  # ports for the node's worker processes (one per Ray worker)


class PortAllocator:
    """Free loopback ports, never the same one twice (the OS may hand a just-closed one out again)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def __call__(self) -> int:
        for _ in range(200):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise RuntimeError("no free port found")


@dataclass
class Node:
    name: str  # "head" or "worker-<i>"
    ports: dict[str, int]
    worker_ports: list[int]
    pid: int | None = None  # the `ray start --block` process
    log: str = ""
    serve_http_port: int | None = None  # its Serve proxy (worker nodes; the head's is in the Serve config)
    serve_grpc_port: int | None = None
    num_cpus: float = 0
    node_id: str | None = None  # its id in the GCS (a new one each time it joins)

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics of this node's processes (Ray's metrics agent)."""
        return f"http://127.0.0.1:{self.ports['metrics_export']}/metrics"

    def process(self) -> psutil.Process | None:
        """The node's `ray start` process, if it still runs (and is the one started here)."""
        if self.pid is None:
            return None
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "ray" not in " ".join(proc.cmdline()):
                return None
            return proc
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


@dataclass
class LocalCluster:
    temp_dir: str
    token: str
    head: Node
    workers: list[Node]
    object_store_mb: int
    node_env: dict[str, str] = field(default_factory=dict)  # extra env of every node (EMBEDSERVE_* ...)
    owns_temp_dir: bool = True
    redis: "LocalRedis | None" = None  # the shared cache; its URL is EMBEDSERVE_REDIS_URL on every node

    # ---- starting ------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workers: int = 2,
        cpus_per_worker: float = 1,
        temp_dir: str | Path | None = None,
        token: str | None = None,
        node_env: dict[str, str] | None = None,
        object_store_mb: int = 100,
        redis: bool = False,
        timeout_s: float = 120,
    ) -> "LocalCluster":
        """Start the head and `workers` worker nodes (and, with `redis`, a Redis whose URL every
        node gets as EMBEDSERVE_REDIS_URL, as the chart does); return once all are alive."""
        owns = temp_dir is None
        # Short: Ray's unix socket paths live under it (108 bytes at most).
        temp = Path(temp_dir) if temp_dir else Path(tempfile.mkdtemp(prefix="esc-", dir="/tmp"))
        temp.mkdir(parents=True, exist_ok=True)
        ports = PortAllocator()
        head = Node("head", _node_ports(ports, head=True), [ports() for _ in range(WORKER_PORTS_PER_NODE)])
        nodes = [
            Node(f"worker-{i}", _node_ports(ports), [ports() for _ in range(WORKER_PORTS_PER_NODE)],
                 serve_http_port=ports(), serve_grpc_port=ports(), num_cpus=cpus_per_worker)
            for i in range(workers)
        ]
        self = cls(str(temp), token or secrets.token_hex(32), head, nodes, object_store_mb, dict(node_env or {}), owns)
        try:
            if redis:
                self.redis = LocalRedis.start(temp, ports())
                self.node_env["EMBEDSERVE_REDIS_URL"] = self.redis.url
            self._launch(self.head)
            self._wait(lambda: self._dashboard_up(), timeout_s, "the head's dashboard to answer")
            for node in self.workers:
                self._launch(node)
            self.wait_nodes(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def address(self) -> str:
        """The GCS address workers and drivers join (ray start --address, ray.init, RAY_ADDRESS)."""
        return f"127.0.0.1:{self.head.ports['gcs']}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard: `serve deploy -a`, `serve status -a`, the state and Serve REST APIs."""
        return f"http://127.0.0.1:{self.head.ports['dashboard']}"

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess needs to join or drive this cluster (ray.init(), serve / ray CLIs)."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_DASHBOARD_ADDRESS": self.dashboard_url,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """This process's environment with the cluster's on top (and no other Ray's address)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"))}
        return {**env, **self.env, **extra}

    def command(self, node: Node) -> list[str]:
        p = node.ports
        cmd = [
            _ray_cli(), "start", "--block", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1",
            "--node-manager-port", str(p["node_manager"]),
            "--object-manager-port", str(p["object_manager"]),
            "--dashboard-agent-listen-port", str(p["dashboard_agent_http"]),
            "--dashboard-agent-grpc-port", str(p["dashboard_agent_grpc"]),
            "--runtime-env-agent-port", str(p["runtime_env_agent"]),
            "--metrics-export-port", str(p["metrics_export"]),
            "--worker-port-list", ",".join(map(str, node.worker_ports)),
            "--object-store-memory", str(self.object_store_mb << 20),
            "--temp-dir", self.temp_dir,
            "--num-gpus", "0",
            "--labels", f"{NODE_LABEL}={node.name}",
        ]
        if node.name == "head":
            cmd += [
                "--head", "--port", str(p["gcs"]), "--num-cpus", "0",
                "--ray-client-server-port", str(p["ray_client"]),
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(p["dashboard"]),
            ]
        else:
            cmd += [
                "--address", self.address, "--num-cpus", _cpus(node.num_cpus),
                "--include-log-monitor", "false",  # one log monitor per machine (the head's)
            ]
        return cmd

    def node_env_of(self, node: Node) -> dict[str, str]:
        env = self.subprocess_env(**self.node_env)
        env.pop("RAY_ADDRESS")  # ray start gets --address
        env.pop("RAY_DASHBOARD_ADDRESS")
        if node.serve_http_port:
            env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(node.serve_http_port)
            env["RAY_SERVE_WORKER_PROXY_GRPC_PORT"] = str(node.serve_grpc_port)
        return env

    def _launch(self, node: Node) -> None:
        log_path = Path(self.temp_dir) / f"{node.name}.ray-start.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                self.command(node), env=self.node_env_of(node), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        node.pid, node.log = proc.pid, str(log_path)
        # Not waited for here (a Popen left to itself would warn): _reap() collects its status.
        _children[proc.pid] = proc

    # ---- inspecting ----------------------------------------------------------------------

    def api(self, path: str, timeout: float = 15):
        """GET a dashboard REST path (state API, Serve API) with the cluster's token."""
        req = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def nodes(self) -> list[dict]:
        """Every node the GCS knows of, alive or dead: node_id, state, labels, is_head_node..."""
        body = self.api("/api/v0/nodes?detail=1&limit=1000")
        return body["data"]["result"]["result"]

    def node_ids(self) -> dict[str, str]:
        """{node name: node id} of the nodes alive now (the newest, when one has joined again
        before the GCS noticed its old raylet was gone)."""
        alive = sorted((n for n in self.nodes() if n["state"] == "ALIVE"), key=lambda n: n.get("start_time_ms") or 0)
        return {n["labels"].get(NODE_LABEL, "?"): n["node_id"] for n in alive}

    def node_names(self) -> dict[str, str]:
        """{node id: node name} of every node that ever joined (dead ones too)."""
        return {n["node_id"]: n["labels"].get(NODE_LABEL, "?") for n in self.nodes()}

    def wait_nodes(self, timeout_s: float = 120, stale: frozenset[str] = frozenset()) -> dict[str, str]:
        """Wait until every node started here whose process runs is alive in the GCS (under
        an id not in `stale`); record their ids."""
        want = {n.name for n in [self.head, *self.workers] if n.pid is not None and n.alive()}
        found: dict[str, str] = {}

        def ready() -> bool:
            nonlocal found
            dead = [n.name for n in [self.head, *self.workers] if n.pid is not None and not n.alive()]
            if dead:
                raise RuntimeError(f"ray start exited for {dead}:\n{self.log_tail(dead[0])}")
            try:
                found = self.node_ids()
            except (OSError, ValueError, KeyError):
                return False
            return all(name in found and found[name] not in stale for name in want)

        self._wait(ready, timeout_s, f"nodes {sorted(want)} to join")
        for node in [self.head, *self.workers]:
            if node.name in want:
                node.node_id = found[node.name]
        return found

    def log_tail(self, name: str, lines: int = 30) -> str:
        node = self.node(name)
        try:
            return "\n".join(Path(node.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def node(self, name: str) -> Node:
        for node in [self.head, *self.workers]:
            if node.name == name:
                return node
        raise KeyError(name)

    def _dashboard_up(self) -> bool:
        if not self.head.alive():
            raise RuntimeError(f"the head's ray start exited:\n{self.log_tail('head')}")
        try:
            self.nodes()
            return True
        except (OSError, ValueError, KeyError):
            return False

    @staticmethod
    def _wait(cond, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    # ---- faults --------------------------------------------------------------------------

    def kill_worker(self, i: int, timeout_s: float = 30) -> None:
        """SIGKILL worker node i's raylet: the node is lost with everything on it (its
        `ray start` kills the node's other processes, the replicas die with their raylet)."""
        node = self.workers[i]
        proc = node.process()
        assert proc is not None, f"{node.name} is not running"
        tree = proc.children(recursive=True)
        raylets = [p for p in tree if _name(p) == "raylet"]
        assert raylets, f"no raylet under {node.name}'s ray start ({node.pid})"
        for raylet in raylets:
            raylet.send_signal(signal.SIGKILL)
        _finish([proc, *tree], timeout_s)

    def restart_worker(self, i: int, timeout_s: float = 120) -> None:
        """Worker node i joins again: a fresh raylet on fresh Ray ports, the same Serve proxy ports."""
        node = self.workers[i]
        assert not node.alive(), f"{node.name} is still running"
        stale = frozenset({node.node_id} if node.node_id else ())
        ports = PortAllocator()
        ports.taken = {p for n in [self.head, *self.workers] for p in [*n.ports.values(), *n.worker_ports]}
        node.ports = _node_ports(ports)
        node.worker_ports = [ports() for _ in range(WORKER_PORTS_PER_NODE)]
        self._launch(node)
        self.wait_nodes(timeout_s, stale)

    # ---- stopping ------------------------------------------------------------------------

    def stop(self, timeout_s: float = 30) -> None:
        """Stop every node started here (workers first), then anything they left behind."""
        for node in [*self.workers, self.head]:
            proc = node.process()
            if proc is None:
                continue
            tree = proc.children(recursive=True)
            try:
                proc.send_signal(signal.SIGTERM)  # ray start stops its node's processes
            except psutil.Error:
                pass
            _finish([proc, *tree], timeout_s)
        if self.redis is not None:
            self.redis.stop()
        _reap()
        if self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # ---- a cluster started by another process (make cluster / make cluster-down) ----------

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))
        os.chmod(path, 0o600)  # it holds the token

    @classmethod
    def load(cls, path: str | Path) -> "LocalCluster":
        raw = json.loads(Path(path).read_text())
        raw["head"] = Node(**raw["head"])
        raw["workers"] = [Node(**w) for w in raw["workers"]]
        raw["redis"] = LocalRedis(**raw["redis"]) if raw.get("redis") else None
        return cls(**raw)


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
        _children[proc.pid] = proc
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
                _finish([proc], 10)
        except (psutil.Error, TypeError):
            pass


# ---- helpers -----------------------------------------------------------------------------

_children: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def _node_ports(ports: PortAllocator, head: bool = False) -> dict[str, int]:
    names = ["node_manager", "object_manager", "dashboard_agent_http", "dashboard_agent_grpc",
             "runtime_env_agent", "metrics_export"]
    if head:
        names += ["gcs", "dashboard", "ray_client"]
    return {n: ports() for n in names}


def _cpus(n: float) -> str:
    if float(n) != int(n):
        raise ValueError(f"ray start takes whole CPUs, not {n}")
    return str(int(n))


def _ray_cli() -> str:
    """The `ray` script of this Python environment (not whichever is first on PATH)."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def stop_process_tree(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM a process started here and wait for it and its descendants (SIGKILL past the timeout)."""
    try:
        proc = psutil.Process(pid)
        tree = proc.children(recursive=True)
        proc.terminate()
    except psutil.Error:
        return
    _finish([proc, *tree], timeout_s)


def _finish(procs: list[psutil.Process], timeout_s: float) -> None:
    """Wait for these processes to exit; SIGKILL whatever is left after `timeout_s`."""
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    _reap()
