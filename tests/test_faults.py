"""Faults under load: Redis killed and restarted (no request fails), an encoder replica killed
(its few requests get a clear 503, never a wrong vector; Ray replaces it), and the service
stopped with Ctrl-C / SIGTERM (requests in flight complete, the process exits 0)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support import load
from tests.support.redis_server import RedisServer
from tests.support.service import ROOT, App, artifact_dir, deploy, free_port, undeploy

pytestmark = pytest.mark.integration

M = "all-MiniLM-L6-v2"
ENCODER = "Encoder_all-minilm-l6-v2"
POOL = [load.words(50_000 + i, 12 + i % 20) for i in range(96)]


def reference(app: App) -> np.ndarray:
    status, _, body = app.post("/v1/embeddings", {"model": M, "input": POOL}, timeout=120)
    assert status == 200, body
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


def pick(w: int, n: int, k: int) -> list[int]:
    """k distinct pool indices for worker w's n-th request (varied mixes and batch shapes)."""
    start = (w * 31 + n * 7) % len(POOL)
    return [(start + j * 5) % len(POOL) for j in range(k)]


# The same text's vector, whatever round it rode in: bf16 (openvino-bf16, `auto` on CPUs with
# bf16 units) moves components by up to ~5e-4 with the batch's shape; another text's vector is
# far below this cosine.
SAME_COS = 0.9999


def same_vectors(got: np.ndarray, ref: np.ndarray) -> bool:
    return got.shape == ref.shape and bool(np.all(np.sum(got * ref, axis=1) >= SAME_COS))


def wrong_vectors(answers, ref: np.ndarray) -> list[str]:
    bad = []
    for a in answers:
        if a.status != 200:
            continue
        got = np.array([d["embedding"] for d in a.body["data"]], dtype=np.float32)
        if not same_vectors(got, ref[a.tag]):
            bad.append(f"request at {a.sent_at:.1f}s: indices {a.tag[:3]}...")
    return bad


# ---- Redis ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def cached(ray_serve, redis):
    app = deploy(
        ray_serve, "faults-redis", "/faults-redis", models=[M], cache="redis", redis_url=redis.url,
        encoder_num_cpus=0.5, cache_timeout_ms=100,
    )
    yield app
    undeploy("faults-redis")


def test_redis_killed_and_restarted_under_load_fails_no_request(cached, redis):
    ref = reference(cached)  # also fills Redis, so the load starts on cache hits
    events = {}

    def fault(t: float) -> None:
        if t >= 3 and "killed" not in events:
            redis.proc.kill()  # SIGKILL: no goodbye to the clients
            redis.proc.wait()
            events["killed"] = t
        elif t >= 7 and "killed" in events and "restarted" not in events:
            redis.start()  # same port, empty (no persistence)
            events["restarted"] = t

    def request(w: int, n: int):
        idx = pick(w, n, 6)
        return "/v1/embeddings", {"model": M, "input": [POOL[i] for i in idx]}, idx

    result = load.run(cached.http_url, request, workers=4, duration_s=12, timeout_s=30, on_tick=fault)
    by_phase = {
        phase: load.Load([a for a in result.answers if lo <= a.sent_at < hi])
        for phase, lo, hi in [("before", 0, events["killed"]), ("redis down", events["killed"], events["restarted"]),
                              ("after", events["restarted"], 1e9)]
    }
    print("redis fault:", result.summary(), {p: dict(r.statuses()) for p, r in by_phase.items()})
    assert set(result.statuses()) == {200}, result.summary()
    assert not result.failed()
    assert all(len(r.answers) > 0 for r in by_phase.values())
    assert not wrong_vectors(result.answers, ref)
    _, _, stats = cached.get("/stats")
    print("cache stats:", stats["cache"])
    assert stats["cache"]["breaker_opens"] >= 1  # it noticed, and stopped calling a dead Redis
    # Redis is used again once it is back: the breaker closes and a write is read back.
    deadline = time.monotonic() + 15
    text = f"back in business {time.time()}"
    hits = "0"
    while time.monotonic() < deadline and hits != "1":
        status, headers, _ = cached.post("/v1/embeddings", {"model": M, "input": text})
        assert status == 200
        hits = headers.get("x-cache-hits") or headers.get("X-Cache-Hits")
        time.sleep(0.3)
    assert hits == "1", cached.get("/stats")[2]
    assert redis.client().dbsize() > 0


