"""deploy/serve.yaml (`serve run`) and the chart's serveConfigV2 describe the same application.

Both must be valid Ray Serve configs (ServeDeploySchema, no unknown keys) and agree on what
clients and Ray rely on: application name, route prefix, import path, deployment names,
HTTP and gRPC ports, gRPC servicer functions, and the batching settings. The application is
built from each config's `args` with serving.app:build_app (no Ray cluster needed), so the
deployment names and resources are the application's own, not a copy of them.
"""

from __future__ import annotations

import importlib

import pytest
import yaml

from tests.support.helm import REPO_ROOT
from tests.test_helm_chart import (  # noqa: F401 (helm is a fixture)
    CHART,
    VALUE_IDS,
    VALUE_SETS,
    helm,
    only,
    render,
    serve_config,
    validate_serve_config,
)

SERVE_YAML = REPO_ROOT / "deploy" / "serve.yaml"
# Settings both configs must give the same value (the rest may differ: cluster vs laptop).
SHARED_ARGS = ("encoder_placement", "ingress", "models", "variant", "max_batch_size", "batch_wait_timeout_ms", "max_batch_tokens", "cache")


@pytest.fixture(scope="module")
def local() -> dict:
    return yaml.safe_load(SERVE_YAML.read_text())


@pytest.fixture(scope="module")
def chart(helm) -> dict:  # noqa: F811
    return serve_config(only(render(helm, None), "RayService"))


def app(config: dict) -> dict:
    (application,) = config["applications"]
    return application


def built(config: dict):
    """The application the config's import path and args build: Ray's finalized deployments."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app as ray_build

    application = app(config)
    module, _, name = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), name)
    # As `serve deploy` / `serve run` call it (Ray checks the builder's signature there).
    built_app = call_user_app_builder_with_args_if_necessary(builder, application.get("args", {}))
    return ray_build(built_app, name=application["name"])


def test_serve_yaml_is_a_valid_ray_serve_config(local):
    validate_serve_config(local)


def test_same_application(local, chart):
    for key in ("name", "route_prefix", "import_path"):
        assert app(local)[key] == app(chart)[key], key
    assert app(local)["import_path"] == "serving.app:build_app"
    assert app(local)["name"] == "embedserve"


def test_same_deployments(local, chart):
    local_app, chart_app = built(local), built(chart)
    names = sorted(d.name for d in local_app.deployments)
    assert names == sorted(d.name for d in chart_app.deployments)
    assert names == ["Encoder_all-minilm-l6-v2", "Ingress"]
    assert local_app.ingress_deployment_name == chart_app.ingress_deployment_name == "Ingress"


def test_same_ports_and_grpc_servicers(local, chart):
    assert local["http_options"] == chart["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert local["grpc_options"] == chart["grpc_options"]
    assert local["grpc_options"]["port"] == 9000
    assert local["grpc_options"]["grpc_servicer_functions"] == [
        "serving.api.grpc_servicer.add_embedding_service",
        "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
    ]
    assert local["proxy_location"] == chart["proxy_location"]


def test_same_settings(local, chart):
    for key in SHARED_ARGS:
        assert app(local)["args"][key] == app(chart)["args"][key], key


def test_grpc_servicer_functions_resolve(local):
    """Ray only logs a warning for a servicer function it cannot import; check here."""
    for dotted in local["grpc_options"]["grpc_servicer_functions"]:
        module, _, name = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), dotted


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_chart_args_are_settings_the_application_has(helm, values):  # noqa: F811
    """Settings ignore unknown keys, so a misspelled arg would silently keep the default."""
    from serving.settings import Settings

    args = app(serve_config(only(render(helm, values), "RayService")))["args"]
    assert set(args) <= set(Settings.model_fields), set(args) - set(Settings.model_fields)
    Settings(**args)  # and their values pass the application's own validation


def test_serve_yaml_args_are_settings_the_application_has(local):
    from serving.settings import Settings

    assert set(app(local)["args"]) <= set(Settings.model_fields)


@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_chart_overrides_fit_the_built_application(helm, values):  # noqa: F811
    """Ray refuses a config that names a deployment the application lacks; GPUs go to encoders."""
    config = serve_config(only(render(helm, values), "RayService"))
    deployments = {d.name: d for d in built(config).deployments}
    assert {d["name"] for d in app(config)["deployments"]} <= deployments.keys()
    gpus = app(config)["args"]["encoder_num_gpus"]
    for name, deployment in deployments.items():
        expected = gpus if name.startswith("Encoder_") else 0
        assert deployment.ray_actor_options.get("num_gpus", 0) == expected, name


@pytest.mark.parametrize("mode", ["auto", "memory", "redis", "off"])
def test_every_cache_mode_reaches_the_application_as_itself(helm, mode):  # noqa: F811
    """`off` unquoted in YAML is the boolean false, which the application refuses."""
    from serving.settings import Settings
    from tests.test_helm_chart import RELEASE, run_helm

    out = run_helm(helm, "template", RELEASE, str(CHART), "--set", f"cache.mode={mode}")
    assert out.returncode == 0, out.stderr
    (service,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "RayService"]
    args = app(serve_config(service))["args"]
    assert args["cache"] == mode
    assert Settings(**args).cache == mode
