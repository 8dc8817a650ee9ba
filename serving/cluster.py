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
Serve config. (Ray advertises a node at the machine's own address even when told 127.0.0.1; the
clients here call the proxies on 127.0.0.1.)

Below the cluster: the chart's application on it (render_chart, chart_serve_config,
serve_deploy, placement) and `python -m serving.cluster up | down | config` for `make cluster`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from serving.launch import listened_on

NODE_LABEL = "embedserve.local/node"  # head, worker-0, worker-1, ...
WORKER_PORTS_PER_NODE = 32  # ports for the node's worker processes (one per Ray worker)


class PortAllocator:
    """Free ports for a cluster, never the same one twice, drawn from below the kernel's
    ephemeral range (where other processes' port-0 binds, outgoing connections and other Ray
    instances' unpinned ports land) and above Ray's default worker ports (10002-19999)."""

    LOW, HIGH = 20000, 32767

    def __init__(self, seed: int | None = None) -> None:
        self.taken: set[int] = set()
        self.random = random.Random(seed)
        try:
            ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
            self.high = min(self.HIGH, ephemeral - 1)
        except (OSError, ValueError, IndexError):
            self.high = self.HIGH

    def __call__(self) -> int:
        for _ in range(1000):
            port = self.random.randint(self.LOW, self.high)
            if port not in self.taken and not listened_on(port):
                self.taken.add(port)
                return port
        raise RuntimeError(f"no free port found in {self.LOW}-{self.high}")


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
        child = _children.get(self.pid)
        if child is not None and child.poll() is not None:
            return None
        try:
            proc = psutil.Process(self.pid)
            # Started by another process (make cluster): make sure the pid was not reused.
            if child is None and (proc.status() == psutil.STATUS_ZOMBIE or "ray" not in " ".join(proc.cmdline())):
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
            # One at a time: nodes on one machine share the session dir, where each picks
            # socket names of its own by looking at what is already there.
            for node in self.workers:
                self._join(node, timeout_s)
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
        self._join(node, timeout_s, fresh_ports=True)

    def add_worker(self, cpus: float = 1, timeout_s: float = 120) -> Node:
        """One more worker node joins (worker-<n>), with Serve proxy ports of its own."""
        ports = PortAllocator()
        ports.taken = self.ports_in_use()
        node = Node(f"worker-{len(self.workers)}", _node_ports(ports), [ports() for _ in range(WORKER_PORTS_PER_NODE)],
                    serve_http_port=ports(), serve_grpc_port=ports(), num_cpus=cpus)
        self.workers.append(node)
        self._join(node, timeout_s)
        return node

    def _join(self, node: Node, timeout_s: float, fresh_ports: bool = False, attempts: int = 3) -> None:
        """Start a worker node and wait until the GCS has it. On a busy machine a node can miss
        Ray's own start-up deadlines (its raylet waits 15 s for its agents, `ray start` 30 s for
        the raylet): it is started again, on fresh ports, up to `attempts` times."""
        stale = frozenset({node.node_id} if node.node_id else ())
        for attempt in range(1, attempts + 1):
            if fresh_ports or attempt > 1:
                ports = PortAllocator()
                ports.taken = self.ports_in_use()
                node.ports = _node_ports(ports)
                node.worker_ports = [ports() for _ in range(WORKER_PORTS_PER_NODE)]
            self._launch(node)
            try:
                self.wait_nodes(timeout_s, stale)
                return
            except RuntimeError:  # its ray start gave up
                if attempt == attempts:
                    raise
                if node.pid:
                    stop_process_tree(node.pid)

    # ---- stopping ------------------------------------------------------------------------

    def stop(self, timeout_s: float = 45) -> None:
        """Stop every node started here, all at once (each `ray start` drains its node, then
        stops its processes), then anything they left behind."""
        procs, trees = [], []
        for node in [*self.workers, self.head]:
            proc = node.process()
            if proc is None:
                continue
            trees += proc.children(recursive=True)
            try:
                proc.send_signal(signal.SIGTERM)
                procs.append(proc)
            except psutil.Error:
                pass
        _finish([*procs, *trees], timeout_s)
        if self.redis is not None:
            self.redis.stop()
        _reap()
        if self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def ports_in_use(self) -> set[int]:
        """Every port handed to a node (so a caller picks others)."""
        nodes = [self.head, *self.workers]
        used = {p for n in nodes for p in [*n.ports.values(), *n.worker_ports, n.serve_http_port, n.serve_grpc_port] if p}
        return used | ({self.redis.port} if self.redis else set())

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


# ---- the embedserve application on it (the chart's serveConfigV2) ---------------------------

APP = "embedserve"


