"""A user's model: its spec read from its own folder, and recorded in its manifest.

The folder is a sentence-transformers folder (modules.json and each module's config,
sentence_bert_config.json, config_sentence_transformers.json, the tokenizer) or a plain
Hugging Face model folder (then: mean pooling, normalized, the tokenizer's max length). A hub id
is taken only from the local Hugging Face cache: nothing is downloaded. Pure JSON reading: no
torch. What the engine cannot run is refused here, with the reason, before any export.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from models.errors import EmbedError
from models.prompts import ST_CONFIG, with_default
from models.specs import REGISTRY, DenseLayer, FolderWeights, ModelSpec, register_user_model

# transformers model_type -> what the engine runs (optimum exports all of them as feature-extraction).
ENCODERS = ("bert", "roberta", "xlm-roberta", "camembert", "mpnet", "distilbert", "modernbert")
DECODERS = ("qwen2", "qwen3")  # last-token pooling, causal attention
SUPPORTED = ENCODERS + DECODERS
# sentence-transformers module types (old and new paths) by their last name.
TRANSFORMER, POOLING, DENSE, NORMALIZE = "Transformer", "Pooling", "Dense", "Normalize"
# A sentence-transformers SparseEncoder (SPLADE): a masked-LM transformer, then SpladePooling.
MLM_TRANSFORMER, SPLADE_POOLING = "MLMTransformer", "SpladePooling"
ST_POOLING_MODES = {"cls": "cls", "mean": "mean", "max": "max", "lasttoken": "last", "weightedmean": "weightedmean",
                    "mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                       "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
DEFAULT_MAX_LENGTH = 512  # a plain folder whose tokenizer names no usable limit
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelFolderError(EmbedError):
    """A folder the engine cannot serve (the message says why)."""

    code = "unsupported_model"


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{path} cannot be read as JSON: {exc}") from None


def locate(source: str) -> Path:
    """A local folder, or a hub id's snapshot already in the local Hugging Face cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelFolderError(f"{source} is a file, not a model folder.")
        return path.resolve()
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith(("/", ".")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source, local_files_only=True))
        except Exception:  # noqa: BLE001 (not in the cache, in whatever way the hub library says it)
            raise ModelFolderError(
                f"{source} is not a folder and not in the local Hugging Face cache (nothing is downloaded)."
            ) from None
    raise ModelFolderError(f"{source}: no such folder.")


def _module_kind(type_path: str) -> str:
    return type_path.rsplit(".", 1)[-1]


def _modules(root: Path) -> list[dict]:
    """modules.json, or the documented defaults of a plain folder (transformer, mean, normalize)."""
    if (root / "modules.json").is_file():
        return _json(root / "modules.json")
    return [{"path": "", "type": TRANSFORMER}, {"path": None, "type": POOLING}, {"path": None, "type": NORMALIZE}]


def _pooling(cfg: dict | None, arch: str) -> str:
    if cfg is None:  # a plain folder
        return "last" if arch in DECODERS else "mean"
    if not cfg.get("include_prompt", True):
        raise ModelFolderError("pooling that leaves out the prompt (include_prompt: false) is not supported.")
    mode = cfg.get("pooling_mode")
    if mode is None:
        mode = [m for k, m in LEGACY_POOLING_KEYS.items() if cfg.get(k)]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in ST_POOLING_MODES:
        raise ModelFolderError(f"pooling {modes} is not supported: one of {', '.join(ST_POOLING_MODES)}.")
    return ST_POOLING_MODES[modes[0]]


def _dense(root: Path, module: dict) -> DenseLayer:
    from models.head import ACTIVATIONS

    cfg = _json(root / module["path"] / "config.json")
    act = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if act not in ACTIVATIONS:
        raise ModelFolderError(f"the Dense layer's activation {act} is not supported ({', '.join(ACTIVATIONS)}).")
    return DenseLayer(int(cfg["in_features"]), int(cfg["out_features"]), act)


def _tokenizer_facts(root: Path) -> dict:
    """pad token id, padding side and max length from the fast tokenizer's files."""
    if not (root / "tokenizer.json").is_file():
        raise ModelFolderError(f"{root} has no tokenizer.json: a fast tokenizer is needed.")
    cfg = _json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    pad = cfg.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    return {"pad_token_id": tok.token_to_id(pad) if pad else None, "padding_side": cfg.get("padding_side", "right"),
            "model_max_length": cfg.get("model_max_length"), "do_lower_case": bool(cfg.get("do_lower_case", False))}


