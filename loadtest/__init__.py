"""Load generator and benchmarks for embedserve.

`python -m loadtest` drives a running service (HTTP or gRPC, closed or open loop);
`python -m loadtest.bench` measures the service against raw ONNX Runtime and
sentence-transformers and writes BENCHMARKS.md (with `python -m loadtest.bench_tasks`'s section:
rerank and sparse against their raw engines); `python -m loadtest.profile` breaks a request's
time into stages.
"""
