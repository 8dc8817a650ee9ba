"""The running service says what runs each model: backend, the precision that actually runs, the
CPU and its inference flags, why that variant, and every variant's measured fidelity; over HTTP
(`/v1/models`) and gRPC (`ListModels`) alike."""

from __future__ import annotations

import pytest

from models import cpu as cpuinfo
from models.artifacts import ModelArtifacts
from models.specs import resolve_model
from models.variants import FidelityFloor, choose
from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from tests.support.service import artifact_dir

pytestmark = pytest.mark.integration

MEASURED_VARIANTS = {"fp32", "optimized", "openvino-fp32", "openvino-bf16"}


def expected_variant(model_id: str) -> str:
    manifest = ModelArtifacts.load(artifact_dir(), resolve_model(model_id)).manifest["variants"]
    return choose("auto", manifest, cpuinfo.detect()).variant.name


def test_v1_models_names_the_backend_precision_cpu_and_fidelity(service):
    status, _, body = service.get("/v1/models")
    assert status == 200
    here = cpuinfo.detect()
    for card in body["data"]:
        e = card["engine"]
        assert e["variant"] == expected_variant(card["id"])
        assert e["backend"] == ("openvino" if e["variant"].startswith("openvino") else "onnxruntime")
        assert e["precision"] == ("bf16" if e["variant"] == "openvino-bf16" and here.bf16 else "fp32")
        assert e["cpu"]["features"] == here.features and e["cpu"]["bf16"] == here.bf16 and e["cpu"]["model"]
        assert e["device"] == "CPU" and e["version"] and e["threads"] >= 1
        assert e["choice"].startswith("auto:")
        floor = FidelityFloor()
        assert e["fidelity"]["min_cos"] >= floor.min_cos and e["fidelity"]["top10_kept"] >= floor.top10_kept
        # Every variant's figures, as measured at export (tests/test_fidelity.py holds them to bounds).
        figures = {v["variant"]: v for v in card["variants"]}
        assert MEASURED_VARIANTS <= set(figures)
        exported = ModelArtifacts.load(artifact_dir(), resolve_model(card["id"])).manifest["variants"]
        for name in MEASURED_VARIANTS:
            fid, measured = figures[name]["fidelity"], exported[name]["fidelity"]
            assert {k: fid[k] for k in ("min_cos", "mean_cos", "top10_kept", "precision")} == {
                k: measured[k] for k in ("min_cos", "mean_cos", "top10_kept", "precision")}
            # A third of them are the longest calibration texts: 89 fill MiniLM's 256-token window, 36 mpnet's 384.
            assert fid["texts"] == 300 and fid["long_texts"] >= 30 and fid["measured_at"] == "export"


def test_grpc_list_models_says_the_same(service):
    with service.grpc_channel() as channel:
        resp = pbg.EmbeddingServiceStub(channel).ListModels(pb.ListModelsRequest(), metadata=service.grpc_metadata)
    _, _, body = service.get("/v1/models")
    http = {c["id"]: c for c in body["data"]}
    assert {m.id for m in resp.models} == set(http)
    for m in resp.models:
        e = http[m.id]["engine"]
        assert (m.engine.variant, m.engine.backend, m.engine.precision) == (e["variant"], e["backend"], e["precision"])
        assert list(m.engine.cpu.features) == e["cpu"]["features"] and m.engine.cpu.bf16 == e["cpu"]["bf16"]
        assert m.engine.HasField("fidelity") and m.engine.fidelity.min_cos == pytest.approx(e["fidelity"]["min_cos"])
        grpc_figures = {v.variant: v for v in m.variants}
        assert MEASURED_VARIANTS <= set(grpc_figures)
        assert grpc_figures["openvino-bf16"].fidelity.top10_kept == pytest.approx(
            next(v for v in http[m.id]["variants"] if v["variant"] == "openvino-bf16")["fidelity"]["top10_kept"])
