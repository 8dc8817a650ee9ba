"""Input types and prompts: read from sentence-transformers' config at export, merged with the
spec and the service setting, and an input type a model has no prompt for is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from models.artifacts import ModelArtifacts
from models.errors import InvalidOption
from models.prompts import DEFAULT_PROMPT, INPUT_TYPES, accepted_input_types, prompt_table, read_prompts, resolve_prompt
from models.specs import MINILM_L6_V2, MPNET_BASE_V2
from models.weights import materialize
from serving.settings import Settings
from tests.support.service import artifact_dir


def write_config(folder, config: dict):
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


def test_prompts_are_read_from_the_sentence_transformers_config(tmp_path):
    folder = write_config(tmp_path, {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None})
    assert read_prompts(folder) == {"query": "query: ", "passage": "passage: "}


@pytest.mark.parametrize("config", [{}, {"prompts": {}}, {"prompts": None}, None])
def test_a_model_without_prompts_reads_as_none(tmp_path, config):
    folder = tmp_path if config is None else write_config(tmp_path, config)
    assert read_prompts(folder) == {}


def test_the_shipped_models_declare_no_prompts():
    for spec in (MINILM_L6_V2, MPNET_BASE_V2):
        assert read_prompts(materialize(spec, artifact_dir() / spec.key)) == {}


def test_the_manifest_carries_the_prompts_and_an_older_one_has_none():
    arts = ModelArtifacts.load(artifact_dir(), MINILM_L6_V2)
    older = {k: v for k, v in arts.manifest.items() if k != "prompts"}
    assert ModelArtifacts(MINILM_L6_V2, arts.root, older).prompts == {}
    newer = {**older, "prompts": {"query": "query: "}}
    assert ModelArtifacts(MINILM_L6_V2, arts.root, newer).prompts == {"query": "query: "}


def test_common_prompt_names_answer_to_the_input_types():
    table = prompt_table({"query": "query: ", "passage": "passage: ", "Retrieval": "Retrieve: "})
    assert table["search_query"] == "query: " and table["search_document"] == "passage: "
    assert table["Retrieval"] == "Retrieve: "  # any other name stays an input type of its own
    assert "classification" not in table


def test_later_sources_override_earlier_ones():
    spec, manifest, setting = {"query": "q: "}, {"query": "query: ", "document": "d: "}, {"search_document": "doc: "}
    table = prompt_table(spec, manifest, None, setting)
    assert table["search_query"] == "query: " and table["search_document"] == "doc: "


def test_an_input_type_without_a_prompt_is_refused_when_the_model_declares_some():
    table = prompt_table({"search_query": "query: "})
    assert resolve_prompt(table, "search_query") == "query: "
    assert resolve_prompt(table, None) == ""
    with pytest.raises(InvalidOption) as info:
        resolve_prompt(table, "classification")
    assert info.value.param == "input_type" and "search_query" in info.value.message
    assert accepted_input_types(table) == ["search_query"]


def test_a_model_without_prompts_embeds_every_known_type_as_plain_text():
    assert all(resolve_prompt({}, t) == "" for t in INPUT_TYPES)
    assert accepted_input_types({}) == list(INPUT_TYPES)
    with pytest.raises(InvalidOption):
        resolve_prompt({}, "image")  # not an input type at all


def test_the_prompts_setting_is_json_keyed_by_any_model_name(monkeypatch):
    monkeypatch.setenv("EMBEDSERVE_PROMPTS", json.dumps({"all-MiniLM-L6-v2": {"search_query": "query: "}}))
    s = Settings()
    assert s.prompts_for(MINILM_L6_V2) == {"search_query": "query: "} and s.prompts_for(MPNET_BASE_V2) == {}
    flag = Settings(prompts=json.dumps({MPNET_BASE_V2.id: {"clustering": "Cluster: "}}))  # as the CLI passes it
    assert flag.prompts_for(MPNET_BASE_V2) == {"clustering": "Cluster: "}
    assert Settings(**s.model_dump(mode="json")).prompts == s.prompts  # the wire form the app builder sends


def test_the_prompts_setting_refuses_an_unknown_model():
    with pytest.raises(ValueError, match="no-such-model"):
        Settings(prompts={"no-such-model": {"search_query": "q: "}})


def test_the_default_prompt_name_is_put_before_a_text_sent_without_input_type(tmp_path):
    # sentence-transformers' encode() puts the default prompt before every text given no prompt.
    folder = write_config(tmp_path, {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"})
    table = prompt_table(read_prompts(folder))
    assert resolve_prompt(table, None) == "passage: "
    assert resolve_prompt(table, "search_query") == "query: "
    assert DEFAULT_PROMPT not in accepted_input_types(table)  # not an input type a request may name
    with pytest.raises(InvalidOption, match="has no prompt"):
        resolve_prompt(table, DEFAULT_PROMPT)


@pytest.mark.parametrize("default", [None, "", "missing", "empty"])
def test_no_default_prompt_embeds_the_plain_text(tmp_path, default):
    folder = write_config(tmp_path, {"prompts": {"query": "query: ", "empty": ""}, "default_prompt_name": default})
    assert resolve_prompt(prompt_table(read_prompts(folder)), None) == ""


def test_a_user_folder_spec_carries_the_default_prompt(tmp_path):
    from models.model_folder import read_folder
    from tests.support.user_models import minilm_dir

    folder = tmp_path / "m"
    shutil.copytree(minilm_dir(), folder)
    write_config(folder, {"prompts": {"query": "query: "}, "default_prompt_name": "query"})
    spec = read_folder(str(folder), "m")
    assert resolve_prompt(prompt_table(spec.prompts), None) == "query: "
    assert accepted_input_types(prompt_table(spec.prompts)) == ["query", "search_query"]