# ---- an encoder replica --------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(ray_serve):
    app = deploy(ray_serve, "faults-kill", "/faults-kill", models=[M], cache="off", encoder_num_cpus=0.5,
                 request_timeout_s=60, encoder_placement="replica")
    yield app
    undeploy("faults-kill")


def test_encoder_replica_killed_under_load(plain):
    import ray

    ref = reference(plain)
    before = load.replica_actor_names("faults-kill", ENCODER)
    assert len(before) == 1, before
    events = {}

    def fault(t: float) -> None:
        if t >= 3 and "killed" not in events:
            ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
            events["killed"] = t

    def request(w: int, n: int):
        idx = pick(w, n, 8)
        return "/v1/embeddings", {"model": M, "input": [POOL[i] for i in idx]}, idx

    result = load.run(plain.http_url, request, workers=4, duration_s=15, timeout_s=90, backoff_s=0.2, on_tick=fault)
    codes = result.statuses()
    print("replica kill:", result.summary())
    assert set(codes) <= {200, 503}, result.summary()
    assert not [a for a in result.answers if a.status is None], [a.error for a in result.answers if a.error][:3]
    unavailable = [a for a in result.answers if a.status == 503]
    for a in unavailable:
        err = a.body["error"]
        assert err["type"] == "server_error" and err["code"] == "unavailable", err
        assert "replica" in err["message"] and "retry" in err["message"], err
        assert a.retry_after is not None and int(a.retry_after) >= 1, a
    assert not [a for a in unavailable if a.sent_at + a.latency_s < events["killed"]], "503 before the kill"
    assert not wrong_vectors(result.answers, ref), "a wrong vector was served"
    assert codes[200] > 0
    # The requests the dead replica held, plus a few routed to it before the router learned
    # of its death; not a flood.
    assert len(unavailable) <= max(8, codes[200] // 2), result.summary()
    # Ray replaced it; the service is ready and right again.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        after = load.replica_actor_names("faults-kill", ENCODER)
        if after and after != before and plain.get("/ready", timeout=15)[0] == 200:
            break
        time.sleep(1)
    assert after and after != before, after
    assert same_vectors(reference(plain), ref)


# ---- Ctrl-C / SIGTERM ----------------------------------------------------------------------

def start_cli(tmp_path, http_port: int, grpc_port: int) -> tuple[subprocess.Popen, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--models", M, "--artifact-dir", str(artifact_dir()), "--encoder-num-cpus", "0.5",
         "--object-store-mb", "100", "--cache", "off"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    return proc, log


def tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_drains_requests_in_flight(tmp_path, sig):
    http_port, grpc_port = free_port(), free_port()
    proc, log = start_cli(tmp_path, http_port, grpc_port)
    app = App("embedserve", f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", None)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, tail(log)
            try:
                # The CLI handles signals once it says so (serve.run returns after /ready is up).
                if "Ctrl-C stops it" in tail(log) and app.get("/ready", timeout=10)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail("embedserve serve did not become ready: " + tail(log))

        texts = 96
        bodies = [{"model": M, "input": [load.words(70_000 + j * texts + k, 40) for k in range(texts)]} for j in range(3)]
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(app.post, "/v1/embeddings", b, None, 120) for b in bodies]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10 and app.get("/stats")[2]["in_flight"] < len(bodies):
                time.sleep(0.05)
            in_flight = app.get("/stats")[2]["in_flight"]
            assert in_flight >= 1, "the requests finished before the signal: make them bigger"
            proc.send_signal(sig)
            signalled = time.monotonic()
            results = [f.result(timeout=120) for f in futures]
        statuses = [r[0] for r in results]
        print(f"{sig.name} with {in_flight} in flight: statuses {statuses}, answered {time.monotonic() - signalled:.1f}s after it")
        assert statuses == [200] * len(bodies), [r[2] for r in results]
        assert all(len(r[2]["data"]) == texts for r in results)
        code = proc.wait(timeout=90)
        exited = time.monotonic() - signalled
        print(f"exited {code} after {exited:.1f}s")
        assert code == 0, tail(log)
        assert exited < 90
        assert "draining" in tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
