"""`embedserve`: export models, serve them. Every serve flag is also an EMBEDSERVE_* env var."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from models.artifacts import ModelArtifacts
from models.errors import ArtifactsMissing, EmbedError
from models.specs import REGISTRY, resolve_model
from serving.batch import command as batch_command
from serving.eval import command as eval_command
from serving.launch import (
    App,
    IngressConfig,
    IngressMismatch,
    cluster_ingress,
    ingress_on_cluster,
    run_app,
    running_serve_ports,
    start_ray,
    start_serve,
)
from serving.ports import PortInUse, check_ports, is_loopback, listens_at
from serving.settings import Settings, settings_error
from serving.shutdown import stop



def add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """One --flag per Settings field (or those named); unset flags leave env vars and defaults in charge."""
    for name, field in Settings.model_fields.items():
        if names is not None and name not in names:
            continue
        flag = "--" + name.replace("_", "-")
        env = "EMBEDSERVE_" + name.upper()
        # argparse %-formats help text: a literal "%" in a description must reach it as "%%".
        text = (field.description or "").replace("%", "%%")
        parser.add_argument(flag, dest=name, default=None, help=f"{text} [env {env}]")


def exporter(spec):
    """The export of the model's task: models.sparse_export for a sparse (SPLADE) model, else models.export."""
    if spec.task == "sparse":
        from models.sparse_export import export_sparse

        return export_sparse
    from models.export import export_model

    return export_model


def export_command(args) -> int:
    try:
        import models.export  # noqa: F401 (torch / optimum present?)
    except ImportError as exc:  # torch / optimum are only in the `export` extra
        print(f"export needs the export extra: pip install 'embedserve[export]' ({exc})", file=sys.stderr)
        return 2
    from models.model_folder import parse_entry, read_folder

    artifact_dir = Path(args.artifact_dir or Settings().artifact_dir)
    names = args.models or Settings().models
    if args.name and (len(names) != 1 or parse_entry(names[0])[1] is None):
        print("embedserve export: --name names the model of one folder: embedserve export PATH --name NAME", file=sys.stderr)
        return 2
    try:
        for entry in names:
            name, path = parse_entry(entry)
            spec = read_folder(path, args.name or name) if path is not None else resolve_model(name)
            exporter(spec)(spec, artifact_dir, int8_weights=args.int8_weights, force=args.force)
    except EmbedError as exc:  # a folder it cannot serve, a clash, an export below the floor: one line
        print(f"embedserve export: {exc.message}", file=sys.stderr)
        return 2
    return 0


def ensure_exported(s: Settings) -> None:
    """Export every served model that has no artifacts yet (first start on a fresh machine), and
    measure what an older export lacks."""
    from models.export import missing_measurements

    for name in s.models:
        spec = resolve_model(name)
        try:
            artifacts = ModelArtifacts.load(s.artifact_dir, spec)
            if s.variant != "auto" and spec.task != "sparse":  # a sparse model runs its own (models.sparse)
                artifacts.variant(s.variant)
            missing = missing_measurements(artifacts.root, artifacts.manifest)
            if spec.user and (artifacts.manifest.get("model_spec") or {}).get("revision") != spec.revision:
                print(f"{spec.id}: its folder changed since the export: exporting it again.", flush=True)
                missing = ["everything"]
        except ArtifactsMissing:
            print(f"{spec.id} is not exported yet: exporting it to {s.artifact_dir} (once).", flush=True)
            missing = ["everything"]
        if missing:
            exporter(spec)(spec, s.artifact_dir, int8_weights=s.variant == "int8", force=missing == ["everything"] and spec.user)


def start(s: Settings) -> tuple[App, IngressConfig]:
    """Start (or join) Ray with the ingress's environment, start Ray Serve and run the
    application; the ingress that really runs (on a joined cluster, the nodes' environment
    decides it: see launch.ingress_on_cluster)."""
    ingress = IngressConfig.from_settings(s)
    start_ray(s.ray_address, object_store_mb=s.object_store_mb, ingress=ingress, metrics_port=s.metrics_port,
              loopback_only=is_loopback(s.host))
    if s.ray_address:
        ingress = ingress_on_cluster(ingress, cluster_ingress(), running_serve_ports())
    start_serve(ingress)
    return run_app(s), ingress


def refuse_elsewhere(app: App, s: Settings) -> str | None:
    """Why the application does not answer on the asked HTTP port (where Ray Serve put it
    elsewhere), or None: it never serves silently on another port."""
    port = urlsplit(app.http_url).port
    if port != s.http_port:
        return (f"the application answers on HTTP port {port}, not --http-port {s.http_port}: Ray Serve on this cluster "
                "routes it there; stopped it. Run with the ports the cluster serves, or --ingress proxy")
    return None


