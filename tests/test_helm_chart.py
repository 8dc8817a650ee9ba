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
import subprocess
import typing
import warnings
from functools import cache
from pathlib import Path

import jsonschema
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


# ---- helpers -------------------------------------------------------------------------------


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


def group_names(rayservice: dict) -> set[str]:
    return {g["groupName"] for g in rayservice["spec"]["rayClusterConfig"].get("workerGroupSpecs", [])}


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


# ---- what the issue asks the RayService to be -------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_ray_cluster_shape(helm, values):
    rayservice = only(render(helm, values), "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert rayservice["spec"]["excludeHeadPodFromServeSvc"] is True
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        probe = container["readinessProbe"]["httpGet"]
        assert (probe["path"], probe["port"]) == ("/ready", "serve")
    for group, container in ray_containers(rayservice):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert {"serve": 8000, "serve-grpc": 9000, "metrics": 8080}.items() <= ports.items(), group
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("mode", ["haproxy", "proxy"])
def test_every_ray_container_gets_the_ingress_switches_embedserve_serve_sets(helm, mode, tmp_path):
    """Ray Serve reads its ingress from the environment when Ray starts: the chart sets the
    same switches as `embedserve serve` (serving.launch.IngressConfig), and the app's setting agrees."""
    from serving.launch import IngressConfig

    values = tmp_path / "ingress.yaml"
    values.write_text(f"serve:\n  ingress:\n    mode: {mode}\n")
    rayservice = only(render(helm, values), "RayService")
    assert serve_config(rayservice)["applications"][0]["args"]["ingress"] == mode
    switches = IngressConfig(mode).switches()
    for group, container in ray_containers(rayservice):
        env = {k: e.get("value") for k, e in env_of(container).items()}
        assert {k: env.get(k) for k in switches} == switches, group
        assert env["EMBEDSERVE_INGRESS"] == mode, group


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_every_serve_proxy_answers_requests_lost_with_a_replica(helm, values):
    """Every Ray container runs Ray's HTTP proxy with embedserve's middleware (serving/proxy.py)."""
    from serving.proxy import CALLBACK

    for group, container in ray_containers(only(render(helm, values), "RayService")):
        assert env_of(container)["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]["value"] == CALLBACK, group


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_every_pod_runs_as_non_root(helm, values):
    docs = render(helm, values)
    pod_specs = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    cluster = only(docs, "RayService")["spec"]["rayClusterConfig"]
    pod_specs += [cluster["headGroupSpec"]["template"]["spec"]]
    pod_specs += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for spec in pod_specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0


def test_defaults_autoscale_on_cpu_with_chart_redis(helm):
    docs = render(helm, None)
    rayservice = only(docs, "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert group_names(rayservice) == {"cpu"}

    app = serve_config(rayservice)["applications"][0]
    encoder = next(d for d in app["deployments"] if d["name"] == "Encoder_all-minilm-l6-v2")
    assert encoder["num_replicas"] == "auto"
    assert encoder["autoscaling_config"]["min_replicas"] <= encoder["autoscaling_config"]["max_replicas"]
    assert app["args"]["encoder_num_gpus"] == 0
    assert "encoder_replicas" not in app["args"]  # Serve autoscaling decides

    redis = only(docs, "Deployment")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert "--maxmemory" in args
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == f"{RELEASE}-embedserve-redis")
    for _, container in ray_containers(rayservice):
        assert env_of(container)["EMBEDSERVE_REDIS_URL"]["value"] == f"redis://{service['metadata']['name']}:6379/0"
        assert "EMBEDSERVE_API_KEYS" not in env_of(container)  # no keys given: the API is open
    assert not [d for d in docs if d["kind"] == "Secret"]


@pytest.mark.parametrize("autoscaling", [True, False])
def test_encoder_replicas_per_node_bound_with_or_without_autoscaling(helm, autoscaling, tmp_path):
    """serve.encoder.maxReplicasPerNode becomes each encoder deployment's max_replicas_per_node,
    whether Serve autoscales it or runs a fixed count; unset, no bound is rendered."""
    values = tmp_path / "spread.yaml"
    values.write_text(f"serve:\n  encoder:\n    maxReplicasPerNode: 2\n    autoscaling:\n      enabled: {str(autoscaling).lower()}\n")
    app = serve_config(only(render(helm, values), "RayService"))["applications"][0]
    encoder = next(d for d in app["deployments"] if d["name"] == "Encoder_all-minilm-l6-v2")
    assert encoder["max_replicas_per_node"] == 2
    assert ("num_replicas" in encoder) is autoscaling and ("encoder_replicas" in app["args"]) is not autoscaling
    default = serve_config(only(render(helm, None), "RayService"))["applications"][0]
    assert all("max_replicas_per_node" not in d for d in default["deployments"] if d["name"].startswith("Encoder_"))


def test_gpu_values_add_a_gpu_group_that_runs_the_encoders(helm):
    rayservice = only(render(helm, CHART / "ci" / "gpu-values.yaml"), "RayService")
    groups = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    (container,) = groups["gpu"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    tolerations = groups["gpu"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    (cpu_container,) = groups["cpu"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_container["resources"].get("limits", {})

    app = serve_config(rayservice)["applications"][0]
    assert app["args"]["encoder_num_gpus"] == 0.5
    (ingress,) = [d for d in app["deployments"] if d["name"] == "Ingress"]
    assert "num_gpus" not in ingress["ray_actor_options"]


def test_external_redis_and_existing_secret(helm):
    docs = render(helm, CHART / "ci" / "external-redis-values.yaml")
    assert {d["kind"] for d in docs} == {"RayService"}  # no Redis, no Secret of our own
    for _, container in ray_containers(only(docs, "RayService")):
        env = env_of(container)
        assert env["EMBEDSERVE_REDIS_URL"]["value"].startswith("redis://redis-master.cache")
        ref = env["EMBEDSERVE_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "embedserve-api-keys", "key": "keys"}


def test_redis_url_from_a_secret_and_gpu_only(helm):
    docs = render(helm, CHART / "ci" / "gpu-only-redis-secret-values.yaml")
    rayservice = only(docs, "RayService")
    assert group_names(rayservice) == {"gpu"}
    assert rayservice["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is False
    for _, container in ray_containers(rayservice):
        ref = env_of(container)["EMBEDSERVE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "embedserve-redis", "key": "url"}


def test_created_api_key_secret_and_service_monitor(helm):
    docs = render(helm, CHART / "ci" / "cpu-only-values.yaml")
    secret = only(docs, "Secret")
    assert secret["stringData"] == {"api-keys": "ci-key-1,ci-key-2"}
    for _, container in ray_containers(only(docs, "RayService")):
        ref = env_of(container)["EMBEDSERVE_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
    monitor = only(docs, "ServiceMonitor")
    metrics = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = only(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert metrics["spec"]["selector"].items() <= pod_labels.items()


def test_notes_tell_how_to_call_both_apis(helm):
    out = run_helm(helm, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", "ml",
                   "--set", "apiKeys.keys={k1}")
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "curl" in notes and "/v1/embeddings" in notes
    assert "grpcurl" in notes and "embedserve.v1.EmbeddingService/Embed" in notes
    assert f"svc/{RELEASE}-embedserve-serve-svc" in notes
    assert "Authorization: Bearer" in notes


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
