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


def read_prompts(source_dir: Path) -> dict[str, str]:
    """The `prompts` a sentence-transformers model folder declares ({} when none)."""
    path = Path(source_dir) / ST_CONFIG
    if not path.is_file():
        return {}
    prompts = json.loads(path.read_text(encoding="utf-8")).get("prompts") or {}
    return {str(k): str(v) for k, v in prompts.items()}


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
    return list(INPUT_TYPES) if not table else sorted(table)


def resolve_prompt(table: Mapping[str, str], input_type: str | None) -> str:
    """The prompt for `input_type` ("" for none). A type the model has no prompt for is an
    error, not a silent no-op, unless the model declares no prompts at all."""
    if input_type is None:
        return ""
    if input_type in table:
        return table[input_type]
    if not table and input_type in INPUT_TYPES:
        return ""
    shown = input_type if len(input_type) <= 50 else input_type[:50] + "..."
    allowed = ", ".join(accepted_input_types(table))
    raise InvalidOption(
        f"input_type '{shown}' has no prompt for this model. Use one of: {allowed}.", param="input_type"
    )
