"""The Ray Serve application: one ingress deployment (HTTP + gRPC) and the encoders.

Where the encoders run is a setting (`encoder_placement`):
  ingress  (default) each ingress replica runs every served model itself, behind a continuous
           batcher: one process, no Ray hop per call (measured: more single-text throughput and
           one worker process less on one machine);
  replica  one encoder deployment per model beside the ingress (`Encoder_<alias>`), scaled and
           given CPUs/GPUs apart from it: the cluster layout the Helm chart and serve.yaml use.
`build_app` is the import path for `serve run`, `serve deploy` and the Helm chart."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import BackpressureConfig
from ray.serve.schema import LoggingConfig
from ray.serve.handle import DeploymentHandle

from models.artifacts import ModelArtifacts
from models.backends import available_backends
from models.backends.onnxruntime import gpu_available
from models.continuous_batcher import ContinuousBatcher
from models.run_planner import round_tokens
from models.encoder import EncodeStats, Encoder
from models.specs import ModelSpec, resolve_model
from models.variants import choose
from serving.api import grpc_servicer
from serving.pipeline.cache import build_cache
from serving.api.ingress_core import Frontend
from serving.api.http_app import build_http_app
from serving.ray_listeners import adapt_ray_listeners
from serving.metrics import EncoderMetrics, IngressMetrics
from serving.pipeline.embed import Pipeline
from serving.pipeline.runtime import Encoded, ModelRuntime
from serving.settings import Settings
from serving.pipeline.sparse import LocalSparse, SparseService

log = logging.getLogger("ray.serve")
adapt_ray_listeners()  # this process's Ray servers: on EMBEDSERVE_HOST, their ports reusable at once


ENCODER_ATTEMPTS = 3  # tries of one encoder call whose replica went away


def running_ingress() -> str:
    """The ingress the Ray Serve of this process runs (as its environment said when it started)."""
    from ray.serve._private import constants

    if constants.RAY_SERVE_ENABLE_HA_PROXY:
        return "haproxy"
    return "direct" if constants.RAY_SERVE_ENABLE_DIRECT_INGRESS else "proxy"


class LocalEncoder:
    """One model run in this process: the encoder behind a continuous batcher. An encoder
    replica holds one; with `encoder_placement=ingress` the ingress replica holds them itself
    (no Ray hop per call)."""

    def __init__(self, spec: ModelSpec, s: Settings):
        self.encoder = Encoder(spec, ModelArtifacts.load(s.artifact_dir, spec), **s.encoder_options())
        log.info("%s", self.encoder.summary())
        self.metrics = EncoderMetrics(spec.id)
        self.batcher = ContinuousBatcher(
            self._round, round_tokens(s.max_batch_tokens), s.batch_wait_timeout_ms / 1000, self.metrics.record,
            overlap=s.overlap_rounds and getattr(self.encoder.session, "streams", 1) > 1,
        )

    def _round(self, seqs: list[np.ndarray], each=None, started=None) -> tuple[np.ndarray, EncodeStats]:
        stats = EncodeStats()
        return self.encoder.encode_ids(seqs, stats, each=each, started=started), stats

    def reconfigure(self, config: dict) -> None:
        if "max_batch_size" in config:
            self.encoder.max_batch_size = int(config["max_batch_size"])
        if "max_batch_tokens" in config:
            self.encoder.max_batch_tokens = int(config["max_batch_tokens"])
            self.batcher.max_round_tokens = round_tokens(self.encoder.max_batch_tokens)
        if "batch_wait_timeout_ms" in config:
            self.batcher.max_wait_s = float(config["batch_wait_timeout_ms"]) / 1000

    async def encode(self, seqs: list[np.ndarray], coming: int = 0) -> Encoded:
        vectors, info = await self.batcher.submit(seqs, coming)
        return Encoded(vectors, info, self.encoder.checksum)


@serve.deployment(ray_actor_options={"num_cpus": 1}, health_check_period_s=5)
class EncoderReplica:
    """Runs one model. Concurrent calls share rounds (continuous batching, by tokens); a round
    is planned into length-sorted ONNX Runtime runs."""

    def __init__(self, model: str, settings: dict):
        self.local = LocalEncoder(resolve_model(model), Settings(**settings))

    def reconfigure(self, config: dict) -> None:
        """Batch size, token budget and wait time, retunable live through user_config."""
        self.local.reconfigure(config)

    async def encode(self, seqs: list[np.ndarray], coming: int = 0) -> Encoded:
        """`coming`: requests the calling ingress has admitted that have not reached the encoders yet."""
        return await self.local.encode(seqs, coming)

    def describe(self) -> dict:
        """What runs the model in this replica (backend, precision, CPU, fidelity)."""
        return self.local.encoder.describe()

    def check_health(self) -> None:
        enc = self.local.encoder
        enc.encode_ids(enc.tokenize(["ok"]))


class _Replica:
    """The ingress replica of this process (each Ray replica is its own process)."""

    frontend: Frontend | None = None


http_app = build_http_app(lambda: _Replica.frontend)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(http_app)
class Ingress:
    def __init__(self, encoders: dict[str, DeploymentHandle], settings: dict):
        s = Settings(**settings)
        running = running_ingress()
        if running != s.ingress:  # Ray read its environment at start; the setting cannot change it now
            log.warning("EMBEDSERVE_INGRESS is %s but this Ray Serve runs %s: the nodes' environment decides "
                        "(embedserve serve sets it; a cluster needs it in every Ray container, see the Helm chart)",
                        s.ingress, running)
        self.encoders = encoders
        runtimes = {}
        self.local: dict[str, LocalEncoder] = {}
        sparse: dict[str, LocalSparse] = {}
        for name in s.models:
            spec = resolve_model(name)
            artifacts = ModelArtifacts.load(s.artifact_dir, spec)
            if spec.task == "sparse":  # SPLADE: in this replica, whatever the placement (serving.pipeline.sparse)
                sparse[spec.key] = LocalSparse(
                    spec, artifacts, variant=s.variant, prompts=s.prompts_for(spec), max_batch_tokens=s.max_batch_tokens,
                    batch_wait_s=s.batch_wait_timeout_ms / 1000, providers=s.providers,
                    intra_op_threads=s.intra_op_threads, max_batch_size=s.max_batch_size)
                continue
            if spec.key in encoders:
                # The encoder replicas choose for themselves; on the same kind of node they
                # choose this (the cache key names it).
                variant = planned_variant(artifacts, s)
            else:
                self.local[spec.key] = LocalEncoder(spec, s)
                variant = self.local[spec.key].encoder.variant
            runtimes[spec.key] = ModelRuntime.load(
                spec,
                artifacts,
                variant,
                prompts=s.prompts_for(spec),
                window_overlap=s.window_overlap_tokens,
                max_windows=s.max_windows_per_text,
            )
        self._engines: dict[str, dict] = {}
        cache = build_cache(
            s.cache,
            s.redis_url.get_secret_value() if s.redis_url else None,
            ttl_s=s.cache_ttl_s,
            max_bytes=s.cache_max_bytes,
            timeout_s=s.cache_timeout_ms / 1000,
        )
        pipeline = Pipeline(
            runtimes,
            self._encode,
            cache,
            max_inputs=s.max_inputs,
            chunk_size=s.chunk_size,
            max_chunk_tokens=round_tokens(s.max_batch_tokens),
            max_in_flight=s.max_ongoing_requests,
            retry_after_s=s.retry_after_s,
        )
        self.frontend = Frontend(
            pipeline, s.api_key_set(), s.max_payload_bytes, probe=self._probe, engine=self._engine,
            metrics=IngressMetrics(), accept_token_ids=s.accept_token_ids,
            sparse=SparseService(sparse, pipeline.in_flight)
            if sparse else None,
        )
        self.timeout_s = s.request_timeout_s
        _Replica.frontend = self.frontend

    async def _encode(self, key: str, seqs: list[np.ndarray]) -> Encoded:
        # Requests admitted here that have not reached the encoders: an idle encoder waits for
        # them (and only for them) before its round.
        coming = self.frontend.pipeline.on_the_way
        # asyncio.timeout, not wait_for: no extra task (a loop round trip) per call.
        async with asyncio.timeout(self.timeout_s):
            if key in self.local:
                return await self.local[key].encode(seqs, coming)
            return await self._remote(self.encoders[key], seqs, coming)

    async def _engine(self, key: str) -> dict:
        """What runs model `key`: this process's encoder, or (asked once) its encoder deployment's."""
        if key in self.local:
            return self.local[key].encoder.describe()
        if key not in self._engines:
            self._engines[key] = await self.encoders[key].describe.remote()
        return self._engines[key]

    @staticmethod
    async def _remote(handle: DeploymentHandle, seqs: list[np.ndarray], coming: int = 0) -> Encoded:
        """An encoder call is a pure function of its token ids: one whose replica died with it
        (its node lost, the replica killed) goes again to a replica that lives (Serve's router
        has dropped the dead one), within the request's deadline."""
        for attempt in range(1, ENCODER_ATTEMPTS + 1):
            try:
                return await handle.encode.remote(seqs, coming)
            except RayActorError:  # ActorDiedError, ActorUnavailableError
                if attempt == ENCODER_ATTEMPTS:
                    raise
                await asyncio.sleep(0.1 * attempt)

    async def _probe(self, key: str) -> bool:
        vectors = (await self._encode(key, [np.array([0], dtype=np.int64)])).vectors
        return vectors.shape[0] == 1

    # ---- gRPC: embedserve.v1.EmbeddingService ---------------------------------------------
    async def Embed(self, request, grpc_context):  # noqa: N802 (the RPC's name)
        return await grpc_servicer.embed(self.frontend, request, grpc_context)

    async def EmbedStream(self, request, grpc_context):  # noqa: N802
        async for response in grpc_servicer.embed_stream(self.frontend, request, grpc_context):
            yield response

    async def EmbedSparse(self, request, grpc_context):  # noqa: N802 (embedserve.v1.SparseService)
        return await grpc_servicer.embed_sparse(self.frontend, request, grpc_context)

    async def ListModels(self, request, grpc_context):  # noqa: N802
        return await grpc_servicer.list_models(self.frontend, grpc_context, request)

    async def Rerank(self, request, grpc_context):  # noqa: N802
        return await grpc_servicer.rerank(self.frontend, request, grpc_context)

    # ---- gRPC: grpc.health.v1.Health, for Kubernetes probes ----------------------------------
    async def Check(self, request):  # noqa: N802
        return await grpc_servicer.health_check(self.frontend)


