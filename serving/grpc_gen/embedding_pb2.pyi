from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodingFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_FORMAT_UNSPECIFIED: _ClassVar[EncodingFormat]
    ENCODING_FORMAT_FLOAT: _ClassVar[EncodingFormat]
    ENCODING_FORMAT_INT8: _ClassVar[EncodingFormat]
    ENCODING_FORMAT_UINT8: _ClassVar[EncodingFormat]
    ENCODING_FORMAT_BINARY: _ClassVar[EncodingFormat]
    ENCODING_FORMAT_UBINARY: _ClassVar[EncodingFormat]

class Truncate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATE_UNSPECIFIED: _ClassVar[Truncate]
    TRUNCATE_END: _ClassVar[Truncate]
    TRUNCATE_START: _ClassVar[Truncate]
    TRUNCATE_NONE: _ClassVar[Truncate]
    TRUNCATE_WINDOW: _ClassVar[Truncate]
ENCODING_FORMAT_UNSPECIFIED: EncodingFormat
ENCODING_FORMAT_FLOAT: EncodingFormat
ENCODING_FORMAT_INT8: EncodingFormat
ENCODING_FORMAT_UINT8: EncodingFormat
ENCODING_FORMAT_BINARY: EncodingFormat
ENCODING_FORMAT_UBINARY: EncodingFormat
TRUNCATE_UNSPECIFIED: Truncate
TRUNCATE_END: Truncate
TRUNCATE_START: Truncate
TRUNCATE_NONE: Truncate
TRUNCATE_WINDOW: Truncate

