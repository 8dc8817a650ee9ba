"""Input types and the prompts a model puts before each text for them. Pure data, no I/O
beyond reading one config file at export.

A retrieval model is often trained with a prompt per kind of text: sentence-transformers'
`prompts` in config_sentence_transformers.json (e.g. {"query": "query: ", "passage":
"passage: "}), E5's "query: " / "passage: ", BGE's query instruction. The service names those
kinds by Cohere's input types; a model's prompt table maps each input type it knows to the
prompt text. Where it comes from, later ones winning: the model spec, the exported manifest
(read from the model's config at export), the service setting (`EMBEDSERVE_PROMPTS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from models.errors import InvalidOption

# Cohere's input types, in the order of its reference.
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
# sentence-transformers prompt names that mean one of them, as models commonly spell them.
PROMPT_NAME_ALIASES = {
    "search_query": ("query",),
    "search_document": ("document", "passage", "corpus"),
}
ST_CONFIG = "config_sentence_transformers.json"
# The table's entry for a text sent with no input_type: the prompt the model's
# `default_prompt_name` names (sentence-transformers puts it before every text encoded without a
# prompt). Not an input type a request may name.
DEFAULT_PROMPT = "(default)"


def read_prompts(source_dir: Path) -> dict[str, str]:
    """The `prompts` a sentence-transformers model folder declares ({} when none), with its
    default prompt under DEFAULT_PROMPT where it names one."""
    path = Path(source_dir) / ST_CONFIG
    if not path.is_file():
        return {}
    config = json.loads(path.read_text(encoding="utf-8"))
    return with_default({str(k): str(v) for k, v in (config.get("prompts") or {}).items()}, config.get("default_prompt_name"))


def with_default(prompts: dict[str, str], default_prompt_name: str | None) -> dict[str, str]:
    """`prompts` and, where `default_prompt_name` names one of them, that prompt as DEFAULT_PROMPT."""
    if default_prompt_name and prompts.get(default_prompt_name):
        return {**prompts, DEFAULT_PROMPT: prompts[default_prompt_name]}
    return prompts


def prompt_table(*sources: Mapping[str, str] | None) -> dict[str, str]:
    """Input type -> prompt, merged from `sources` (later ones win). Prompt names that are
    common spellings of an input type ("query", "passage", ...) also answer to it; any other
    name a model declares stays an input type of its own."""
    merged: dict[str, str] = {}
    for source in sources:
        merged.update(source or {})
    table = dict(merged)
    for input_type, names in PROMPT_NAME_ALIASES.items():
        if input_type not in table:
            for name in names:
                if name in merged:
                    table[input_type] = merged[name]
                    break
    return table


def accepted_input_types(table: Mapping[str, str]) -> list[str]:
    """What `input_type` may be: every known type when the model declares no prompts (they
    all embed the plain text), else exactly the types it has a prompt for."""
    declared = sorted(k for k in table if k != DEFAULT_PROMPT)
    return declared or list(INPUT_TYPES)


def resolve_prompt(table: Mapping[str, str], input_type: str | None) -> str:
    """The prompt for `input_type`; with none, the model's default prompt ("" where it names
    none). A type the model has no prompt for is an error, not a silent no-op, unless the model
    declares no prompts at all."""
    if input_type is None:
        return table.get(DEFAULT_PROMPT, "")
    if input_type in table and input_type != DEFAULT_PROMPT:
        return table[input_type]
    if not any(k != DEFAULT_PROMPT for k in table) and input_type in INPUT_TYPES:
        return ""
    shown = input_type if len(input_type) <= 50 else input_type[:50] + "..."
    allowed = ", ".join(accepted_input_types(table))
    raise InvalidOption(
        f"input_type '{shown}' has no prompt for this model. Use one of: {allowed}.", param="input_type"
    )
