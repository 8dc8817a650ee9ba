"""Load generator and benchmarks for embedserve.

`python -m loadtest` drives a running service (HTTP or gRPC, closed or open loop);
`python -m loadtest.bench` measures the service against raw ONNX Runtime and
sentence-transformers and writes BENCHMARKS.md; `python -m loadtest.profile` breaks a
request's time into stages.
"""
