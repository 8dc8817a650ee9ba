"""A wrong `input` gets a message that says what it was and what it must be (not pydantic's
"Invalid 'input.str'"), and an unknown model gets a 404 that lists the models served here, not
every model the code knows."""

from __future__ import annotations

import pytest

from models.artifacts import ModelArtifacts
from models.errors import ModelNotFound
from models.specs import resolve_model
from serving.api.admission import Served, admit
from serving.pipeline.embed import EmbedJob
from serving.pipeline.runtime import ModelRuntime
from tests.support.service import artifact_dir

M = "all-MiniLM-L6-v2"

CASES = [
    (42, "input is an integer"),
    (None, "input is null"),
    (["a", 1], "input[1] is an integer while input[0] is a string"),
    ([1.5, 2.5], "input[0] is a number"),
    ({"text": "x"}, "input is an object"),
    ([[101, "x"]], "input[0][1] is a string"),
]


@pytest.mark.integration
@pytest.mark.parametrize("value,said", CASES, ids=[c[1] for c in CASES])
def test_a_wrong_input_is_named_with_what_it_must_be(service, value, said):
    status, _, body = service.post("/v1/embeddings", {"model": M, "input": value})
    assert status == 400, body
    message = body["error"]["message"]
    assert said in message and "input.str" not in message, message
    assert "a string, an array of strings" in message or "token ids" in message
    assert body["error"]["param"] == "input"


@pytest.mark.parametrize("name", ["text-embedding-3-small", "all-mpnet-base-v2"], ids=["unknown", "known, not served"])
def test_the_unknown_model_404_lists_only_the_served_models(name):
    spec = resolve_model(M)
    served = Served({spec.key: ModelRuntime.load(spec, ModelArtifacts.load(artifact_dir(), spec), "fp32")})
    with pytest.raises(ModelNotFound) as err:
        admit(served, EmbedJob(name, ["a text"]))
    assert err.value.message.endswith("Served models: sentence-transformers/all-MiniLM-L6-v2."), err.value.message
    assert "mpnet" not in err.value.message.replace(name, "")
