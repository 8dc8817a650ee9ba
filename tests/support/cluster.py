"""The multi-node Ray cluster of the cluster tests (serving/devcluster/) and the chart's
application on it.

`ray_cluster` (session): a head with no CPUs and two worker nodes of one CPU each, each its own
raylet, token-authenticated, plus the Redis every Ingress replica shares; its nodes get the
chart's pod environment (helm/embedserve/ci/local-cluster-values.yaml rendered). `cluster_app`
(session): that value set's serveConfigV2, as `helm template` renders it, deployed with
`serve deploy` (only its proxy ports moved to free loopback ones). Both are registered in
conftest.py and stopped at the end of the session. The test process itself is connected to
another Ray (`ray_serve`), so this cluster is driven through subprocesses and HTTP only.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import ModelArtifacts
from models.encoder import Encoder
from models.specs import resolve_model
from serving.devcluster.chart import loopback_config, placement, render_chart, serve_deploy, start_for_chart
from serving.devcluster.nodes import LocalCluster
from serving.launch import send_request
from tests.support.helm import INSTALL_HINT, REPO_ROOT, find_helm
from tests.support.service import artifact_dir

WORKERS = 2
CPUS_PER_WORKER = 1
CHART = REPO_ROOT / "helm" / "embedserve"
VALUES = CHART / "ci" / "local-cluster-values.yaml"
MODEL = "all-MiniLM-L6-v2"
ENCODER = "Encoder_all-minilm-l6-v2"
INGRESS = "Ingress"


def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.fail(f"helm is missing: {INSTALL_HINT}", pytrace=False)
    return path


def chart(*sets: str) -> list[dict]:
    """The chart rendered with the local-cluster value set (and `--set` values)."""
    return render_chart(helm(), CHART, [VALUES], list(sets))


@pytest.fixture(scope="session")
def ray_cluster():
    # The chart's pod env (Redis URL replaced by the local one); the models where the tests keep them.
    cluster = start_for_chart(chart(), artifact_dir(), WORKERS, CPUS_PER_WORKER, redis=True)
    yield cluster
    # Nothing to drain at the session's end: what is still up after 10 s is killed (left to
    # itself, a straggler of the nodes' process trees held the session ~35 s).
    cluster.stop(timeout_s=10)


@dataclass
class ClusterApp:
    """The chart's application on the local cluster: where to call it, what runs where."""

    cluster: LocalCluster
    http_port: int
    grpc_port: int
    sets: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)

    def deploy(self, *sets: str, artifact_dir: Path | None = None, timeout_s: float = 600) -> dict:
        """Render the chart with these `--set` values, `serve deploy` its serveConfigV2 (with
        the models from `artifact_dir`, if given: the image's own place otherwise), and return
        once Serve has rolled it out and the application answers /ready."""
        config = loopback_config(chart(*sets), self.http_port, self.grpc_port)
        if artifact_dir is not None:
            config["applications"][0]["args"]["artifact_dir"] = str(artifact_dir)
        serve_deploy(self.cluster, config, timeout_s=timeout_s)
        self.sets, self.config = tuple(sets), config
        LocalCluster._wait(lambda: self.ready(), 120, "/ready")
        return config

    @property
    def args(self) -> dict:
        return self.config["applications"][0]["args"]

    def deployment_config(self, name: str) -> dict:
        return next(d for d in self.config["applications"][0]["deployments"] if d["name"] == name)

    def url(self, node: str = "head") -> str:
        """A node's Serve proxy: the head's (the Serve config's port) or a worker's."""
        if node == "head":
            return f"http://127.0.0.1:{self.http_port}"
        return f"http://127.0.0.1:{self.cluster.node(node).serve_http_port}"

    def post(self, texts: list[str], node: str = "head", timeout: float = 120) -> tuple[int, dict, object]:
        body = json.dumps({"model": MODEL, "input": texts}).encode()
        req = urllib.request.Request(self.url(node) + "/v1/embeddings", data=body,
                                     headers={"content-type": "application/json"})
        return _send(req, timeout)

    def get(self, path: str, node: str = "head", timeout: float = 30) -> tuple[int, dict, object]:
        return _send(urllib.request.Request(self.url(node) + path), timeout)

    def ready(self) -> bool:
        try:
            return self.get("/ready", timeout=15)[0] == 200
        except OSError:
            return False

    def placement(self) -> dict[str, list[str]]:
        """{deployment: [node name of each RUNNING replica]}."""
        return placement(self.cluster)

    def encoder_calls(self, node: str) -> float:
        """Encoder calls the node's replicas have finished (Serve's own per-replica counter,
        from the node's Prometheus endpoint)."""
        with urllib.request.urlopen(self.cluster.node(node).metrics_url, timeout=15) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("ray_serve_deployment_processing_latency_ms_count{") and f'deployment="{ENCODER}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


