from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WoeStart(_message.Message):
    __slots__ = ("meta", "paillier_params", "n_rows", "max_bin", "min_bin_samples", "alignment_id", "rows")
    META_FIELD_NUMBER: _ClassVar[int]
    PAILLIER_PARAMS_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_BIN_FIELD_NUMBER: _ClassVar[int]
    MIN_BIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    paillier_params: bytes
    n_rows: int
    max_bin: int
    min_bin_samples: int
    alignment_id: str
    rows: bytes
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., paillier_params: _Optional[bytes] = ..., n_rows: _Optional[int] = ..., max_bin: _Optional[int] = ..., min_bin_samples: _Optional[int] = ..., alignment_id: _Optional[str] = ..., rows: _Optional[bytes] = ...) -> None: ...

class WoeFeatureInfo(_message.Message):
    __slots__ = ("feature", "name_hash", "n_bins", "categorical")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    NAME_HASH_FIELD_NUMBER: _ClassVar[int]
    N_BINS_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    feature: int
    name_hash: str
    n_bins: int
    categorical: bool
    def __init__(self, feature: _Optional[int] = ..., name_hash: _Optional[str] = ..., n_bins: _Optional[int] = ..., categorical: _Optional[bool] = ...) -> None: ...

class WoeStarted(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[WoeFeatureInfo]
    def __init__(self, features: _Optional[_Iterable[_Union[WoeFeatureInfo, _Mapping]]] = ...) -> None: ...

class WoeBinSumsRequest(_message.Message):
    __slots__ = ("meta", "blob_id", "n_ciphertexts")
    META_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    N_CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    blob_id: str
    n_ciphertexts: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., blob_id: _Optional[str] = ..., n_ciphertexts: _Optional[int] = ...) -> None: ...

class WoeFeatureCounts(_message.Message):
    __slots__ = ("feature", "counts")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    feature: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, feature: _Optional[int] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class WoeBinSums(_message.Message):
    __slots__ = ("features", "pack_slot_bits", "ciphertexts")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PACK_SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[WoeFeatureCounts]
    pack_slot_bits: int
    ciphertexts: bytes
    def __init__(self, features: _Optional[_Iterable[_Union[WoeFeatureCounts, _Mapping]]] = ..., pack_slot_bits: _Optional[int] = ..., ciphertexts: _Optional[bytes] = ...) -> None: ...

class WoeFeatureResult(_message.Message):
    __slots__ = ("feature", "bin_map", "woe", "iv")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    BIN_MAP_FIELD_NUMBER: _ClassVar[int]
    WOE_FIELD_NUMBER: _ClassVar[int]
    IV_FIELD_NUMBER: _ClassVar[int]
    feature: int
    bin_map: _containers.RepeatedScalarFieldContainer[int]
    woe: _containers.RepeatedScalarFieldContainer[float]
    iv: float
    def __init__(self, feature: _Optional[int] = ..., bin_map: _Optional[_Iterable[int]] = ..., woe: _Optional[_Iterable[float]] = ..., iv: _Optional[float] = ...) -> None: ...

class WoeFinish(_message.Message):
    __slots__ = ("meta", "abort", "features")
    META_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    abort: bool
    features: _containers.RepeatedCompositeFieldContainer[WoeFeatureResult]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., abort: _Optional[bool] = ..., features: _Optional[_Iterable[_Union[WoeFeatureResult, _Mapping]]] = ...) -> None: ...

class WoeFinished(_message.Message):
    __slots__ = ("n_features",)
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    def __init__(self, n_features: _Optional[int] = ...) -> None: ...
