"""The load generator against the test service, over HTTP and gRPC, for a few seconds: its
report adds up. No timing is asserted."""

from __future__ import annotations

import json

import pytest

from loadtest.cli import main as loadtest_main
from loadtest.generator import run_load
from loadtest.load_config import LoadConfig, NotLoopback, check_grpc_target, check_http_target
from loadtest.recorder import percentiles
from loadtest.workload import Corpus, CorpusWorkload, FixedWorkload

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.load(MODEL, limit=300)


def check_report(r: dict, per_request: int) -> None:
    assert r["sent"] > 0
    assert r["sent"] == r["ok"] + r["errors_total"]
    assert r["errors_total"] == sum(r["errors"].values())
    assert r["errors"] == {}, r["error_samples"]
    assert r["texts"] == r["ok"] * per_request
    # Token counts computed up front by the client agree with what the service counted.
    assert r["server_tokens"] == r["tokens"] > 0
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert r["texts_per_s"] > 0 and r["tokens_per_s"] > 0 and r["requests_per_s"] > 0


# ---- no service needed -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://10.1.2.3:8000", "http://example.com", "http://0.0.0.0:8000",
                                 "http://[2001:db8::1]:80"])
def test_non_loopback_http_targets_are_refused(url):
    with pytest.raises(NotLoopback):
        check_http_target(url)


def test_loopback_targets_are_accepted():
    check_http_target("http://127.0.0.1:8000")
    check_http_target("http://localhost:8000/x")
    check_http_target("http://[::1]:8000")
    check_grpc_target("127.0.0.1:9000")
    check_grpc_target("[::1]:9000")
    with pytest.raises(NotLoopback):
        check_grpc_target("192.168.1.1:9000")


def test_cli_refuses_a_remote_target_before_sending_anything(capsys):
    assert loadtest_main(["--url", "http://192.0.2.7:8000", "--duration", "1"]) == 2
    assert "refusing" in capsys.readouterr().err


def test_cli_without_the_models_tokenizer_says_so_in_one_line(capsys, tmp_path):
    assert loadtest_main(["--artifact-dir", str(tmp_path), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loadtest: ") and "embedserve export" in err and "Traceback" not in err, err


def test_bounds_are_enforced():
    with pytest.raises(ValueError):
        LoadConfig(duration_s=10_000).validate()
    with pytest.raises(ValueError):
        LoadConfig(requests=10**9).validate()
    with pytest.raises(ValueError):
        LoadConfig(mode="open").validate()  # no rate
    assert LoadConfig().validate().duration_s is not None  # neither bound given: a default duration


def test_percentiles_are_ordered():
    p = percentiles([5.0, 1.0, 3.0, 100.0, 2.0])
    assert p["p50"] <= p["p95"] <= p["p99"]
    assert percentiles([])["p50"] is None


def test_workload_token_counts_match_the_tokenizer(corpus):
    wl = CorpusWorkload(corpus, 8, "short=1,long=1", repeat_share=0.5, hot_set=20, seed=3)
    for i in range(5):
        texts, tokens = wl.request(i)
        assert wl.request(i) == (texts, tokens)  # deterministic per request number
        assert len(texts) == 8
        assert tokens == sum(corpus.tokenizer.count(texts))
    # Unique texts never repeat; repeated ones come from the hot set.
    uniq = CorpusWorkload(corpus, 16, repeat_share=0.0, seed=1)
    seen = [t for i in range(10) for t in uniq.request(i)[0]]
    assert len(set(seen)) == len(seen)
    hot = CorpusWorkload(corpus, 16, repeat_share=1.0, hot_set=5, seed=1)
    assert {t for i in range(10) for t in hot.request(i)[0]} <= set(hot.hot_texts())


# ---- against the test service ------------------------------------------------------------

pytest_integration = pytest.mark.integration


@pytest_integration
def test_http_closed_loop_from_the_cli_writes_its_report(service, tmp_path):
    out = tmp_path / "http.json"
    rc = loadtest_main([
        "--url", service.http_url, "--model", MODEL, "--concurrency", "4", "--texts-per-request", "4",
        "--duration", "3", "--warmup", "0.5", "--repeat-share", "0.5", "--hot-set", "20", "--prime-cache",
        "--length-mix", "short=0.6,medium=0.3,long=0.1", "--output", str(out),
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    check_report(report, 4)
    assert report["config"]["transport"] == "http" and report["config"]["mode"] == "closed"
    assert report["prime"] == {"texts": 20, "failed_requests": 0}
    assert report["cache_hits"] > 0  # the repeated half of the texts was served from the cache
    assert {"tokenize", "inference", "total"} <= set(report["stages_mean_ms"])


@pytest_integration
def test_grpc_closed_loop(service, corpus, tmp_path):
    cfg = LoadConfig(transport="grpc", grpc_target=service.grpc_target, grpc_metadata=service.grpc_metadata,
                     model=MODEL, concurrency=4, duration_s=3, warmup_requests=2, progress=True, label="grpc")
    out = tmp_path / "grpc.json"
    report = run_load(cfg, CorpusWorkload(corpus, 8, seed=7), output=out)
    check_report(report, 8)
    assert json.loads(out.read_text())["ok"] == report["ok"]
    assert "inference" in report["stages_mean_ms"]  # timings came back in the trailers


@pytest_integration
def test_http_open_loop_with_a_request_count(service, corpus, tmp_path):
    wl = FixedWorkload.chunked(corpus.texts[:40], corpus.tokens[:40], 2)
    cfg = LoadConfig(url=service.http_url, model=MODEL, mode="open", rate=15, requests=20, arrival="poisson",
                     encoding_format="base64", progress=False)
    report = run_load(cfg, wl, output=tmp_path / "open.json")
    check_report(report, 2)
    assert report["sent"] == 20
    assert report["tokens"] == sum(corpus.tokens[:40])  # each request once, in order


@pytest_integration
def test_http_with_httpx_as_the_client(service, corpus):
    cfg = LoadConfig(url=service.http_url, model=MODEL, http_client="httpx", concurrency=2, requests=8,
                     progress=False)
    report = run_load(cfg, CorpusWorkload(corpus, 3, seed=5))
    check_report(report, 3)
    assert report["config"]["http_client"] == "httpx"
    assert {"client_headers", "client_body", "client_parse"} <= set(report["stages_mean_ms"]), report["stages_mean_ms"]


@pytest_integration
def test_grpc_stream_method(service, corpus):
    cfg = LoadConfig(transport="grpc", grpc_target=service.grpc_target, grpc_metadata=service.grpc_metadata,
                     grpc_method="stream", model=MODEL, concurrency=2, requests=6, progress=False)
    report = run_load(cfg, CorpusWorkload(corpus, 10, seed=11))
    check_report(report, 10)
    assert report["sent"] == 6
