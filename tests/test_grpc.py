"""gRPC: the same vectors as HTTP, streaming for bulk work, models, health, mapped errors."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg

pytestmark = pytest.mark.integration

TEXTS = ["gRPC and HTTP share one pipeline", "short", "a somewhat longer sentence " * 20]


@pytest.fixture(scope="module")
def stub(service):
    with service.grpc_channel() as channel:
        yield pbg.EmbeddingServiceStub(channel), service.grpc_metadata


def http_vectors(service, **extra) -> np.ndarray:
    status, _, body = service.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": TEXTS, **extra})
    assert status == 200
    return np.array([d["embedding"] for d in body["data"]])


def test_embed_returns_the_same_vectors_as_http(stub, service):
    s, md = stub
    resp = s.Embed(pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=TEXTS), metadata=md)
    got = np.array([list(e.values) for e in resp.data])
    np.testing.assert_allclose(got, http_vectors(service), atol=1e-6)
    assert [e.index for e in resp.data] == [0, 1, 2]
    assert resp.usage.prompt_tokens > 0 and resp.model == "sentence-transformers/all-MiniLM-L6-v2"


def test_embed_sends_timings_cache_hits_and_batch_size_as_trailing_metadata(stub):
    s, md = stub
    texts = ["trailing metadata, once", "trailing metadata, twice"]
    for expected_hits in ("0", "2"):  # the second call is answered from the cache
        _, call = s.Embed.with_call(pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=texts), metadata=md)
        trailing = dict(call.trailing_metadata())
        assert trailing["x-cache-hits"] == expected_hits, trailing
        assert int(trailing["x-batch-size"]) >= (1 if expected_hits == "0" else 0)
        assert float(trailing["x-total-time"]) > 0


def test_dimensions_and_quantized_formats_match_http(stub, service):
    s, md = stub
    for fmt, name in [(pb.ENCODING_FORMAT_INT8, "int8"), (pb.ENCODING_FORMAT_UBINARY, "ubinary")]:
        resp = s.Embed(pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=TEXTS, dimensions=128, encoding_format=fmt), metadata=md)
        dtype = np.int8 if name == "int8" else np.uint8
        got = np.array([np.frombuffer(e.quantized, dtype=dtype) for e in resp.data])
        np.testing.assert_array_equal(got, http_vectors(service, dimensions=128, encoding_format=name))


def test_stream_embeds_bulk_work_in_chunks_with_indices(stub, service):
    s, md = stub
    texts = [f"bulk text number {i}" for i in range(700)]
    seen = {}
    chunks = 0
    for resp in s.EmbedStream(pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=texts, chunk_size=100), metadata=md):
        chunks += 1
        for e in resp.data:
            seen[e.index] = np.array(e.values)
    assert chunks == 7 and sorted(seen) == list(range(700))
    status, _, body = service.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": texts[650]})
    np.testing.assert_allclose(seen[650], body["data"][0]["embedding"], atol=1e-6)


def test_list_models_gives_dimensions_and_int8_scales(stub):
    s, md = stub
    models = {m.id: m for m in s.ListModels(pb.ListModelsRequest(), metadata=md).models}
    mini = models["sentence-transformers/all-MiniLM-L6-v2"]
    assert mini.dimension == 384 and mini.max_input_tokens == 256 and mini.matryoshka_any
    assert len(mini.int8_scales) == 384 and all(sc.scale > 0 for sc in mini.int8_scales)
    assert models["sentence-transformers/all-mpnet-base-v2"].dimension == 768


@pytest.mark.parametrize(
    "request_,code",
    [
        (pb.EmbedRequest(model="nope", texts=["x"]), grpc.StatusCode.NOT_FOUND),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=[]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=[""]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=["x"], dimensions=0), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=["x"], dimensions=999), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=["x"], dimensions=12, encoding_format=pb.ENCODING_FORMAT_BINARY), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=["x"], encoding_format=42), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=["w " * 400], truncate=pb.TRUNCATE_NONE), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.EmbedRequest(model="all-MiniLM-L6-v2", texts=["x"] * 2049), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_requests_get_mapped_codes_with_a_message(stub, request_, code):
    s, md = stub
    with pytest.raises(grpc.RpcError) as err:
        s.Embed(request_, metadata=md)
    assert err.value.code() == code
    assert len(err.value.details()) > 10


def test_health_check_serves_kubernetes_probes(service):
    with service.grpc_channel() as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), metadata=service.grpc_metadata)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_calls_the_service_without_the_proto_files(service):
    """What `grpcurl <host:port> list` and a call by name do: everything from the server."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with service.grpc_channel() as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        assert {"embedserve.v1.EmbeddingService", "grpc.health.v1.Health"} <= set(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)  # not the generated modules' pool
        method = pool.FindServiceByName("embedserve.v1.EmbeddingService").FindMethodByName("Embed")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary("/embedserve.v1.EmbeddingService/Embed", request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)
        resp = call(request_cls(model="all-MiniLM-L6-v2", texts=["reflected"]), metadata=service.grpc_metadata)
    assert len(resp.data) == 1 and len(resp.data[0].values) == 384
