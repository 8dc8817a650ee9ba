"""`embedserve serve --ray-address` serves the ports it was asked for, or refuses with one line:
Ray Serve's controller and replicas take their ingress switches from their node's environment,
not the CLI's, so the CLI reads the nodes' (launch.cluster_ingress) before it starts Serve. Once
a cluster started without the direct-ingress environment got the application on a random port
while the banner said "ingress: direct" on the asked one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from serving.devcluster.nodes import LocalCluster
from serving.launch import IngressConfig, IngressMismatch, ingress_on_cluster
from tests.support.redis_server import quiet_ports
from tests.support.service import ROOT, App, artifact_dir

M = "all-MiniLM-L6-v2"
ASKED = IngressConfig("direct", "127.0.0.1", 21000, 21001)
PROXY_NODES = {"kind": "proxy", "http_port": None, "grpc_port": None}


def test_nodes_without_direct_ingress_get_rays_proxy_on_the_asked_ports():
    got = ingress_on_cluster(ASKED, PROXY_NODES, running=None)
    assert (got.kind, got.http_port, got.grpc_port) == ("proxy", 21000, 21001)
    # Serve already runs there, its proxy on the asked port: it is used as it is.
    assert ingress_on_cluster(ASKED, PROXY_NODES, running=(21000, 21001)).kind == "proxy"


def test_a_serve_already_running_on_other_ports_is_refused_with_the_ports_to_use():
    with pytest.raises(IngressMismatch, match="proxy on HTTP port 8000 .*--http-port 8000 --grpc-port 9000"):
        ingress_on_cluster(ASKED, PROXY_NODES, running=(8000, 9000))


def test_direct_ingress_nodes_serve_only_the_ports_their_environment_names():
    nodes = {"kind": "direct", "http_port": 30000, "grpc_port": 40000}
    with pytest.raises(IngressMismatch, match="from 30000 and gRPC from 40000.*--http-port 30000 --grpc-port 40000"):
        ingress_on_cluster(ASKED, nodes, running=None)
    same = IngressConfig("direct", "127.0.0.1", 30000, 40000)
    assert ingress_on_cluster(same, nodes, running=None) == same


@pytest.mark.integration
def test_serve_onto_a_cluster_without_direct_ingress_answers_on_the_asked_port(tmp_path):
    off = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    cluster = LocalCluster.start(workers=1, cpus_per_worker=2, node_env={**off, "EMBEDSERVE_ARTIFACT_DIR": str(artifact_dir())})
    http_port, grpc_port = quiet_ports(2)
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--ray-address", cluster.address, "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--models", M, "--artifact-dir", str(artifact_dir()), "--cache", "off",
         "--encoder-num-cpus", "1"],
        cwd=ROOT, env=cluster.subprocess_env(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **off), stdout=log,
        stderr=subprocess.STDOUT,
    )

    def tail() -> str:
        log.flush()
        log.seek(0)
        return log.read()[-3000:]

    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops it" not in tail():
            assert proc.poll() is None and time.monotonic() < deadline, tail()
            time.sleep(1)
        assert f"127.0.0.1:{http_port}/v1/embeddings" in tail() and "ingress: proxy" in tail(), tail()
        app = App("embedserve", f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
        status, _, body = app.post("/v1/embeddings", {"model": M, "input": "on the asked port"})
        assert status == 200 and len(body["data"][0]["embedding"]) == 384, body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, tail()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        cluster.stop()