def read_folder(source: str, name: str | None = None) -> ModelSpec:
    """The spec of the model in `source` (a folder or a cached hub id), served as `name`
    (default: the folder's name). Refuses what the engine cannot run, with the reason."""
    root = locate(source)
    # Default name: the folder's, or a cached hub id's last part (its snapshot folder is a hash).
    name = name or (root.name if Path(source).expanduser().exists() else source.rsplit("/", 1)[-1])
    check_name(name)
    if not (root / "config.json").is_file() or not any((root / f).is_file() for f in WEIGHT_FILES):
        raise ModelFolderError(f"{root} holds no model: it needs a config.json and model.safetensors (or pytorch_model.bin).")
    config = _json(root / "config.json")
    arch = str(config.get("model_type", "unknown"))
    if "auto_map" in config:
        raise ModelFolderError(f"{root}: the architecture '{arch}' needs remote code (auto_map in config.json), which is never run.")
    if arch not in SUPPORTED:
        raise ModelFolderError(f"{root}: the architecture '{arch}' is not supported. Supported: {', '.join(SUPPORTED)}.")
    if is_cross_encoder(root, config):
        return _cross_encoder_spec(root, name, config, arch)
    if _is_sparse(root, config):
        return _sparse_spec(root, name, config, arch)
    modules = _modules(root)
    kinds = [_module_kind(m["type"]) for m in modules]
    unknown = [k for k in kinds if k not in (TRANSFORMER, POOLING, DENSE, NORMALIZE)]
    if unknown or kinds[:1] != [TRANSFORMER] or kinds.count(TRANSFORMER) != 1 or (root / modules[0]["path"]).resolve() != root:
        raise ModelFolderError(f"{root}: modules {kinds} are not supported: a Transformer in the folder itself, "
                               "then Pooling, Dense and Normalize.")
    pool_cfg = next((_json(root / m["path"] / "config.json") for m in modules
                     if _module_kind(m["type"]) == POOLING and m["path"]), None)
    if POOLING not in kinds:
        raise ModelFolderError(f"{root}: modules.json has no Pooling module.")
    pooling = _pooling(pool_cfg, arch)
    dense = tuple(_dense(root, m) for m in modules if _module_kind(m["type"]) == DENSE)
    st_cfg = _json(root / "sentence_bert_config.json") if (root / "sentence_bert_config.json").is_file() else {}
    st_meta = _json(root / ST_CONFIG) if (root / ST_CONFIG).is_file() else {}
    tok = _tokenizer_facts(root)
    if arch in DECODERS and pooling != "last":
        raise ModelFolderError(f"{root}: a decoder ('{arch}') is served with last-token pooling only, not {pooling}.")
    hidden = int(config.get("hidden_size") or config.get("dim") or 0)
    max_len = _max_length(config, arch, st_cfg, tok)
    prompts = with_default({str(k): str(v) for k, v in (st_meta.get("prompts") or {}).items() if v},
                           st_meta.get("default_prompt_name"))
    return ModelSpec(
        id=name,
        aliases=(name,),
        revision=f"folder:{weights_digest(root)}",
        dimension=dense[-1].out_features if dense else hidden,
        max_seq_length=int(max_len),
        pooling=pooling,
        normalize=NORMALIZE in kinds,
        weights=FolderWeights(str(root)),
        prompts=prompts,
        pad_token_id=int(tok["pad_token_id"] if tok["pad_token_id"] is not None else config.get("pad_token_id") or 0),
        dense=dense,
        architecture=arch,
        similarity=str(st_meta.get("similarity_fn_name") or "cosine"),
        default_prompt_name=st_meta.get("default_prompt_name"),
        user=True,
        extra={"lower_case": bool(st_cfg.get("do_lower_case") or tok["do_lower_case"]), "source": str(root),
               "padding_side": tok["padding_side"]},
    )


def is_cross_encoder(root: Path, config: dict) -> bool:
    """A sentence-transformers CrossEncoder folder, or a plain sequence-classification one."""
    st_meta = _json(root / ST_CONFIG) if (root / ST_CONFIG).is_file() else {}
    st_cfg = _json(root / "sentence_bert_config.json") if (root / "sentence_bert_config.json").is_file() else {}
    if st_meta.get("model_type") == "CrossEncoder" or st_cfg.get("transformer_task") == "sequence-classification":
        return True
    archs = config.get("architectures") or []
    return not (root / "modules.json").is_file() and bool(archs) and str(archs[0]).endswith("ForSequenceClassification")


