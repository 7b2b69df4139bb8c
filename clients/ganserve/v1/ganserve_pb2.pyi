from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    RAW_UINT8: _ClassVar[Encoding]
    RAW_FLOAT32: _ClassVar[Encoding]
    PNG: _ClassVar[Encoding]
ENCODING_UNSPECIFIED: Encoding
RAW_UINT8: Encoding
RAW_FLOAT32: Encoding
PNG: Encoding

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageBatch(_message.Message):
    __slots__ = ("model", "version", "images", "png", "layout", "start_index", "labels")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: Tensor
    png: _containers.RepeatedScalarFieldContainer[bytes]
    layout: str
    start_index: int
    labels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ..., png: _Optional[_Iterable[bytes]] = ..., layout: _Optional[str] = ..., start_index: _Optional[int] = ..., labels: _Optional[_Iterable[int]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class VersionState(_message.Message):
    __slots__ = ("version", "state", "error")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[VersionState.State]
        READY: _ClassVar[VersionState.State]
        LOADING: _ClassVar[VersionState.State]
        FAILED: _ClassVar[VersionState.State]
        UNLOADED: _ClassVar[VersionState.State]
    STATE_UNSPECIFIED: VersionState.State
    READY: VersionState.State
    LOADING: VersionState.State
    FAILED: VersionState.State
    UNLOADED: VersionState.State
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: VersionState.State
    error: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[VersionState.State, str]] = ..., error: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "versions", "kind", "latent_size", "num_classes", "class_names", "height", "width", "channels", "size_multiple", "scale", "masked", "max_batch_size", "max_images_per_call", "execution_provider", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LATENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    versions: _containers.RepeatedCompositeFieldContainer[VersionState]
    kind: str
    latent_size: int
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    height: int
    width: int
    channels: int
    size_multiple: int
    scale: int
    masked: bool
    max_batch_size: int
    max_images_per_call: int
    execution_provider: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[VersionState, _Mapping]]] = ..., kind: _Optional[str] = ..., latent_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., size_multiple: _Optional[int] = ..., scale: _Optional[int] = ..., masked: bool = ..., max_batch_size: _Optional[int] = ..., max_images_per_call: _Optional[int] = ..., execution_provider: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "version", "count", "seed", "start_index", "latents", "truncation", "encoding", "chunk_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    count: int
    seed: int
    start_index: int
    latents: Tensor
    truncation: float
    encoding: Encoding
    chunk_size: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., start_index: _Optional[int] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., truncation: _Optional[float] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class LabelList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "version", "count", "seed", "start_index", "latents", "truncation", "encoding", "chunk_size", "labels", "label", "balanced")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    count: int
    seed: int
    start_index: int
    latents: Tensor
    truncation: float
    encoding: Encoding
    chunk_size: int
    labels: LabelList
    label: int
    balanced: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., start_index: _Optional[int] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., truncation: _Optional[float] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., chunk_size: _Optional[int] = ..., labels: _Optional[_Union[LabelList, _Mapping]] = ..., label: _Optional[int] = ..., balanced: bool = ...) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("seed", "index")
    SEED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    seed: int
    index: int
    def __init__(self, seed: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class LatentPoint(_message.Message):
    __slots__ = ("image", "latent")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    image: ImageRef
    latent: Tensor
    def __init__(self, image: _Optional[_Union[ImageRef, _Mapping]] = ..., latent: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("model", "version", "start", "end", "steps", "start_index", "method", "truncation", "encoding", "chunk_size", "label")
    class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        METHOD_UNSPECIFIED: _ClassVar[InterpolateRequest.Method]
        SPHERICAL: _ClassVar[InterpolateRequest.Method]
        LINEAR: _ClassVar[InterpolateRequest.Method]
    METHOD_UNSPECIFIED: InterpolateRequest.Method
    SPHERICAL: InterpolateRequest.Method
    LINEAR: InterpolateRequest.Method
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    start: LatentPoint
    end: LatentPoint
    steps: int
    start_index: int
    method: InterpolateRequest.Method
    truncation: float
    encoding: Encoding
    chunk_size: int
    label: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., start: _Optional[_Union[LatentPoint, _Mapping]] = ..., end: _Optional[_Union[LatentPoint, _Mapping]] = ..., steps: _Optional[int] = ..., start_index: _Optional[int] = ..., method: _Optional[_Union[InterpolateRequest.Method, str]] = ..., truncation: _Optional[float] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., chunk_size: _Optional[int] = ..., label: _Optional[int] = ...) -> None: ...

class TranslateRequest(_message.Message):
    __slots__ = ("model", "version", "images", "png", "encoding", "mask", "mask_png")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: Tensor
    png: _containers.RepeatedScalarFieldContainer[bytes]
    encoding: Encoding
    mask: Tensor
    mask_png: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ..., png: _Optional[_Iterable[bytes]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., mask: _Optional[_Union[Tensor, _Mapping]] = ..., mask_png: _Optional[_Iterable[bytes]] = ...) -> None: ...
