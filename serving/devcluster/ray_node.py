"""One node of the development cluster: its ports, its process (one `ray start --block`, its own
process group) and the `ray start` command that starts it, as head (no CPUs, the dashboard, the
GCS) or as a worker joining the head's address. The cluster of them: serving.devcluster.nodes."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from serving.devcluster.processes import PortAllocator, children

NODE_LABEL = "embedserve.local/node"  # head, worker-0, worker-1, ...
WORKER_PORTS_PER_NODE = 32  # ports for the node's worker processes (one per Ray worker)


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
        child = children.get(self.pid)
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


def ray_start_command(node: Node, address: str, temp_dir: str, object_store_mb: int) -> list[str]:
    """The node's `ray start --block` command line: every port explicit, the cluster's temp dir."""
    p = node.ports
    cmd = [
        ray_cli(), "start", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1",
        "--node-manager-port", str(p["node_manager"]),
        "--object-manager-port", str(p["object_manager"]),
        "--dashboard-agent-listen-port", str(p["dashboard_agent_http"]),
        "--dashboard-agent-grpc-port", str(p["dashboard_agent_grpc"]),
        "--runtime-env-agent-port", str(p["runtime_env_agent"]),
        "--metrics-export-port", str(p["metrics_export"]),
        "--worker-port-list", ",".join(map(str, node.worker_ports)),
        "--object-store-memory", str(object_store_mb << 20),
        "--temp-dir", temp_dir,
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
            "--address", address, "--num-cpus", whole_cpus(node.num_cpus),
            "--include-log-monitor", "false",  # one log monitor per machine (the head's)
        ]
    return cmd


def node_ports(ports: PortAllocator, head: bool = False) -> dict[str, int]:
    names = ["node_manager", "object_manager", "dashboard_agent_http", "dashboard_agent_grpc",
             "runtime_env_agent", "metrics_export"]
    if head:
        names += ["gcs", "dashboard", "ray_client"]
    return {n: ports() for n in names}


def whole_cpus(n: float) -> str:
    if float(n) != int(n):
        raise ValueError(f"ray start takes whole CPUs, not {n}")
    return str(int(n))


def ray_cli() -> str:
    """The `ray` script of this Python environment (not whichever is first on PATH)."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")
