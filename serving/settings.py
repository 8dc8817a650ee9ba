"""The one settings object. Every field is an env var (EMBEDSERVE_<NAME>) and a CLI flag of
`embedserve serve`; the Ray Serve app builder and the Helm chart feed the same fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.artifacts import default_artifact_dir
from models.run_planner import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS
from models.errors import EmbedError, ModelNotFound
from models.specs import DEFAULT_MODEL, ModelSpec, resolve_model
from models.windows import DEFAULT_MAX_WINDOWS, DEFAULT_WINDOW_OVERLAP

CommaList = Annotated[list[str], NoDecode]


def _split(value):
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDSERVE_", extra="ignore", frozen=True)

    # Where it listens.
    host: str = Field(
        "127.0.0.1",
        description="Address every listener binds to: HTTP, gRPC and (a local Ray's) Prometheus metrics. "
        "A loopback address keeps the local Ray on loopback too; 0.0.0.0 opens them to the network.",
    )
    http_port: int = Field(8000, ge=1, le=65535, description="HTTP (OpenAI-compatible API) port.")
    grpc_port: int = Field(9000, ge=0, le=65535, description="gRPC port (0 turns gRPC off).")
    ingress: Literal["proxy", "direct", "haproxy"] = Field(
        "direct",
        description="How requests reach the ingress replicas: direct (each replica serves HTTP and gRPC itself on "
        "http_port / grpc_port and up, one port a replica on a node), haproxy (HAProxy on http_port / grpc_port "
        "forwards to the replicas), proxy (Ray Serve's proxy actors). Read when Ray starts.",
    )
    metrics_port: int = Field(
        8080, ge=0, le=65535, description="Prometheus metrics of a local Ray node (0: a port Ray picks)."
    )
    access_log: bool = Field(
        False, description="Ray Serve's access log, a line per request (a few per cent of a single-text request's CPU)."
    )

    # Models and how they run.
    models: CommaList = Field(
        [DEFAULT_MODEL],
        description="Models to serve, comma-separated: a shipped model's id or alias, the name of a model exported "
        "with `embedserve export PATH --name NAME`, a model folder PATH, or NAME=PATH (a folder not yet exported is "
        "exported on first start). The name is what clients send as `model`.",
    )
    variant: Literal["auto", "fp32", "optimized", "int8", "openvino-fp32", "openvino-bf16"] = Field(
        "auto",
        description="What runs the model: auto (the fastest variant this CPU runs natively whose measured "
        "fidelity clears the floor below: OpenVINO bf16 on CPUs with AMX / AVX512-BF16, else fp32), fp32 "
        "(ONNX Runtime, exact), optimized (ONNX Runtime fusions, same vectors), openvino-fp32 (exact), "
        "openvino-bf16, int8 (ONNX Runtime int8 weights, lossy, opt-in).",
    )
    fidelity_min_cos: float = Field(
        0.999, ge=0, le=1, description="auto accepts a lossy variant only with at least this min cosine to sentence-transformers fp32."
    )
    fidelity_top10_kept: float = Field(
        0.99, ge=0, le=1, description="auto accepts a lossy variant only if it keeps this share of the fp32 top-10 neighbours."
    )
    cpu_features: CommaList | None = Field(
        None, description="Plan as if the CPU had exactly these flags (e.g. avx2 to rule out bf16); unset: read from the CPU."
    )
    openvino_streams: int = Field(
        0, ge=0, description="OpenVINO streams per encoder (batches of a round run side by side, threads split among "
        "them; 0: two where the encoder has two threads or more, else one)."
    )
    artifact_dir: Path = Field(default_factory=default_artifact_dir, description="Where exported models live.")
    providers: CommaList = Field(["auto"], description="ONNX Runtime providers: auto, cpu, cuda, tensorrt.")
    intra_op_threads: int = Field(0, ge=0, description="Inference threads per encoder (ONNX Runtime or OpenVINO; 0: one per core).")
    encoder_replicas: int = Field(1, ge=1, description="Encoder replicas per model.")
    encoder_num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves for each encoder replica.")
    encoder_num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves for each encoder replica.")
    ingress_replicas: int = Field(1, ge=1, description="HTTP/gRPC ingress replicas.")
    encoder_placement: Literal["replica", "ingress"] = Field(
        "ingress", description="replica: one encoder deployment per model; ingress: each ingress replica runs the encoders itself (one Ray hop less)."
    )

    # Dynamic batching (retunable live through the deployment's user_config).
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1, description="Most texts in one encoder run.")
    max_batch_tokens: int = Field(
        DEFAULT_MAX_BATCH_TOKENS, ge=512, description="Most padded tokens in one encoder run (a batching round gathers 16x this)."
    )
    pad_width_step: int = Field(
        0, ge=0, le=64,
        description="Pad each encoder run to a multiple of this many tokens (fewer distinct shapes for the runtime to "
                    "prepare and cache); 1: to the longest row; 0: the backend's (16 on OpenVINO, 1 on ONNX Runtime).",
    )
    pack_texts: bool = Field(
        True, description="Lay several texts end to end in one row of an encoder run, each attending only to itself "
        "(on OpenVINO, where the model's graph allows it: checked at load against the graph as exported); false: "
        "a row a text.",
    )
    batch_wait_timeout_ms: float = Field(
        5.0, ge=0, description="Most an idle encoder waits for requests already on their way to it (admitted, not yet "
        "at the encoder) to share its round, and (or 5% of the last round's time, if longer) a round waits for the "
        "callers of the round before it to come back; a request nobody follows starts at once."
    )
    overlap_rounds: bool = Field(
        True, description="Start a batching round's runs beside the last runs of the round before it, where the "
        "engine has several streams (no stream idles while a round ends); false: one round at a time."
    )
    chunk_size: int = Field(64, ge=1, description="Texts per encoder call when a request is split.")

    # Prompts per input type, and long texts.
    prompts: dict[str, dict[str, str]] = Field(
        {},
        description='Prompts per model and input type, as JSON: {"all-MiniLM-L6-v2": {"search_query": "query: "}}; '
        "they add to and override the model's own.",
    )
    window_overlap_tokens: int = Field(
        DEFAULT_WINDOW_OVERLAP, ge=0, description="truncate=window: tokens two neighbouring windows of a long text share."
    )
    max_windows_per_text: int = Field(
        DEFAULT_MAX_WINDOWS, ge=1, description="truncate=window: most windows one text may take; a longer one is a 400."
    )

    # Admission control and limits.
    max_ongoing_requests: int = Field(64, ge=1, description="Requests one ingress replica works on at once.")
    max_queued_requests: int = Field(64, ge=-1, description="Requests waiting per ingress; past it 429.")
    encoder_max_ongoing_requests: int = Field(256, ge=1, description="Encoder calls in flight per replica.")
    max_inputs: int = Field(2048, ge=1, description="Most inputs in one request.")
    max_payload_bytes: int = Field(8 << 20, ge=1024, description="Largest request body.")
    accept_token_ids: bool = Field(
        False,
        description="POST /v1/embeddings (and OpenAI batch files) take token ids as input, read as this model's own "
        "(from POST /tokenize). Off: an array of integers is a 400, since clients such as LangChain's OpenAIEmbeddings "
        "send tiktoken ids that would embed as the wrong text.",
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 429.")
    request_timeout_s: float = Field(60.0, gt=0, description="Deadline of one request inside the service.")

    # Embedding cache.
    cache: Literal["auto", "memory", "redis", "off"] = Field("auto", description="auto: Redis if redis_url, else memory.")
    redis_url: SecretStr | None = Field(None, description="redis://[:password@]host:port/db or rediss://...")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Lifetime of a cached vector in Redis.")
    cache_max_bytes: int = Field(256 << 20, ge=0, description="Bound of the in-process cache.")
    cache_timeout_ms: float = Field(50.0, gt=0, description="Deadline of each cache call (fail-open past it).")

    # Authentication.
    api_keys: SecretStr | None = Field(None, description="Comma-separated API keys; none = open.")
    api_keys_file: Path | None = Field(None, description="File with one API key a line.")

    # Ray.
    ray_address: str | None = Field(None, description="Ray cluster to join; unset starts a local one.")
    object_store_mb: int = Field(512, ge=75, description="Object store of a local Ray instance.")

    _split_models = field_validator("models", "providers", "cpu_features", mode="before")(_split)

    @model_validator(mode="before")
    @classmethod
    def _user_models(cls, data):
        """Users' models (PATH, NAME=PATH, or a name exported from a folder) are registered in
        this process (models.model_folder) and then named by their names alone, so that every
        process built from these settings (replicas, bulk-job workers) finds them by name."""
        from models.model_folder import register_entries

        if not isinstance(data, dict) or data.get("models") is None:
            return data
        artifact_dir = Path(data.get("artifact_dir") or default_artifact_dir()).expanduser()
        entries = _split(data["models"])
        try:
            specs = {e: s for e, s in zip(entries, register_entries(entries, artifact_dir)) if s is not None}
        except EmbedError as exc:
            raise ValueError(exc.message) from None
        return {**data, "models": [specs[e].key if e in specs else e for e in entries]}

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts_json(cls, value):
        """A flag gives the JSON as a string; every key must name a known model."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        for name in value or {}:
            try:
                resolve_model(name)
            except ModelNotFound as exc:
                raise ValueError(exc.message) from None
        return value

    def prompts_for(self, spec: ModelSpec) -> dict[str, str]:
        """The prompts this setting gives `spec` (keys may be any of its names)."""
        out: dict[str, str] = {}
        for name, table in self.prompts.items():
            if resolve_model(name).id == spec.id:
                out.update(table)
        return out

    def api_key_set(self) -> frozenset[str]:
        keys = set()
        if self.api_keys is not None:
            keys.update(_split(self.api_keys.get_secret_value()))
        if self.api_keys_file is not None:
            keys.update(k.strip() for k in self.api_keys_file.read_text().splitlines() if k.strip())
        return frozenset(keys)

    def encoder_options(self) -> dict:
        """The engine's keyword arguments (models.encoder.Encoder) these settings make."""
        from models import cpu
        from models.variants import FidelityFloor

        detected = cpu.detect()
        return {
            "variant": self.variant,
            "providers": self.providers,
            "intra_op_threads": self.intra_op_threads,
            "max_batch_size": self.max_batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "width_step": self.pad_width_step,
            "pack": self.pack_texts,
            "streams": self.openvino_streams,
            "floor": FidelityFloor(self.fidelity_min_cos, self.fidelity_top10_kept),
            "cpu": detected if self.cpu_features is None else detected.with_flags(set(self.cpu_features)),
        }


def settings_error(exc: ValueError) -> str:
    """pydantic's ValidationError of these settings as one line (for the CLI)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in errors())
