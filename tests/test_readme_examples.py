"""The README's example outputs are this service's: the curl answers (values, token counts), the
Cohere example's int8 (which follows the published int8 rule), the int8 scales quoted, and the
table of what each lossy option keeps, all checked against the running service, so they cannot
drift from the model again. A failure prints what the README should say."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.support.service import ROOT

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
MODELS = {"all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "all-mpnet-base-v2": "all-mpnet-base-v2"}
# Shown to 4 decimals; the service's variant (bf16 on CPUs with AMX) may move the last digit.
VALUE_TOLERANCE = 0.0008


def section(heading: str) -> str:
    return README.split(heading, 1)[1].split("\n#", 1)[0]


def curl_example(heading: str) -> tuple[str, dict, str]:
    """(route, request body, the answer block) of the first curl example under `heading`."""
    text = section(heading)
    route = re.search(r"curl -s localhost:8000(\S+)", text).group(1)
    body = json.loads(re.search(r"-d '(.*?)'", text, re.S).group(1))
    answer = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    return route, body, answer


def numbers(answer: str, key: str) -> list[float]:
    """The numbers shown after `"key":[` (or `[[`) in an answer block, up to the ellipsis."""
    shown = re.search(rf'"{key}":\[\[?([^\]]*)', answer).group(1)
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", shown)]


def test_the_curl_example_shows_this_models_values_and_token_count(service):
    route, body, answer = curl_example("### curl")
    status, _, live = service.post(route, body)
    assert status == 200, live
    shown = numbers(answer, "embedding")
    want = live["data"][0]["embedding"][: len(shown)]
    assert np.allclose(shown, want, atol=VALUE_TOLERANCE), f"README shows {shown}; the service gives {np.round(want, 4)}"
    tokens = int(re.search(r'"prompt_tokens":(\d+)', answer).group(1))
    assert tokens == live["usage"]["prompt_tokens"], live["usage"]


def test_the_cohere_example_shows_this_models_values_and_the_int8_rule(service):
    route, body, answer = curl_example("### Cohere's embed API")
    status, _, live = service.post(route, body)
    assert status == 200, live
    floats, int8 = numbers(answer, "float"), numbers(answer, "int8")
    live_float = live["embeddings"]["float"][0][: len(floats)]
    live_int8 = live["embeddings"]["int8"][0][: len(int8)]
    assert np.allclose(floats, live_float, atol=VALUE_TOLERANCE), f"README {floats}; service {np.round(live_float, 4)}"
    assert int8 == live_int8, f"README {int8}; service {live_int8}"
    card = next(m for m in service.get("/v1/models")[2]["data"] if m["id"].endswith(body["model"]))
    scale = {s["dimensions"]: s["scale"] for s in card["int8_scales"]}[card["dimension"]]
    rule = np.clip(np.round(np.array(live["embeddings"]["float"][0]) * 127 / scale), -127, 127)
    assert live["embeddings"]["int8"][0] == rule.astype(int).tolist()
    tokens = int(re.search(r'"input_tokens":(\d+)', answer).group(1))
    assert tokens == live["meta"]["billed_units"]["input_tokens"]


README_OPTIONS = ["int8_dot", "uint8_l2", "int8_dot_dims_256", "uint8_l2_dims_256", "int8_dot_dims_128",
                  "uint8_l2_dims_128", "binary_hamming", "binary_rescore_top40", "dims_512", "dims_384", "dims_256",
                  "dims_128", "dims_64"]


def figures(quality: dict, option: str) -> list[float]:
    """What the table shows for `option`: the share kept, and against full float where measured."""
    f = quality.get(option)
    if f is None:
        return []
    return [f["top10_kept"]] + ([f["top10_kept_vs_full_float"]] if "top10_kept_vs_full_float" in f else [])


def cell(values: list[float]) -> str:
    return "–" if not values else f"{values[0]:.3f}" + (f" ({values[1]:.3f})" if len(values) > 1 else "")


def test_the_quality_table_is_what_v1_models_reports(service):
    quality = {m["id"].split("/")[-1]: m["quality"] for m in service.get("/v1/models")[2]["data"]}
    models = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
    text = section("## Compressed outputs").split("**What each option keeps**", 1)[1]
    rows = re.findall(r"^\| `(\w+)`[^|]*\| ([^|]+) \| ([^|]+) \|$", text, re.M)
    should = "\n".join(f"| `{o}` | " + " | ".join(cell(figures(quality[m], o)) for m in models) + " |" for o in README_OPTIONS)
    assert [r[0] for r in rows] == README_OPTIONS, should
    for option, *shown in rows:
        for m, got in zip(models, shown):
            g = [float(x) for x in re.findall(r"\d\.\d+", got)]
            want = figures(quality[m], option)
            # 3 decimals shown; an export on another CPU may move a figure by a few 1e-4.
            assert len(g) == len(want) and np.allclose(g, want, atol=0.001), f"{option}, {m}: README {got}\n{should}"
    for m in models:
        assert f"{quality[m]['evaluation']['evaluation_texts']:,} texts" in text, m


def test_the_int8_scales_quoted_are_the_published_ones(service):
    cards = {m["id"].split("/")[-1]: m for m in service.get("/v1/models")[2]["data"]}
    scales = {name: {s["dimensions"]: s["scale"] for s in c["int8_scales"]} for name, c in cards.items()}
    m = re.search(r"MiniLM: ≈([0-9.]+) at 384\s+dimensions, ([0-9.]+) at 256, ([0-9.]+) at 128; mpnet: ≈([0-9.]+) at 768",
                  README)
    shown = [float(x) for x in m.groups()]
    live = [scales["all-MiniLM-L6-v2"][d] for d in (384, 256, 128)] + [scales["all-mpnet-base-v2"][768]]
    assert np.allclose(shown, live, atol=0.006), f"README {shown}; /v1/models {np.round(live, 3)}"