def _cross_encoder_spec(root: Path, name: str, config: dict, arch: str) -> ModelSpec:
    """A rerank model (task "rerank", models.rerank): its labels and activation as
    CrossEncoder reads them (config_sentence_transformers.json, else config.json's
    sentence_transformers entry, else sigmoid for one label, identity for several)."""
    from models.head import ACTIVATIONS
    from models.rerank import default_activation

    if arch in DECODERS:
        raise ModelFolderError(f"{root}: a decoder ('{arch}') cross-encoder is not supported; encoders only.")
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels") or 1)
    st_meta = _json(root / ST_CONFIG) if (root / ST_CONFIG).is_file() else {}
    kinds = [_module_kind(m["type"]) for m in _json(root / "modules.json")] if (root / "modules.json").is_file() else [TRANSFORMER]
    if kinds != [TRANSFORMER]:
        raise ModelFolderError(f"{root}: a cross-encoder of modules {kinds} is not supported: one sequence-classification Transformer.")
    if st_meta.get("default_prompt_name"):
        raise ModelFolderError(f"{root}: a cross-encoder with a default prompt is not supported.")
    st_cfg = _json(root / "sentence_bert_config.json") if (root / "sentence_bert_config.json").is_file() else {}
    act = (st_meta.get("activation_fn") or (config.get("sentence_transformers") or {}).get("activation_fn")
           or config.get("sbert_ce_default_activation_function") or default_activation(labels))
    if act not in ACTIVATIONS:
        raise ModelFolderError(f"the cross-encoder's activation {act} is not supported ({', '.join(ACTIVATIONS)}).")
    tok = _tokenizer_facts(root)
    return ModelSpec(
        id=name, aliases=(name,), revision=f"folder:{weights_digest(root)}", dimension=labels,
        max_seq_length=_max_length(config, arch, st_cfg, tok), pooling="cls", normalize=False,
        weights=FolderWeights(str(root)),
        pad_token_id=int(tok["pad_token_id"] if tok["pad_token_id"] is not None else config.get("pad_token_id") or 0),
        architecture=arch, similarity="score", user=True, task="rerank",
        extra={"activation": act, "labels": [str(v) for _, v in sorted((config.get("id2label") or {}).items(),
                                                                        key=lambda kv: int(kv[0]))],
               "lower_case": tok["do_lower_case"], "source": str(root), "padding_side": tok["padding_side"]},
    )


def _is_sparse(root: Path, config: dict) -> bool:
    """A SparseEncoder folder (MLMTransformer, or a Transformer whose task is fill-mask, then
    SpladePooling), or a plain folder of a *ForMaskedLM model (no modules.json): served as sparse
    (SPLADE) models. A plain masked-LM checkpoint meant for dense vectors needs a
    sentence-transformers folder (modules.json with a Pooling module)."""
    if (root / "modules.json").is_file():
        return SPLADE_POOLING in [_module_kind(m["type"]) for m in _json(root / "modules.json")]
    return any(str(a).endswith("ForMaskedLM") for a in config.get("architectures") or ())


def _sparse_spec(root: Path, name: str, config: dict, arch: str) -> ModelSpec:
    """The spec of a SPLADE model (models.sparse): one weight per vocabulary entry."""
    splade = {"strategy": "max", "activation": "relu"}
    if (root / "modules.json").is_file():
        modules = _modules(root)
        kinds = [_module_kind(m["type"]) for m in modules]
        st = _json(root / "sentence_bert_config.json") if (root / "sentence_bert_config.json").is_file() else {}
        mlm = kinds[:1] == [MLM_TRANSFORMER] or (kinds[:1] == [TRANSFORMER] and st.get("transformer_task") == "fill-mask")
        if not mlm or kinds[1:] != [SPLADE_POOLING] or (root / modules[0]["path"]).resolve() != root:
            raise ModelFolderError(f"{root}: sparse modules {kinds} are not supported: an MLMTransformer in the folder "
                                   "itself, then SpladePooling.")
        cfg = _json(root / modules[1]["path"] / "config.json") if modules[1].get("path") else {}
        splade = {"strategy": cfg.get("pooling_strategy", "max"), "activation": cfg.get("activation_function", "relu")}
        if splade["strategy"] not in ("max", "sum") or splade["activation"] not in ("relu", "log1p_relu"):
            raise ModelFolderError(f"{root}: SpladePooling {splade} is not supported (max or sum; relu or log1p_relu).")
    else:
        st = {}
    if arch not in ENCODERS:
        raise ModelFolderError(f"{root}: a sparse model's architecture '{arch}' is not supported. Supported: {', '.join(ENCODERS)}.")
    st_meta = _json(root / ST_CONFIG) if (root / ST_CONFIG).is_file() else {}
    tok = _tokenizer_facts(root)
    return ModelSpec(
        id=name, aliases=(name,), revision=f"folder:{weights_digest(root)}",
        dimension=int(config["vocab_size"]), max_seq_length=_max_length(config, arch, st, tok),
        pooling="max", normalize=False, weights=FolderWeights(str(root)),
        prompts=with_default({str(k): str(v) for k, v in (st_meta.get("prompts") or {}).items() if v},
                             st_meta.get("default_prompt_name")),
        pad_token_id=int(tok["pad_token_id"] if tok["pad_token_id"] is not None else config.get("pad_token_id") or 0),
        architecture=arch, similarity="dot", default_prompt_name=st_meta.get("default_prompt_name"), user=True,
        task="sparse",
        extra={"lower_case": bool(st.get("do_lower_case")), "source": str(root), "padding_side": tok["padding_side"],
               "splade": splade},
    )


