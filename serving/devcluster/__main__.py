"""`make cluster` / `make cluster-down`: a local multi-node Ray cluster running the chart's
application (serving.devcluster.nodes, .chart); `config` prints the chart's serveConfigV2."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from serving.devcluster.chart import (
    chart_serve_config, loopback_config, placement, render_chart, serve_deploy, start_for_chart,
)
from serving.devcluster.nodes import LocalCluster

STATE = Path(".cluster/state.json")


def up(args) -> int:
    """Start the cluster and Redis, deploy the chart's application, print where it answers."""
    if args.state.exists():
        print(f"a cluster is already up ({args.state}); `make cluster-down` stops it", file=sys.stderr)
        return 1
    artifact_dir = os.environ.get("EMBEDSERVE_ARTIFACT_DIR") or str(Path.home() / ".cache" / "embedserve")
    chart = render_chart(args.helm, args.chart, args.values, args.set)
    # The models are where this machine keeps them (the image's are in it).
    cluster = start_for_chart(chart, artifact_dir, args.workers, args.cpus_per_worker, redis=True)
    args.state.parent.mkdir(parents=True, exist_ok=True)
    cluster.save(args.state)  # from here on, `make cluster-down` can stop what was started
    free = cluster.free_ports(2)
    http_port, grpc_port = args.http_port or free[0], args.grpc_port or free[1]
    config = loopback_config(chart, http_port, grpc_port)
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

    parser = argparse.ArgumentParser(prog="python -m serving.devcluster", description=__doc__.split("\n\n")[0])
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
