"""The bulk job on an existing multi-node Ray cluster (`--ray-address`): a local cluster of a
CPU-less head and two worker nodes (serving/devcluster/, token auth); the encoder actors run on
both worker nodes and the output is whole."""

from __future__ import annotations

import pytest

from tests.support.batch import corpus_texts, manifests, read_vectors, run_cli, write_parquet

pytestmark = pytest.mark.integration

N = 160


def test_a_job_on_a_two_node_cluster_runs_on_both_nodes(ray_cluster, tmp_path):
    ids = [f"n-{i:03d}" for i in range(N)]
    path = write_parquet(tmp_path / "corpus.parquet", ids, corpus_texts(N))
    out = tmp_path / "out"
    # Half a CPU an actor: they fit beside whatever else the session has deployed on this
    # cluster; Ray Data spreads an actor pool over the nodes.
    proc = run_cli(path, out, "--ray-address", ray_cluster.address, "--workers", "2", "--shard-rows", "20",
                   "--encoder-num-cpus", "0.5", env=ray_cluster.subprocess_env(HF_HUB_OFFLINE="1"))
    assert f"{N} rows in, {N} vectors out, 0 errors" in proc.stdout

    workers = {node_id for name, node_id in ray_cluster.node_ids().items() if name.startswith("worker-")}
    assert len(workers) == 2
    assert {m["node_id"] for m in manifests(out)} == workers  # an actor on each worker node
    got, vectors, _ = read_vectors(out)
    assert got == ids and vectors.shape == (N, 384)
