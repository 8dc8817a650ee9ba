"""The Helm chart (helm/embedserve): lints, renders, and renders what Kubernetes accepts.

Every value set (the defaults and each helm/embedserve/ci/*.yaml) is linted with
`helm lint --strict` and rendered with `helm template`; the rendered RayService is checked
against KubeRay's CRD schema (../shared/kuberay/ray.io_rayservices.yaml), its serveConfigV2
against Ray's ServeDeploySchema, and built-in kinds against Kubernetes' OpenAPI schemas
(kubernetes-validate). values.schema.json must refuse bad values, and the chart README must
list every value. No cluster is needed; helm is (see tests/support/helm.py).
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.support.chart import (BUILTIN_KINDS, CHART, CI_VALUES, RELEASE, SKIPPED_KINDS, VALUE_IDS,
                                 VALUE_SETS, crd_schema, group_names, only, render, run_helm, serve_config,
                                 unknown_fields, validate_builtin, validate_serve_config, values_args)
from tests.support.chart import helm  # noqa: F401 (a fixture)

# ---- lint and render ---------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_lint_strict(helm, values):
    out = run_helm(helm, "lint", "--strict", str(CHART), *values_args(values))
    assert out.returncode == 0, out.stdout + out.stderr


def test_there_are_value_sets_for_cpu_gpu_and_external_redis(helm):
    assert len(CI_VALUES) >= 3
    rendered = {p.stem: render(helm, p) for p in CI_VALUES}
    gpu = [k for k, docs in rendered.items() if "gpu" in group_names(only(docs, "RayService"))]
    cpu_only = [k for k, docs in rendered.items() if group_names(only(docs, "RayService")) == {"cpu"}]
    external = [k for k, docs in rendered.items() if not any(d["kind"] == "Deployment" for d in docs)]
    assert gpu and cpu_only and external, (gpu, cpu_only, external)



@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_rayservice_matches_the_kuberay_crd(helm, values):
    rayservice = only(render(helm, values), "RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    schema = crd_schema()
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(rayservice), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert unknown_fields(rayservice, schema) == []


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_serve_config_is_a_valid_ray_serve_config(helm, values):
    rayservice = only(render(helm, values), "RayService")
    config = validate_serve_config(serve_config(rayservice))
    (app,) = config.applications
    assert (app.name, app.route_prefix, app.import_path) == ("embedserve", "/", "serving.app:build_app")
    assert config.http_options.port == 8000
    assert config.grpc_options.port == 9000

    chosen = yaml.safe_load(values.read_text()).get("models") if values else None
    models = chosen or yaml.safe_load((CHART / "values.yaml").read_text())["models"]
    assert app.args["models"].split(",") == models
    # Overrides name deployments the application has (tests/test_serve_config.py builds it).
    encoders = {"Encoder_" + m.rsplit("/", 1)[-1].lower() for m in models}
    names = [d.name for d in app.deployments]
    assert names[0] == "Ingress" and set(names[1:]) <= encoders
    assert app.deployments[0].ray_actor_options.num_cpus > 0  # keeps the Ingress off the head


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_builtin_kinds_are_valid_kubernetes(helm, values):
    docs = render(helm, values)
    kinds = {d["kind"] for d in docs}
    assert kinds <= BUILTIN_KINDS | SKIPPED_KINDS | {"RayService"}, kinds
    for doc in docs:
        if doc["kind"] in BUILTIN_KINDS:
            validate_builtin(doc)


# ---- values.schema.json ------------------------------------------------------------------------

BAD_VALUES = {
    "tag-is-a-number": {"image": {"tag": 5}},
    "redis-enabled-is-a-string": {"redis": {"enabled": "yes"}},
    "negative-worker-replicas": {"workers": {"minReplicas": -1}},
    "negative-ingress-replicas": {"serve": {"ingress": {"replicas": -2}}},
    "zero-max-encoder-replicas": {"serve": {"encoder": {"autoscaling": {"maxReplicas": 0}}}},
    "unknown-variant": {"serve": {"variant": "fp16"}},
    "no-models": {"models": []},
    "misspelled-key": {"serve": {"maxBatchsize": 16}},
    "ray-start-param-not-a-string": {"head": {"rayStartParams": {"num-gpus": 1}}},
}


@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_refuses_bad_values(helm, bad, tmp_path):
    values = tmp_path / "bad.yaml"
    values.write_text(yaml.safe_dump(bad))
    out = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(values))
    assert out.returncode != 0
    assert "schema" in out.stderr, out.stderr


def test_values_and_value_sets_meet_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator.validate(defaults)
    for path in CI_VALUES:
        validator.validate(deep_merge(defaults, yaml.safe_load(path.read_text())))
    for bad in BAD_VALUES.values():
        assert not validator.is_valid(deep_merge(defaults, bad)), bad


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "redis.url=redis://x:6379"], "redis.enabled=false"),
        (["--set", "workers.enabled=false"], "at least one worker group"),
        (["--set", "models={all-MiniLM-L6-v2,sentence-transformers/all-MiniLM-L6-v2}"], "same model"),
        (["--set", "workers.minReplicas=5", "--set", "workers.maxReplicas=2"], "maxReplicas"),
    ],
)
def test_chart_refuses_contradictions(helm, args, message):
    out = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---- the chart README lists every value -----------------------------------------------------------


def value_keys(values: dict, schema: dict, prefix: str = "") -> list[str]:
    """Dotted keys of values.yaml, down to where the schema stops declaring properties."""
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            keys += value_keys(value, sub, f"{path}.")
        else:
            keys.append(path)
    return keys


def test_readme_lists_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = value_keys(values, schema)
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\|\s*`([^`]+)`\s*\|", readme, flags=re.M))
    missing = [k for k in keys if k not in listed]
    stale = sorted(listed - set(keys))
    assert not missing, f"values missing from helm/embedserve/README.md: {missing}"
    assert not stale, f"README lists values that values.yaml lacks: {stale}"
