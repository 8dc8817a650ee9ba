"""Every ingress `embedserve serve` offers answers on the ports it was given: HTTP and gRPC (the
test session itself runs the default, direct ingress; these start the CLI with the others, as
the Helm chart (haproxy) and a user may), with API keys enforced, reflection on, and a stop
signal answered by a clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from tests.support.cli import Serve
from tests.support.cli import cli_env as support_cli_env
from tests.support.redis_server import quiet_ports
from tests.support.service import ROOT, App, artifact_dir

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
KEY = "ingress-test-key"


def cli_env() -> dict[str, str]:
    """The CLI's environment: a Ray of its own (not the session's), offline, API keys on."""
    return support_cli_env(EMBEDSERVE_API_KEYS=KEY)


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_the_cli_serves_http_and_grpc_on_its_ports_through_each_ingress(tmp_path, ingress):
    # Ports below the OS's ephemeral range (and Ray's direct-ingress ranges at 30000 / 40000):
    # a port drawn from the ephemeral range can be taken, SO_REUSEPORT and all, by another Serve
    # replica on this machine before HAProxy binds it (once, a keyless call was answered).
    http_port, grpc_port, metrics_port = quiet_ports(3)
    serve = Serve(tmp_path / "serve.log", http_port, grpc_port, metrics_port, "--ingress", ingress, env=cli_env())
    app = App("embedserve", f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    auth = {"authorization": f"Bearer {KEY}"}
    try:
        assert f"ingress: {ingress}" in serve.wait_banner()

        status, _, body = app.post("/v1/embeddings", {"model": M, "input": "through " + ingress}, headers=auth)
        assert status == 200 and len(body["data"][0]["embedding"]) == 384, body
        assert app.post("/v1/embeddings", {"model": M, "input": "no key"})[0] == 401

        with grpc.insecure_channel(app.grpc_target) as channel:
            stub = pbg.EmbeddingServiceStub(channel)
            resp = stub.Embed(pb.EmbedRequest(model=M, texts=["through " + ingress]), metadata=[("authorization", f"Bearer {KEY}")])
            assert len(resp.data[0].values) == 384
            with pytest.raises(grpc.RpcError) as err:
                stub.Embed(pb.EmbedRequest(model=M, texts=["no key"]))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "embedserve.v1.EmbeddingService" in ProtoReflectionDescriptorDatabase(channel).get_services()

        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=90) == 0, serve.output()[-3000:]
    finally:
        serve.close()


def test_the_cli_refuses_ports_another_process_listens_on():
    # gRPC servers (Ray's replicas, HAProxy too) bind with SO_REUSEPORT: a second server on a
    # taken port would start without complaint and the kernel would hand it part of the calls.
    http_port, grpc_port, metrics_port = quiet_ports(3)
    other = grpc.server(futures.ThreadPoolExecutor(1))
    assert other.add_insecure_port(f"127.0.0.1:{grpc_port}") == grpc_port
    other.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "serving.cli", "serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--metrics-port", str(metrics_port), "--models", M, "--artifact-dir", str(artifact_dir())],
            cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120,
        )
    finally:
        other.stop(None)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {grpc_port} (--grpc-port) already in use" in done.stderr, done.stderr
    assert str(http_port) not in done.stderr and "Ctrl-C stops it" not in done.stdout