class EmbedRequest(_message.Message):
    __slots__ = ("model", "texts", "dimensions", "encoding_format", "normalize", "truncate", "chunk_size", "input_type")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FORMAT_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    dimensions: int
    encoding_format: EncodingFormat
    normalize: bool
    truncate: Truncate
    chunk_size: int
    input_type: str
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., dimensions: _Optional[int] = ..., encoding_format: _Optional[_Union[EncodingFormat, str]] = ..., normalize: _Optional[bool] = ..., truncate: _Optional[_Union[Truncate, str]] = ..., chunk_size: _Optional[int] = ..., input_type: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("index", "values", "quantized", "windows")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    index: int
    values: _containers.RepeatedScalarFieldContainer[float]
    quantized: bytes
    windows: int
    def __init__(self, index: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., quantized: _Optional[bytes] = ..., windows: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("data", "model", "usage")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    usage: Usage
    def __init__(self, data: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Int8Scale(_message.Message):
    __slots__ = ("dimensions", "scale")
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    dimensions: int
    scale: float
    def __init__(self, dimensions: _Optional[int] = ..., scale: _Optional[float] = ...) -> None: ...

class QualityFigure(_message.Message):
    __slots__ = ("option", "top10_kept")
    OPTION_FIELD_NUMBER: _ClassVar[int]
    TOP10_KEPT_FIELD_NUMBER: _ClassVar[int]
    option: str
    top10_kept: float
    def __init__(self, option: _Optional[str] = ..., top10_kept: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "aliases", "dimension", "max_input_tokens", "matryoshka_dimensions", "matryoshka_any", "matryoshka_trained", "int8_scales", "quality", "engine", "variants", "prompts", "input_types", "prompts_declared", "window_tokens", "window_overlap_tokens", "max_windows_per_text")
    class PromptsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MATRYOSHKA_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MATRYOSHKA_ANY_FIELD_NUMBER: _ClassVar[int]
    MATRYOSHKA_TRAINED_FIELD_NUMBER: _ClassVar[int]
    INT8_SCALES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_DECLARED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOWS_PER_TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    dimension: int
    max_input_tokens: int
    matryoshka_dimensions: _containers.RepeatedScalarFieldContainer[int]
    matryoshka_any: bool
    matryoshka_trained: bool
    int8_scales: _containers.RepeatedCompositeFieldContainer[Int8Scale]
    quality: _containers.RepeatedCompositeFieldContainer[QualityFigure]
    engine: EngineInfo
    variants: _containers.RepeatedCompositeFieldContainer[VariantInfo]
    prompts: _containers.ScalarMap[str, str]
    input_types: _containers.RepeatedScalarFieldContainer[str]
    prompts_declared: bool
    window_tokens: int
    window_overlap_tokens: int
    max_windows_per_text: int
    def __init__(self, id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., dimension: _Optional[int] = ..., max_input_tokens: _Optional[int] = ..., matryoshka_dimensions: _Optional[_Iterable[int]] = ..., matryoshka_any: _Optional[bool] = ..., matryoshka_trained: _Optional[bool] = ..., int8_scales: _Optional[_Iterable[_Union[Int8Scale, _Mapping]]] = ..., quality: _Optional[_Iterable[_Union[QualityFigure, _Mapping]]] = ..., engine: _Optional[_Union[EngineInfo, _Mapping]] = ..., variants: _Optional[_Iterable[_Union[VariantInfo, _Mapping]]] = ..., prompts: _Optional[_Mapping[str, str]] = ..., input_types: _Optional[_Iterable[str]] = ..., prompts_declared: _Optional[bool] = ..., window_tokens: _Optional[int] = ..., window_overlap_tokens: _Optional[int] = ..., max_windows_per_text: _Optional[int] = ...) -> None: ...

class Fidelity(_message.Message):
    __slots__ = ("min_cos", "mean_cos", "top10_kept", "texts", "long_texts", "precision", "measured_at")
    MIN_COS_FIELD_NUMBER: _ClassVar[int]
    MEAN_COS_FIELD_NUMBER: _ClassVar[int]
    TOP10_KEPT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXTS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    min_cos: float
    mean_cos: float
    top10_kept: float
    texts: int
    long_texts: int
    precision: str
    measured_at: str
    def __init__(self, min_cos: _Optional[float] = ..., mean_cos: _Optional[float] = ..., top10_kept: _Optional[float] = ..., texts: _Optional[int] = ..., long_texts: _Optional[int] = ..., precision: _Optional[str] = ..., measured_at: _Optional[str] = ...) -> None: ...

class CpuInfo(_message.Message):
    __slots__ = ("model", "cores", "features", "bf16")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BF16_FIELD_NUMBER: _ClassVar[int]
    model: str
    cores: int
    features: _containers.RepeatedScalarFieldContainer[str]
    bf16: bool
    def __init__(self, model: _Optional[str] = ..., cores: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., bf16: _Optional[bool] = ...) -> None: ...

class EngineInfo(_message.Message):
    __slots__ = ("variant", "backend", "backend_version", "device", "precision", "threads", "streams", "cpu", "choice", "fidelity")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    variant: str
    backend: str
    backend_version: str
    device: str
    precision: str
    threads: int
    streams: int
    cpu: CpuInfo
    choice: str
    fidelity: Fidelity
    def __init__(self, variant: _Optional[str] = ..., backend: _Optional[str] = ..., backend_version: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., threads: _Optional[int] = ..., streams: _Optional[int] = ..., cpu: _Optional[_Union[CpuInfo, _Mapping]] = ..., choice: _Optional[str] = ..., fidelity: _Optional[_Union[Fidelity, _Mapping]] = ...) -> None: ...

class VariantInfo(_message.Message):
    __slots__ = ("variant", "backend", "precision", "fidelity")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    variant: str
    backend: str
    precision: str
    fidelity: Fidelity
    def __init__(self, variant: _Optional[str] = ..., backend: _Optional[str] = ..., precision: _Optional[str] = ..., fidelity: _Optional[_Union[Fidelity, _Mapping]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("model", "query", "documents", "top_n", "return_documents", "max_tokens_per_doc")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_DOC_FIELD_NUMBER: _ClassVar[int]
    model: str
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    max_tokens_per_doc: int
    def __init__(self, model: _Optional[str] = ..., query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., max_tokens_per_doc: _Optional[int] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "relevance_score", "document", "scores")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    index: int
    relevance_score: float
    document: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., relevance_score: _Optional[float] = ..., document: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "model", "usage")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    model: str
    usage: Usage
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class EmbedSparseRequest(_message.Message):
    __slots__ = ("model", "texts", "truncate", "input_type", "top_k", "return_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    truncate: Truncate
    input_type: str
    top_k: int
    return_tokens: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., truncate: _Optional[_Union[Truncate, str]] = ..., input_type: _Optional[str] = ..., top_k: _Optional[int] = ..., return_tokens: _Optional[bool] = ...) -> None: ...

class SparseEmbedding(_message.Message):
    __slots__ = ("index", "indices", "values", "tokens")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    index: int
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedSparseResponse(_message.Message):
    __slots__ = ("data", "model", "usage")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[SparseEmbedding]
    model: str
    usage: Usage
    def __init__(self, data: _Optional[_Iterable[_Union[SparseEmbedding, _Mapping]]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
