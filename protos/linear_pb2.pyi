from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinearStart(_message.Message):
    __slots__ = ("meta", "backend", "public_key_blob", "n_rows", "alignment_id", "rows", "alpha", "standardize", "residual_scale_bits", "max_iter", "n_holders", "batch_size", "feature_view")
    META_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_BLOB_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZE_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITER_FIELD_NUMBER: _ClassVar[int]
    N_HOLDERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    backend: str
    public_key_blob: str
    n_rows: int
    alignment_id: str
    rows: bytes
    alpha: float
    standardize: bool
    residual_scale_bits: int
    max_iter: int
    n_holders: int
    batch_size: int
    feature_view: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., backend: _Optional[str] = ..., public_key_blob: _Optional[str] = ..., n_rows: _Optional[int] = ..., alignment_id: _Optional[str] = ..., rows: _Optional[bytes] = ..., alpha: _Optional[float] = ..., standardize: _Optional[bool] = ..., residual_scale_bits: _Optional[int] = ..., max_iter: _Optional[int] = ..., n_holders: _Optional[int] = ..., batch_size: _Optional[int] = ..., feature_view: _Optional[str] = ...) -> None: ...

class LinearStarted(_message.Message):
    __slots__ = ("n_features", "x25519_public_key")
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    x25519_public_key: bytes
    def __init__(self, n_features: _Optional[int] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

class LinearPeerKey(_message.Message):
    __slots__ = ("holder", "x25519_public_key")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    holder: str
    x25519_public_key: bytes
    def __init__(self, holder: _Optional[str] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

class LinearPeers(_message.Message):
    __slots__ = ("meta", "holders")
    META_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    holders: _containers.RepeatedCompositeFieldContainer[LinearPeerKey]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., holders: _Optional[_Iterable[_Union[LinearPeerKey, _Mapping]]] = ...) -> None: ...

class LinearPeersAck(_message.Message):
    __slots__ = ("n_pairs",)
    N_PAIRS_FIELD_NUMBER: _ClassVar[int]
    n_pairs: int
    def __init__(self, n_pairs: _Optional[int] = ...) -> None: ...

class LinearForward(_message.Message):
    __slots__ = ("meta", "tag", "rows", "n_rows")
    META_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    tag: str
    rows: bytes
    n_rows: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., tag: _Optional[str] = ..., rows: _Optional[bytes] = ..., n_rows: _Optional[int] = ...) -> None: ...

class LinearContribution(_message.Message):
    __slots__ = ("values", "scale_bits", "masked")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    values: bytes
    scale_bits: int
    masked: bool
    def __init__(self, values: _Optional[bytes] = ..., scale_bits: _Optional[int] = ..., masked: _Optional[bool] = ...) -> None: ...

class LinearGradient(_message.Message):
    __slots__ = ("meta", "epoch", "batch", "rows", "n_rows", "blob_id")
    META_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    epoch: int
    batch: int
    rows: bytes
    n_rows: int
    blob_id: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., epoch: _Optional[int] = ..., batch: _Optional[int] = ..., rows: _Optional[bytes] = ..., n_rows: _Optional[int] = ..., blob_id: _Optional[str] = ...) -> None: ...

class LinearMaskedGradient(_message.Message):
    __slots__ = ("masked", "blob_id", "n_values")
    MASKED_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    N_VALUES_FIELD_NUMBER: _ClassVar[int]
    masked: bytes
    blob_id: str
    n_values: int
    def __init__(self, masked: _Optional[bytes] = ..., blob_id: _Optional[str] = ..., n_values: _Optional[int] = ...) -> None: ...

class LinearUpdate(_message.Message):
    __slots__ = ("meta", "epoch", "batch", "decrypted", "learning_rate")
    META_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    DECRYPTED_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    epoch: int
    batch: int
    decrypted: bytes
    learning_rate: float
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., epoch: _Optional[int] = ..., batch: _Optional[int] = ..., decrypted: _Optional[bytes] = ..., learning_rate: _Optional[float] = ...) -> None: ...

class LinearUpdated(_message.Message):
    __slots__ = ("n_features",)
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    def __init__(self, n_features: _Optional[int] = ...) -> None: ...

class LinearFinish(_message.Message):
    __slots__ = ("meta", "abort", "keep_epoch")
    META_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    KEEP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    abort: bool
    keep_epoch: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., abort: _Optional[bool] = ..., keep_epoch: _Optional[int] = ...) -> None: ...

class LinearFinished(_message.Message):
    __slots__ = ("n_features", "epoch")
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    epoch: int
    def __init__(self, n_features: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class LinearPredictRequest(_message.Message):
    __slots__ = ("meta", "rows", "alignment_id", "nonce")
    META_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    rows: _containers.RepeatedScalarFieldContainer[int]
    alignment_id: str
    nonce: bytes
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., rows: _Optional[_Iterable[int]] = ..., alignment_id: _Optional[str] = ..., nonce: _Optional[bytes] = ...) -> None: ...
