"""Optional API keys: HTTP `Authorization: Bearer`, gRPC metadata `authorization`, keys from
the env and from a file, OpenAI's error shape, constant-time comparison, open probes, and no
key in any repr, response or log."""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from models.errors import Unauthenticated
from serving.api import auth
from serving.api.auth import check_bearer
from serving.grpc_gen import embedding_pb2 as pb
from serving.grpc_gen import embedding_pb2_grpc as pbg
from serving.settings import Settings
from tests.support.service import deploy, undeploy

M = "all-MiniLM-L6-v2"
# Unusual strings, so a hit in a log can only be the key itself.
ENV_KEYS = ["es-auth-alpha-7Qm2Zx9", "es-auth-beta-K3v8Wp1"]
FILE_KEY = "es-auth-file-R5t0Yu4"
ALL_KEYS = ENV_KEYS + [FILE_KEY]
NEAR_MISS = ENV_KEYS[0][:-1] + "0"  # differs in the last character only


# ---- the comparison itself ------------------------------------------------------------------

def test_no_keys_means_open():
    check_bearer(frozenset(), None)
    check_bearer(frozenset(), "Bearer whatever")


@pytest.mark.parametrize("header", [f"Bearer {ENV_KEYS[0]}", f"bearer {ENV_KEYS[1]}", f"Bearer   {FILE_KEY}  "])
def test_each_key_is_accepted(header):
    check_bearer(frozenset(ALL_KEYS), header)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {ENV_KEYS[0]}",
        ENV_KEYS[0],  # no scheme
        f"Bearer {NEAR_MISS}",
        f"Bearer {ENV_KEYS[0][:-1]}",  # a prefix of a key
        f"Bearer {ENV_KEYS[0]}x",  # a key plus more
        f"Bearer {ENV_KEYS[0]},{ENV_KEYS[1]}",  # the comma-separated setting itself
        "Bearer ключ-\u00e9\u0000",  # non-ASCII and NUL: still a plain 401
        "Bearer " + "a" * 100_000,
    ],
)
def test_wrong_or_missing_key_is_unauthenticated(header):
    with pytest.raises(Unauthenticated) as info:
        check_bearer(frozenset(ALL_KEYS), header)
    assert "Bearer" in info.value.message
    assert all(k not in info.value.message for k in ALL_KEYS)


