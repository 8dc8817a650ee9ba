"""The local multi-node Ray cluster (serving/devcluster/) is the one the chart describes: a head
that does no serving work, worker nodes of one CPU each, each its own raylet, joined only with
the head's token; a node that lacks the token is refused."""

from __future__ import annotations

import subprocess

import pytest

from serving.devcluster.ray_node import NODE_LABEL, Node
from serving.devcluster.processes import PortAllocator, stop_process_tree
from tests.support.cluster import CPUS_PER_WORKER, WORKERS

pytestmark = pytest.mark.integration


def test_a_head_without_cpus_and_worker_nodes_of_one_cpu(ray_cluster):
    alive = [n for n in ray_cluster.nodes() if n["state"] == "ALIVE"]
    by_name = {n["labels"][NODE_LABEL]: n for n in alive}
    assert sorted(by_name) == ["head", *(f"worker-{i}" for i in range(WORKERS))]
    assert by_name["head"]["is_head_node"]
    assert by_name["head"]["resources_total"].get("CPU", 0) == 0  # the head runs no replicas
    for i in range(WORKERS):
        assert by_name[f"worker-{i}"]["resources_total"]["CPU"] == CPUS_PER_WORKER
    assert len({n["node_id"] for n in alive}) == WORKERS + 1  # each node its own raylet


def test_a_node_without_the_head_token_is_refused(ray_cluster):
    ports = PortAllocator()
    ports.taken = ray_cluster.ports_in_use()
    intruder = Node("intruder", {k: ports() for k in ray_cluster.workers[0].ports}, [ports() for _ in range(4)],
                    num_cpus=1)
    env = ray_cluster.node_env_of(intruder)
    env["RAY_AUTH_TOKEN"] = "0" * 64  # a token, but not the head's
    proc = subprocess.Popen(ray_cluster.command(intruder), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it joined and blocks: the token was not checked
        stop_process_tree(proc.pid)
        out = proc.communicate()[0]
    assert proc.returncode not in (0, None), out[-2000:]
    assert "intruder" not in {n["labels"].get(NODE_LABEL) for n in ray_cluster.nodes()}
    assert "InvalidAuthToken" in out, out[-2000:]
