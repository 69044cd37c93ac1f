from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PointsRequest(_message.Message):
    __slots__ = ("meta", "points0", "odds0", "pdo", "decimals")
    META_FIELD_NUMBER: _ClassVar[int]
    POINTS0_FIELD_NUMBER: _ClassVar[int]
    ODDS0_FIELD_NUMBER: _ClassVar[int]
    PDO_FIELD_NUMBER: _ClassVar[int]
    DECIMALS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    points0: float
    odds0: float
    pdo: float
    decimals: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., points0: _Optional[float] = ..., odds0: _Optional[float] = ..., pdo: _Optional[float] = ..., decimals: _Optional[int] = ...) -> None: ...

class PointsAck(_message.Message):
    __slots__ = ("n_features",)
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    def __init__(self, n_features: _Optional[int] = ...) -> None: ...

class ScorePointsRequest(_message.Message):
    __slots__ = ("meta", "rows", "alignment_id", "nonce", "by_category", "with_predictor")
    META_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    BY_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    WITH_PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    rows: _containers.RepeatedScalarFieldContainer[int]
    alignment_id: str
    nonce: bytes
    by_category: bool
    with_predictor: bool
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., rows: _Optional[_Iterable[int]] = ..., alignment_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., by_category: _Optional[bool] = ..., with_predictor: _Optional[bool] = ...) -> None: ...

class CategoryPoints(_message.Message):
    __slots__ = ("category", "max_points", "points")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    category: str
    max_points: float
    points: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, category: _Optional[str] = ..., max_points: _Optional[float] = ..., points: _Optional[_Iterable[float]] = ...) -> None: ...

class PointsReply(_message.Message):
    __slots__ = ("values", "scale_bits", "masked", "categories", "predictor")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    values: bytes
    scale_bits: int
    masked: bool
    categories: _containers.RepeatedCompositeFieldContainer[CategoryPoints]
    predictor: bytes
    def __init__(self, values: _Optional[bytes] = ..., scale_bits: _Optional[int] = ..., masked: _Optional[bool] = ..., categories: _Optional[_Iterable[_Union[CategoryPoints, _Mapping]]] = ..., predictor: _Optional[bytes] = ...) -> None: ...
