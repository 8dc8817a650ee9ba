"""The README's client snippets (the OpenAI and Cohere clients, LangChain, LlamaIndex, Haystack)
run as written, with the real packages, against the running service: only the base URL is
replaced by the test service's. Each gets the service's own vectors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.support.service import ROOT

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
M = "all-MiniLM-L6-v2"


def snippets(heading: str) -> list[str]:
    section = README.split(heading, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


# The embedding snippets (the LangChain rerank one needs a cross-encoder: tests/test_hybrid_recipe.py).
FRAMEWORKS = [c for c in snippets("### Frameworks: LangChain, LlamaIndex, Haystack") if "vectors = " in c]


def run(code: str, service) -> dict:
    namespace: dict = {}
    exec(compile(code.replace("http://localhost:8000", service.http_url), "README.md", "exec"), namespace)
    return namespace


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    monkeypatch.setenv("LANGSMITH_TRACING", "false")


@pytest.mark.parametrize("code", FRAMEWORKS, ids=["langchain", "llamaindex", "haystack"])
def test_a_framework_snippet_gets_the_services_vectors(service, code):
    got = np.array(run(code, service)["vectors"], dtype=np.float64)
    body = service.post("/v1/embeddings", {"model": M, "input": ["Hello, world", "Vectors, fast"]})[2]
    want = np.array([d["embedding"] for d in body["data"]])
    assert got.shape == want.shape == (2, 384)
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999


def test_the_openai_client_snippet_runs(service):
    (code,) = snippets("### The OpenAI Python client, unmodified")
    vector = np.array(run(code, service)["vector"])
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-4


def test_the_cohere_client_snippet_runs(service):
    (code,) = snippets("### Cohere's embed API, with the unmodified `cohere` client")
    ns = run(code, service)
    assert np.array(ns["floats"]).shape == (1, 256) and np.array(ns["bits"]).shape == (1, 32)
