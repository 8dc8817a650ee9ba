"""The committed openapi.json is the live service's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.api.http_app import build_http_app

COMMITTED = Path(__file__).resolve().parents[1] / "openapi.json"


def test_committed_openapi_matches_the_app():
    assert json.loads(COMMITTED.read_text()) == build_http_app(lambda: None).openapi(), "run: make openapi"


@pytest.mark.integration
def test_live_openapi_matches_the_committed_one(service):
    status, _, live = service.get("/openapi.json")
    assert status == 200 and live == json.loads(COMMITTED.read_text())


def test_the_committed_spec_has_both_embedding_routes_and_their_extensions():
    spec = json.loads(COMMITTED.read_text())
    assert {"/v1/embeddings", "/v2/embed"} <= set(spec["paths"])
    cohere = spec["paths"]["/v2/embed"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"texts", "inputs", "model", "input_type", "embedding_types", "truncate", "output_dimension"} <= set(cohere)
    openai = spec["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "input_type" in openai and "window" in openai["truncate"]["enum"]


def test_the_committed_spec_has_both_rerank_routes():
    spec = json.loads(COMMITTED.read_text())
    cohere = spec["paths"]["/v2/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"model", "query", "documents", "top_n", "return_documents", "max_tokens_per_doc"} <= set(cohere)
    v1 = spec["paths"]["/v1/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"model", "query", "documents", "top_n"} <= set(v1)