class _HideRaysReadyLine(logging.Filter):
    """Ray Serve logs "Application 'embedserve' is ready at http://127.0.0.1:<port>/", the head
    node's idle proxy on a port of its own with direct ingress; the banner says where it answers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return " is ready at " not in record.getMessage()


def serve_command(args) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        s = Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError: a model entry it cannot serve, a bad value
        print(f"embedserve serve: {settings_error(exc)}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    logging.getLogger("ray.serve").addFilter(_HideRaysReadyLine())

    def trap_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())

    if not s.ray_address:  # this machine's own Ray: its ports are ours to take
        try:
            check_ports({"--http-port": s.http_port, "--grpc-port": s.grpc_port, "--metrics-port": s.metrics_port})
        except PortInUse as exc:
            print(f"embedserve: {exc}", file=sys.stderr)
            return 2
    # From the start: the app answers before wait_ready() returns, and a signal in that window
    # would otherwise kill the process with requests in flight.
    trap_signals()
    try:
        ensure_exported(s)
    except EmbedError as exc:  # a user's folder that cannot be exported: one line
        print(f"embedserve serve: {exc.message}", file=sys.stderr)
        return 2
    try:
        app, ingress = start(s)
    except IngressMismatch as exc:
        print(f"embedserve: {exc}", file=sys.stderr)
        return 2
    trap_signals()  # ray.init() installs its own SIGTERM handler (sys.exit): take it back
    app.wait_ready()
    if why := refuse_elsewhere(app, s):
        from ray import serve

        serve.delete(app.name)
        print(f"embedserve: {why}", file=sys.stderr)
        return 2
    print(f"embedserve is serving {', '.join(s.models)}", flush=True)
    for m in app.get("/v1/models", headers=_auth_header(s))[2].get("data", []):
        e = m.get("engine") or {}
        fid = e.get("fidelity") or {}
        print(f"  {m['id']}: {e.get('variant')} on {e.get('backend')} {e.get('version')}, {e.get('precision')}, "
              f"CPU {e.get('cpu', {}).get('model')} [{', '.join(e.get('cpu', {}).get('features', []))}]"
              + (f", min cosine {fid['min_cos']:.5f} to sentence-transformers" if fid else ""), flush=True)
        print(f"    why: {e.get('choice')}", flush=True)
    # Where the application answers, as Ray Serve routes it (direct ingress: the replica's own
    # ports), and where each port really listens (read from the machine's sockets).
    http_port = urlsplit(app.http_url).port
    print(f"  HTTP  {app.http_url}/v1/embeddings   (OpenAI-compatible; ingress: {ingress.kind}; "
          f"listens on {listens_at(http_port)})", flush=True)
    if s.grpc_port:
        grpc_port = int(app.grpc_target.rsplit(":", 1)[1])
        print(f"  gRPC  {app.grpc_target}   embedserve.v1.EmbeddingService (reflection on; "
              f"listens on {listens_at(grpc_port)})", flush=True)
    if s.metrics_port and not s.ray_address:
        print(f"  Prometheus  http://{'127.0.0.1' if s.host in ('0.0.0.0', '::') else s.host}:{s.metrics_port}/metrics"
              f"   (ray_embedserve_*; listens on {listens_at(s.metrics_port)})", flush=True)
    print("Ctrl-C stops it.", flush=True)
    stopping.wait()
    print("shutting down: draining requests in flight", flush=True)
    stop()
    return 0


def _auth_header(s: Settings) -> dict:
    keys = sorted(s.api_key_set())
    return {"authorization": f"Bearer {keys[0]}"} if keys else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_export = sub.add_parser("export", help="Export models to ONNX (needs the export extra).")
    known = ", ".join(a for s in REGISTRY for a in s.aliases)
    p_export.add_argument("models", nargs="*", help="Models to export (default: EMBEDSERVE_MODELS): a shipped model "
                          f"({known}), a model folder PATH (sentence-transformers or Hugging Face; a hub id only "
                          "from the local cache), or NAME=PATH.")
    p_export.add_argument("--name", help="The name a folder's model is served as (default: the folder's name).")
    p_export.add_argument("--artifact-dir", help="Where artifacts go [env EMBEDSERVE_ARTIFACT_DIR]")
    p_export.add_argument("--int8-weights", action="store_true", help="Also build the dynamic-int8 weight variant (lossy).")
    p_export.add_argument("--force", action="store_true", help="Export again even if artifacts are complete.")
    p_export.set_defaults(func=export_command)

    p_serve = sub.add_parser("serve", help="Serve the HTTP and gRPC APIs on a local or existing Ray.")
    add_settings_flags(p_serve)
    p_serve.set_defaults(func=serve_command)

    p_batch = sub.add_parser("batch", help="Embed a corpus offline on Ray Data (JSONL, CSV, Parquet or an OpenAI batch file).",
                             description=batch_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch_command.add_arguments(p_batch)
    add_settings_flags(p_batch, batch_command.ENGINE_SETTINGS)
    p_batch.set_defaults(func=batch_command.command)

    p_eval = sub.add_parser("eval", help="Measure search quality per model, size and encoding on your own query/document pairs.",
                            description=eval_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    eval_command.add_arguments(p_eval)
    add_settings_flags(p_eval, eval_command.ENGINE_SETTINGS)
    p_eval.set_defaults(func=eval_command.command)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