def test_every_key_is_compared_in_constant_time(monkeypatch):
    """hmac.compare_digest against every configured key, whether the token matches one early,
    late, or none: the time taken does not tell which key (or how much of one) matched."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = frozenset(ALL_KEYS)
    for header in [f"Bearer {ENV_KEYS[0]}", f"Bearer {FILE_KEY}", f"Bearer {NEAR_MISS}", None]:
        calls.clear()
        try:
            check_bearer(keys, header)
        except Unauthenticated:
            pass
        assert len(calls) == len(keys), header
        assert {b for _, b in calls} == {k.encode() for k in keys}


# ---- settings: env, file, never in a repr ---------------------------------------------------

def test_keys_from_env_and_file_are_joined(monkeypatch, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"\n  {FILE_KEY}  \n\n")
    monkeypatch.setenv("EMBEDSERVE_API_KEYS", " , ".join(ENV_KEYS) + ",")
    monkeypatch.setenv("EMBEDSERVE_API_KEYS_FILE", str(key_file))
    s = Settings()
    assert s.api_key_set() == frozenset(ALL_KEYS)
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert all(k not in text for k in ALL_KEYS), text


def test_keys_file_alone(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(FILE_KEY + "\n")
    assert Settings(api_keys_file=key_file).api_key_set() == frozenset([FILE_KEY])
    assert isinstance(Settings(api_keys="a,b").api_keys, SecretStr)


# ---- the service ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(ray_serve, tmp_path_factory):
    key_file: Path = tmp_path_factory.mktemp("auth") / "api-keys"
    key_file.write_text(FILE_KEY + "\n")
    app = deploy(
        ray_serve, "auth", "/auth", models=[M], cache="memory", encoder_num_cpus=0.5,
        api_keys=",".join(ENV_KEYS), api_keys_file=key_file,
    )
    yield app
    undeploy("auth")


def bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


ROUTES = [
    ("POST", "/v1/embeddings", {"model": M, "input": "who goes there"}),
    ("POST", "/tokenize", {"model": M, "input": "who goes there"}),
    ("GET", "/v1/models", None),
    ("GET", "/stats", None),
]


def call(app, method, path, body, headers=None):
    if method == "POST":
        return app.post(path, body, headers=headers)
    return app.get(path, headers=headers)


def assert_openai_401(status, body):
    assert status == 401, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"
    assert "Bearer" in body["error"]["message"]


@pytest.mark.integration
@pytest.mark.parametrize("method,path,body", ROUTES, ids=[r[1] for r in ROUTES])
def test_http_routes_need_a_key(keyed, method, path, body):
    for headers in [None, bearer(NEAR_MISS), {"authorization": ENV_KEYS[0]}, {"x-api-key": ENV_KEYS[0]}]:
        status, _, err = call(keyed, method, path, body, headers)
        assert_openai_401(status, err)
        assert NEAR_MISS not in err["error"]["message"]
    for key in ALL_KEYS:
        status, _, ok = call(keyed, method, path, body, bearer(key))
        assert status == 200, (key[:8], ok)
        assert all(k not in str(ok) for k in ALL_KEYS)  # /stats, /v1/models: no key inside


@pytest.mark.integration
def test_bad_input_with_no_key_is_a_401_not_a_400(keyed):
    """Authentication comes first: an anonymous caller learns nothing about validation."""
    status, _, err = keyed.post("/v1/embeddings", b"{not json", headers=None)
    assert_openai_401(status, err)
    status, _, err = keyed.post("/v1/embeddings", {"model": "no-such-model", "input": "x"})
    assert_openai_401(status, err)


@pytest.mark.integration
def test_health_and_readiness_stay_open(keyed):
    for path in ("/health", "/ready"):
        status, _, body = keyed.get(path)
        assert status == 200, body
    with keyed.grpc_channel() as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=keyed.grpc_metadata, timeout=30
        )
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.integration
@pytest.mark.parametrize("method", ["Embed", "EmbedStream", "ListModels"])
def test_grpc_methods_need_a_key(keyed, method):
    req = pb.EmbedRequest(model=M, texts=["who goes there"])
    with keyed.grpc_channel() as channel:
        stub = pbg.EmbeddingServiceStub(channel)
        rpc = {
            "Embed": lambda md: stub.Embed(req, metadata=md, timeout=30),
            "EmbedStream": lambda md: list(stub.EmbedStream(req, metadata=md, timeout=30)),
            "ListModels": lambda md: stub.ListModels(pb.ListModelsRequest(), metadata=md, timeout=30),
        }[method]
        for extra in [[], [("authorization", f"Bearer {NEAR_MISS}")], [("authorization", ENV_KEYS[0])]]:
            with pytest.raises(grpc.RpcError) as info:
                rpc(keyed.grpc_metadata + extra)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in info.value.details() and NEAR_MISS not in info.value.details()
        for key in ALL_KEYS:
            assert rpc(keyed.grpc_metadata + [("authorization", f"Bearer {key}")])


@pytest.mark.integration
def test_keys_never_reach_the_logs(keyed):
    """After deploys, accepted and refused calls on both transports: no key, and no refused
    near-miss token, in any file Ray and the replicas log to."""
    import ray

    for key in ALL_KEYS + [NEAR_MISS]:
        keyed.post("/v1/embeddings", {"model": M, "input": "log probe"}, headers=bearer(key))
        keyed.post("/v1/embeddings", b"{broken", headers=bearer(key))
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files, logs
    needles = [k.encode() for k in ALL_KEYS + [NEAR_MISS]]
    leaked = []
    for p in files:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        leaked += [f"{p.name}: {n[:8]!r}..." for n in needles if n in data]
    assert not leaked, leaked
    assert all(k not in repr(keyed.settings) for k in ALL_KEYS)


@pytest.mark.integration
def test_the_cohere_route_needs_a_key_and_refuses_in_cohere_shape(keyed):
    import cohere

    body = {"model": M, "texts": ["who goes there"], "input_type": "search_query"}
    for headers in [None, bearer(NEAR_MISS)]:
        status, _, err = keyed.post("/v2/embed", body, headers=headers)
        assert status == 401 and set(err) == {"message"} and "Bearer" in err["message"], err
        assert NEAR_MISS not in err["message"]
    with pytest.raises(cohere.UnauthorizedError):
        cohere.ClientV2(api_key=NEAR_MISS, base_url=keyed.http_url, log_warning_experimental_features=False).embed(**body)
    ok = cohere.ClientV2(api_key=FILE_KEY, base_url=keyed.http_url, log_warning_experimental_features=False).embed(**body)
    assert len(ok.embeddings.float_[0]) == 384