def render_chart(helm: str, chart: str | Path, values: list[str | Path] = (), sets: list[str] = ()) -> list[dict]:
    """The chart's manifests as `helm template` renders them."""
    import yaml

    cmd = [helm, "template", "embedserve", str(chart)]
    for path in values:
        cmd += ["-f", str(path)]
    for item in sets:
        cmd += ["--set", item]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"helm template failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _rayservice(docs: list[dict]) -> dict:
    (service,) = [d for d in docs if d.get("kind") == "RayService"]
    return service


def chart_serve_config(docs: list[dict]) -> dict:
    """The Ray Serve config of the rendered chart (the RayService's serveConfigV2)."""
    import yaml

    return yaml.safe_load(_rayservice(docs)["spec"]["serveConfigV2"])


def chart_node_env(docs: list[dict], group: str = "cpu") -> dict[str, str]:
    """The environment the chart gives a worker group's Ray containers (plain values; values
    from Secrets are the cluster's own business)."""
    (worker,) = [g for g in _rayservice(docs)["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == group]
    (container,) = worker["template"]["spec"]["containers"]
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def on_loopback(config: dict, http_port: int, grpc_port: int) -> dict:
    """The config with what one machine needs changed: the head's Serve proxy on loopback
    ports of its own (the worker nodes' proxies take theirs from RAY_SERVE_WORKER_PROXY_*)."""
    config = json.loads(json.dumps(config))
    config["http_options"].update(host="127.0.0.1", port=http_port)
    config["grpc_options"]["port"] = grpc_port
    return config


def serve_deploy(cluster: LocalCluster, config: dict, wait: bool = True, timeout_s: float = 600) -> None:
    """`serve deploy` the config to the cluster (through the dashboard's REST API, as KubeRay
    does) and, with `wait`, return once Serve has rolled it out (see wait_rolled_out)."""
    import yaml

    before = _app(cluster).get("last_deployed_time_s")
    path = Path(cluster.temp_dir) / f"serve-config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    serve_cli = Path(sys.executable).parent / "serve"
    out = subprocess.run(
        [str(serve_cli) if serve_cli.exists() else "serve", "deploy", str(path), "-a", cluster.dashboard_url],
        env=cluster.subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"serve deploy failed:\n{out.stdout}\n{out.stderr}")
    if wait:
        wait_rolled_out(cluster, before, timeout_s)


def _app(cluster: LocalCluster, app: str = APP) -> dict:
    try:
        return (serve_status(cluster).get("applications") or {}).get(app) or {}
    except (OSError, ValueError):
        return {}


def wait_rolled_out(cluster: LocalCluster, deployed_before: float | None = None, timeout_s: float = 600,
                    app: str = APP) -> dict:
    """Wait until Serve took the config deployed after `deployed_before` and rolled it out: the
    application RUNNING, no deployment updating (or unhealthy), no replica stopping."""
    status: dict = {}

    def done() -> bool:
        nonlocal status
        status = _app(cluster, app)
        if status.get("status") == "DEPLOY_FAILED":
            raise RuntimeError(f"{app} failed to deploy: {status.get('message')}")
        deployments = status.get("deployments") or {}
        return (
            status.get("last_deployed_time_s") not in (None, deployed_before)
            and status.get("status") == "RUNNING"
            and bool(deployments)
            # Autoscaling may go on (UPSCALING, DOWNSCALING): the rollout itself is over.
            and all(d.get("status") in ("HEALTHY", "UPSCALING", "DOWNSCALING") for d in deployments.values())
            and not any(r.get("state") == "STOPPING" for d in deployments.values() for r in d.get("replicas", []))
        )

    try:
        LocalCluster._wait(done, timeout_s, f"application {app} to roll out")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last status: {json.dumps(status)[:3000]}") from None
    return status


def serve_status(cluster: LocalCluster) -> dict:
    """Serve's view of the cluster (GET /api/serve/applications/): applications, their
    deployments and every replica with its node."""
    return cluster.api("/api/serve/applications/")


def replicas(cluster: LocalCluster, deployment: str, app: str = APP) -> list[dict]:
    """The deployment's replicas (state, node_id, pid, ...), each with `node`: its node's name."""
    names = cluster.node_names()
    apps = serve_status(cluster).get("applications") or {}
    found = (apps.get(app) or {}).get("deployments", {}).get(deployment, {}).get("replicas", [])
    return [{**r, "node": names.get(r.get("node_id"), "?")} for r in found]


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


# ---- make cluster / make cluster-down ----------------------------------------------------------

STATE = Path(".cluster/state.json")


def up(args) -> int:
    """Start the cluster and Redis, deploy the chart's application, print where it answers."""
    if args.state.exists():
        print(f"a cluster is already up ({args.state}); `make cluster-down` stops it", file=sys.stderr)
        return 1
    artifact_dir = os.environ.get("EMBEDSERVE_ARTIFACT_DIR") or str(Path.home() / ".cache" / "embedserve")
    chart = render_chart(args.helm, args.chart, args.values, args.set)
    cluster = LocalCluster.start(
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, redis=True,
        # The chart's pod env; the models are where this machine keeps them (the image's are in it).
        node_env={**chart_node_env(chart), "EMBEDSERVE_ARTIFACT_DIR": artifact_dir},
    )
    args.state.parent.mkdir(parents=True, exist_ok=True)
    cluster.save(args.state)  # from here on, `make cluster-down` can stop what was started
    ports = PortAllocator()
    ports.taken = cluster.ports_in_use()
    http_port, grpc_port = args.http_port or ports(), args.grpc_port or ports()
    config = on_loopback(chart_serve_config(chart), http_port, grpc_port)
    print(f"deploying the chart's serveConfigV2 ({', '.join(map(str, args.values))}) to {cluster.dashboard_url}", flush=True)
    serve_deploy(cluster, config, timeout_s=args.timeout_s)
    print(describe(cluster, http_port, grpc_port))
    return 0


def describe(cluster: LocalCluster, http_port: int, grpc_port: int) -> str:
    lines = [
        f"embedserve runs on a local Ray cluster: a head (no CPUs) and {len(cluster.workers)} worker nodes",
        f"  HTTP   http://127.0.0.1:{http_port}/v1/embeddings   (the head's Serve proxy)",
        f"  gRPC   127.0.0.1:{grpc_port}",
    ]
    for w in cluster.workers:
        lines.append(f"         {w.name}'s proxy: http://127.0.0.1:{w.serve_http_port}  gRPC 127.0.0.1:{w.serve_grpc_port}")
    lines += [
        f"  Ray    {cluster.address}   dashboard {cluster.dashboard_url}   (RAY_AUTH_MODE=token; the token is in {STATE})",
        f"  Redis  {cluster.redis.url if cluster.redis else '-'}   (the cache every Ingress replica shares)",
        "  Replicas:",
    ]
    for deployment, reps in sorted(placement(cluster).items()):
        lines.append(f"    {deployment}: " + ", ".join(sorted(reps)))
    lines.append("`make cluster-down` stops it all.")
    return "\n".join(lines)


def placement(cluster: LocalCluster, app: str = APP) -> dict[str, list[str]]:
    """{deployment: [node name of each running replica]}."""
    names = cluster.node_names()
    deployments = ((serve_status(cluster).get("applications") or {}).get(app) or {}).get("deployments", {})
    return {
        name: [names.get(r.get("node_id"), "?") for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
        for name, d in deployments.items()
    }


def down(args) -> int:
    """Stop exactly what `up` started (the pids in the state file), and forget it."""
    if not args.state.exists():
        print(f"no cluster is up ({args.state} is missing)")
        return 0
    cluster = LocalCluster.load(args.state)
    cluster.stop()
    args.state.unlink()
    print(f"stopped the local cluster ({cluster.address}) and its Redis")
    return 0


def print_config(args) -> int:
    """The chart's serveConfigV2, as `serve deploy` takes it (for a cluster of your own)."""
    import yaml

    print(yaml.safe_dump(chart_serve_config(render_chart(args.helm, args.chart, args.values or [], args.set)),
                         sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m serving.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, default=STATE, help=f"where the cluster's pids and token are kept [{STATE}]")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster, Redis and the chart's application")
    p_up.add_argument("--workers", type=int, default=2)
    p_up.add_argument("--cpus-per-worker", type=int, default=1)
    p_up.add_argument("--http-port", type=int, default=None, help="the head proxy's HTTP port [a free one]")
    p_up.add_argument("--grpc-port", type=int, default=None, help="the head proxy's gRPC port [a free one]")
    p_up.add_argument("--timeout-s", type=float, default=600)
    p_up.set_defaults(func=up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=down)
    p_config = sub.add_parser("config", help="print the chart's serveConfigV2 (for `serve deploy` to a cluster of yours)")
    for p in (p_up, p_config):
        p.add_argument("--helm", default=os.environ.get("HELM") or shutil.which("helm") or ".tools/bin/helm")
        p.add_argument("--chart", default="helm/embedserve")
        p.add_argument("--values", type=Path, action="append", default=None,
                       help="chart values files [up: helm/embedserve/ci/local-cluster-values.yaml; config: none]")
        p.add_argument("--set", action="append", default=[], help="a chart value, as helm --set takes it")
    p_config.set_defaults(func=print_config)
    args = parser.parse_args(argv)
    if args.command == "up" and args.values is None:
        args.values = [Path(args.chart) / "ci" / "local-cluster-values.yaml"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