def _max_length(config: dict, arch: str, st_cfg: dict, tok: dict) -> int:
    """sentence_bert_config's max_seq_length, else the tokenizer's model_max_length (a sane one,
    else DEFAULT_MAX_LENGTH), capped by the model's positions (RoBERTa's two offset ones off)."""
    positions = int(config.get("max_position_embeddings") or 0) - (2 if arch in ("roberta", "xlm-roberta", "camembert") else 0)
    limit = st_cfg.get("max_seq_length") or tok["model_max_length"]
    if not isinstance(limit, int) or limit <= 0 or limit > 1_000_000:
        limit = DEFAULT_MAX_LENGTH
    return int(min(limit, positions) if positions > 0 else limit)


def weights_digest(root: Path) -> str:
    """A short fingerprint of the weights (names, sizes, modification times): the revision the
    cache keys name, so a retrained model never answers from the old one's cache."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")):
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def check_name(name: str) -> None:
    if _is_shipped(name):
        raise ModelFolderError(f"'{name}' is the name of a shipped model: choose another --name.")
    if not NAME_RE.match(name):
        raise ModelFolderError(f"'{name}' cannot name a model: letters, digits, '.', '_' and '-' only, at most 64.")


def spec_to_manifest(spec: ModelSpec) -> dict:
    """The spec as the manifest records it (the folder may be gone when the model is served)."""
    d = asdict(spec)
    d["weights"] = {"path": spec.weights.path}
    return d


def spec_from_manifest(d: dict) -> ModelSpec:
    d = dict(d)
    return ModelSpec(**{**d, "aliases": tuple(d["aliases"]), "weights": FolderWeights(**d["weights"]),
                        "dense": tuple(DenseLayer(**layer) for layer in d.get("dense") or ()),
                        "matryoshka_dims": tuple(d["matryoshka_dims"]) if d.get("matryoshka_dims") else None})


def parse_entry(entry: str) -> tuple[str | None, str | None]:
    """A model entry of EMBEDSERVE_MODELS / `embedserve export`: (name, path). A known or
    exported name is (name, None); a PATH is (None, path); NAME=PATH is (name, path)."""
    if "=" in entry:
        name, path = entry.split("=", 1)
        return name.strip(), path.strip()
    if _is_shipped(entry):
        return entry, None
    if "/" in entry or entry.startswith((".", "~")):  # a folder, or a hub id (from the local cache only)
        return None, entry
    return entry, None


def _is_shipped(name: str) -> bool:
    wanted = name.strip().lower()
    return any(wanted in {s.key, s.id.lower(), *(a.lower() for a in s.aliases)} for s in REGISTRY)


def exported_spec(artifact_dir: Path, name: str) -> ModelSpec | None:
    """The spec a user's model was exported with, from its manifest (None: not exported)."""
    path = Path(artifact_dir).expanduser() / name.lower() / "manifest.json"
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text()).get("model_spec")
    return spec_from_manifest(recorded) if recorded else None


def register_entries(entries: list[str], artifact_dir: Path) -> list[ModelSpec | None]:
    """Per entry, the user model it names (None: a shipped model), registered in this process
    (models.specs): from its manifest when exported (and its folder unchanged), else read from
    its folder."""
    out: list[ModelSpec | None] = []
    for entry in entries:
        name, path = parse_entry(entry)
        if path is None:
            if _is_shipped(name):
                out.append(None)
                continue
            spec = exported_spec(artifact_dir, name)
            if spec is None:
                raise ModelFolderError(
                    f"the model '{name}' is neither shipped nor exported to {artifact_dir}. "
                    f"Serve a folder as NAME=PATH, or run: embedserve export PATH --name {name}"
                )
        else:
            spec = read_folder(path, name)
            recorded = exported_spec(artifact_dir, spec.key)
            if recorded is not None and recorded.revision == spec.revision:
                spec = recorded
        register_user_model(spec)
        out.append(spec)
    return out
