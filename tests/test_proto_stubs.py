"""The committed gRPC stubs are what `make proto` generates from the proto today."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO = "proto/embedserve/v1/embedding.proto"
STUBS = ["embedding_pb2.py", "embedding_pb2.pyi", "embedding_pb2_grpc.py"]


def test_committed_stubs_match_the_proto(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the same paths as the Makefile's `proto` target
    args = ["protoc", "-Iserving/grpc_gen=proto/embedserve/v1", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", PROTO]
    assert protoc.main(args) == 0
    for name in STUBS:
        fresh = (tmp_path / "serving" / "grpc_gen" / name).read_text()
        assert fresh == (ROOT / "serving" / "grpc_gen" / name).read_text(), f"{name} is stale: run make proto"


def test_the_proto_has_the_input_type_window_and_model_fields():
    from serving.grpc_gen import embedding_pb2 as pb

    assert pb.EmbedRequest.DESCRIPTOR.fields_by_name["input_type"].number == 8
    assert pb.Embedding.DESCRIPTOR.fields_by_name["windows"].number == 4
    assert pb.TRUNCATE_WINDOW == 4
    numbers = {f.name: f.number for f in pb.ModelInfo.DESCRIPTOR.fields}
    assert all(numbers[n] >= 20 for n in ("prompts", "input_types", "prompts_declared", "window_tokens",
                                          "window_overlap_tokens", "max_windows_per_text"))
