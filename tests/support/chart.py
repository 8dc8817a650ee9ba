"""The Helm chart tests' helpers: render the chart with a value set, pick its documents and Ray
containers, and validate them against KubeRay's CRD, Ray Serve's schema and Kubernetes'."""

from __future__ import annotations

import re
import subprocess
import typing
import warnings
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.support.helm import INSTALL_HINT, REPO_ROOT, find_helm

CHART = REPO_ROOT / "helm" / "embedserve"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
VALUE_SETS = [None, *CI_VALUES]
VALUE_IDS = ["defaults", *(p.stem for p in CI_VALUES)]
CRD_PATH = REPO_ROOT.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"
KUBERNETES_VERSION = "1.33"
BUILTIN_KINDS = {"Deployment", "Service", "Secret"}
SKIPPED_KINDS = {"ServiceMonitor"}  # a CRD of the Prometheus Operator; not checked here
RELEASE = "es"




@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.fail(f"helm is missing: {INSTALL_HINT}", pytrace=False)
    return path


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def values_args(values: Path | None) -> list[str]:
    return ["-f", str(values)] if values else []


@cache
def _render(helm: str, values: Path | None) -> tuple[dict, ...]:
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", "ml", *values_args(values))
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(helm: str, values: Path | None) -> list[dict]:
    return list(_render(helm, values))


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def serve_config(rayservice: dict) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def ray_containers(rayservice: dict) -> list[tuple[str, dict]]:
    """(group, container) for the head and every worker group."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    out = [("head", c) for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]]
    for group in cluster.get("workerGroupSpecs", []):
        out += [(group["groupName"], c) for c in group["template"]["spec"]["containers"]]
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@cache
def crd_schema() -> dict:
    assert CRD_PATH.is_file(), f"KubeRay's RayService CRD is missing: {CRD_PATH}"
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields the API server would prune: structural schemas drop what they do not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key in schema["properties"]:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
            elif not schema.get("additionalProperties"):
                found.append(f"{path}.{key}")
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in obj.items():
            found += unknown_fields(value, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def validate_serve_config(config: dict):
    """Ray's own ServeDeploySchema, plus what it lets through: unknown (misspelled) keys.

    Ray ignores keys it does not know, so `num_replica: 4` would deploy silently with the
    default; this walks the config along the pydantic models and refuses such keys.
    """
    from ray.serve.schema import ServeDeploySchema

    parsed = ServeDeploySchema.model_validate(config)
    assert unknown_serve_keys(config, ServeDeploySchema) == []
    return parsed


def _model_in(annotation):
    """The pydantic model an annotation holds (X, Optional[X], List[X], Union[dict, X]), or None."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def unknown_serve_keys(obj, model, path: str = "") -> list[str]:
    if isinstance(obj, list):
        return [k for i, item in enumerate(obj) for k in unknown_serve_keys(item, model, f"{path}[{i}]")]
    if not isinstance(obj, dict):
        return []
    found = []
    for key, value in obj.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{path}.{key}")
            continue
        sub = _model_in(field.annotation)
        if sub is not None and key != "args":
            found += unknown_serve_keys(value, sub, f"{path}.{key}")
    return found


def validate_builtin(doc: dict) -> None:
    """Kubernetes' own OpenAPI schema (kubernetes-validate), else a minimal structural check."""
    try:
        import kubernetes_validate
    except ImportError:
        warnings.warn(
            "kubernetes-validate is not installed: built-in kinds get only a minimal check",
            stacklevel=2,
        )
        minimal_check(doc)
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")


DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def minimal_check(doc: dict) -> None:
    assert {"apiVersion", "kind", "metadata"} <= doc.keys()
    assert DNS1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
    if doc["kind"] == "Deployment":
        spec = doc["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        for c in spec["template"]["spec"]["containers"]:
            assert c["name"] and c["image"]
    if doc["kind"] == "Service":
        for port in doc["spec"]["ports"]:
            assert isinstance(port["port"], int)


def group_names(rayservice: dict) -> set[str]:
    return {g["groupName"] for g in rayservice["spec"]["rayClusterConfig"].get("workerGroupSpecs", [])}
