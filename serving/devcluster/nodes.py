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

One node (its ports, its `ray start` command): serving.devcluster.ray_node. The chart's
application on it: serving.devcluster.chart; `make cluster`: `python -m
serving.devcluster up | down | config`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from serving.devcluster.local_redis import LocalRedis
from serving.devcluster.processes import PortAllocator, children, finish, process_name, reap, stop_process_tree
from serving.devcluster.ray_node import NODE_LABEL, WORKER_PORTS_PER_NODE, Node, node_ports, ray_start_command


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
        head = Node("head", node_ports(ports, head=True), [ports() for _ in range(WORKER_PORTS_PER_NODE)])
        nodes = [
            Node(f"worker-{i}", node_ports(ports), [ports() for _ in range(WORKER_PORTS_PER_NODE)],
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
        return ray_start_command(node, self.address, self.temp_dir, self.object_store_mb)

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
        # Not waited for here (a Popen left to itself would warn): reap() collects its status.
        children[proc.pid] = proc

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
        raylets = [p for p in tree if process_name(p) == "raylet"]
        assert raylets, f"no raylet under {node.name}'s ray start ({node.pid})"
        for raylet in raylets:
            raylet.send_signal(signal.SIGKILL)
        finish([proc, *tree], timeout_s)

    def restart_worker(self, i: int, timeout_s: float = 120) -> None:
        """Worker node i joins again: a fresh raylet on fresh Ray ports, the same Serve proxy ports."""
        node = self.workers[i]
        assert not node.alive(), f"{node.name} is still running"
        self._join(node, timeout_s, fresh_ports=True)

    def add_worker(self, cpus: float = 1, timeout_s: float = 120) -> Node:
        """One more worker node joins (worker-<n>), with Serve proxy ports of its own."""
        ports = PortAllocator()
        ports.taken = self.ports_in_use()
        node = Node(f"worker-{len(self.workers)}", node_ports(ports), [ports() for _ in range(WORKER_PORTS_PER_NODE)],
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
                node.ports = node_ports(ports)
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
        finish([*procs, *trees], timeout_s)
        if self.redis is not None:
            self.redis.stop()
        reap()
        if self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def ports_in_use(self) -> set[int]:
        """Every port handed to a node (so a caller picks others)."""
        nodes = [self.head, *self.workers]
        used = {p for n in nodes for p in [*n.ports.values(), *n.worker_ports, n.serve_http_port, n.serve_grpc_port] if p}
        return used | ({self.redis.port} if self.redis else set())

    def free_ports(self, n: int) -> list[int]:
        """n free ports none of the cluster's nodes holds (for the head's Serve proxy, say)."""
        ports = PortAllocator()
        ports.taken = self.ports_in_use()
        return [ports() for _ in range(n)]

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