def _send(req, timeout) -> tuple[int, dict, object]:
    status, headers, body = send_request(req, timeout)
    return status, {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture(scope="session")
def cluster_app(ray_cluster):
    app = ClusterApp(ray_cluster, *ray_cluster.free_ports(2))
    app.deploy()
    return app


# ---- what the answers must be -----------------------------------------------------------------


class Reference:
    """The engine's vectors (unit length) for texts, per model version (artifact dir and ONNX
    variant), each text computed once."""

    def __init__(self) -> None:
        self.encoders: dict[tuple, Encoder] = {}
        self.vectors: dict[tuple, np.ndarray] = {}

    def of(self, texts: list[str], variant: str = "optimized", artifacts: Path | None = None) -> np.ndarray:
        version = (str(artifacts or artifact_dir()), variant)
        if version not in self.encoders:
            spec = resolve_model(MODEL)
            self.encoders[version] = Encoder(spec, ModelArtifacts.load(Path(version[0]), spec), variant=variant,
                                             providers="cpu", intra_op_threads=1)
        todo = list(dict.fromkeys(t for t in texts if (version, t) not in self.vectors))
        for i in range(0, len(todo), 64):
            batch = todo[i:i + 64]
            for t, v in zip(batch, self.encoders[version].embed(batch)):
                self.vectors[(version, t)] = v
        return np.stack([self.vectors[(version, t)] for t in texts])


def other_weights(root: Path, variant: str = "optimized", noise: float = 0.1) -> Path:
    """An artifact dir holding another version of the model: the exported graph with its word
    embeddings perturbed (as an export from retrained weights would differ), under its own
    checksum in its own manifest. Its vectors differ from the original's for every text
    (cosine about 0.996-0.999) and, like any fp32 graph's, do not depend on the batch."""
    import hashlib
    import shutil

    import onnx
    from onnx import numpy_helper

    spec = resolve_model(MODEL)
    src = ModelArtifacts.load(artifact_dir(), spec)
    dest = root / src.root.name
    dest.mkdir(parents=True, exist_ok=True)
    graph = onnx.load(str(src.onnx_path(variant)))
    for tensor in graph.graph.initializer:
        if tensor.name == "embeddings.word_embeddings.weight":
            w = numpy_helper.to_array(tensor)
            w = w + noise * w.std() * np.random.default_rng(0).standard_normal(w.shape)
            tensor.CopyFrom(numpy_helper.from_array(w.astype(np.float32), tensor.name))
            break
    else:
        raise AssertionError("no word embeddings in the graph")
    onnx.save(graph, str(dest / src.onnx_path(variant).name))
    shutil.copy(src.tokenizer_path, dest / src.tokenizer_path.name)
    manifest = json.loads((src.root / "manifest.json").read_text())
    info = manifest["variants"][variant]
    digest = hashlib.sha256((dest / src.onnx_path(variant).name).read_bytes()).hexdigest()
    manifest["variants"] = {variant: {**info, "sha256": digest}}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return root


def vectors_of(body: dict, n: int) -> np.ndarray | None:
    """The answer's float vectors in input order, or None if it is not a whole answer for n texts."""
    try:
        data = body["data"]
        if [d["index"] for d in data] != list(range(n)):
            return None
        return np.array([d["embedding"] for d in data], dtype=np.float32)
    except (KeyError, TypeError, ValueError):
        return None


def unique_texts(prefix: str):
    """An endless supply of distinct short texts (never cached before: the prefix is per test)."""
    vocab = ("river stone lamp orbit cedar signal harbor quiet ember violet copper tundra meadow prism "
             "lantern falcon summit glacier canyon willow").split()
    i = 0
    while True:
        i += 1
        yield f"{prefix} {i}: " + " ".join(vocab[(i * 7 + k * 3) % len(vocab)] for k in range(6 + i % 17))


def worker_index(node: str) -> int:
    return int(re.fullmatch(r"worker-(\d+)", node).group(1))