def planned_variant(artifacts: ModelArtifacts, s: Settings) -> str:
    """The variant an encoder with these settings picks on this machine (without measuring)."""
    o = s.encoder_options()
    return choose(s.variant, artifacts.manifest["variants"], o["cpu"], o["floor"], gpu=gpu_available(s.providers),
                  available_backends=available_backends()).variant.name


def deployment_name(model_key: str) -> str:
    return f"Encoder_{model_key}"


def build_app(args: dict) -> serve.Application:
    """The application of a Serve config (`import_path: serving.app:build_app`): its `args`
    override EMBEDSERVE_* env vars. Ray Serve calls a builder with exactly one argument."""
    return application(Settings(**args))


def application(s: Settings) -> serve.Application:
    """The application for these settings: the Ingress and, with encoder_placement=replica,
    one encoder deployment per model."""
    wire = s.model_dump(mode="json")
    for secret in ("redis_url", "api_keys"):
        value = getattr(s, secret)
        wire[secret] = value.get_secret_value() if value is not None else None
    inline = s.encoder_placement == "ingress"
    encoders = {}  # none inline: the ingress builds its own encoders for the models it lacks
    if not inline:
        for spec in map(resolve_model, s.models):
            if spec.task == "sparse":  # runs in the ingress (serving.pipeline.sparse)
                continue
            encoders[spec.key] = EncoderReplica.options(
                name=deployment_name(spec.key),
                num_replicas=s.encoder_replicas,
                max_ongoing_requests=s.encoder_max_ongoing_requests,
                ray_actor_options={"num_cpus": s.encoder_num_cpus, "num_gpus": s.encoder_num_gpus},
                logging_config=LoggingConfig(enable_access_log=s.access_log),
            ).bind(spec.id, wire)
    return Ingress.options(
        num_replicas=s.ingress_replicas,
        ray_actor_options={"num_cpus": s.encoder_num_cpus if inline else 0,
                           "num_gpus": s.encoder_num_gpus if inline else 0},
        max_ongoing_requests=s.max_ongoing_requests * 2,
        max_queued_requests=s.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=429, retry_after_s=s.retry_after_s),
        logging_config=LoggingConfig(enable_access_log=s.access_log),
    ).bind(encoders, wire)
