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
    __slots__ = ("id", "aliases", "dimension", "max_input_tokens", "matryoshka_dimensions", "matryoshka_any", "matryoshka_trained", "int8_scales", "quality", "prompts", "input_types", "prompts_declared", "window_tokens", "window_overlap_tokens", "max_windows_per_text")
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
    prompts: _containers.ScalarMap[str, str]
    input_types: _containers.RepeatedScalarFieldContainer[str]
    prompts_declared: bool
    window_tokens: int
    window_overlap_tokens: int
    max_windows_per_text: int
    def __init__(self, id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., dimension: _Optional[int] = ..., max_input_tokens: _Optional[int] = ..., matryoshka_dimensions: _Optional[_Iterable[int]] = ..., matryoshka_any: _Optional[bool] = ..., matryoshka_trained: _Optional[bool] = ..., int8_scales: _Optional[_Iterable[_Union[Int8Scale, _Mapping]]] = ..., quality: _Optional[_Iterable[_Union[QualityFigure, _Mapping]]] = ..., prompts: _Optional[_Mapping[str, str]] = ..., input_types: _Optional[_Iterable[str]] = ..., prompts_declared: _Optional[bool] = ..., window_tokens: _Optional[int] = ..., window_overlap_tokens: _Optional[int] = ..., max_windows_per_text: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
