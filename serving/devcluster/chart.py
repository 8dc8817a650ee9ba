"""The embedserve application on the development cluster: the Helm chart rendered (its
serveConfigV2, its pods' environment), deployed with `serve deploy` as KubeRay does, and Serve's
view of where each replica runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from serving.devcluster.nodes import LocalCluster

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


def start_for_chart(docs: list[dict], artifact_dir: str | Path, workers: int = 2, cpus_per_worker: float = 1,
                    redis: bool = False) -> LocalCluster:
    """A cluster whose nodes get the rendered chart's pod environment (as KubeRay gives its
    pods), the models read from `artifact_dir` (the image has them inside)."""
    return LocalCluster.start(workers=workers, cpus_per_worker=cpus_per_worker, redis=redis,
                              node_env={**chart_node_env(docs), "EMBEDSERVE_ARTIFACT_DIR": str(artifact_dir)})


def loopback_config(docs: list[dict], http_port: int, grpc_port: int) -> dict:
    """The rendered chart's serveConfigV2, the head's proxy on these loopback ports."""
    return on_loopback(chart_serve_config(docs), http_port, grpc_port)


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


def placement(cluster: LocalCluster, app: str = APP) -> dict[str, list[str]]:
    """{deployment: [node name of each running replica]}."""
    names = cluster.node_names()
    deployments = ((serve_status(cluster).get("applications") or {}).get(app) or {}).get("deployments", {})
    return {
        name: [names.get(r.get("node_id"), "?") for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
        for name, d in deployments.items()
    }
