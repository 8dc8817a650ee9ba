"""The Helm chart's RayService is what the product needs: the Ray cluster's shape, the ingress
switches `embedserve serve` sets, the proxy that answers requests lost with a replica, non-root
pods, autoscaling, a GPU group, Redis in or out of the chart, API-key secrets, the notes. Rendered
with `helm template`, no cluster (see tests/test_helm_chart.py for lint and schema checks)."""

from __future__ import annotations

import pytest

from tests.support.chart import (CHART, RELEASE, VALUE_IDS, VALUE_SETS, env_of, group_names, only,
                                 ray_containers, render, run_helm, serve_config)
from tests.support.chart import helm  # noqa: F401 (a fixture)

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
    """Every Ray container runs Ray's HTTP proxy with embedserve's middleware (serving/replica_loss.py)."""
    from serving.replica_loss import CALLBACK

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
