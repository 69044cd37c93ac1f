from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorisationQuery(_message.Message):
    __slots__ = ("meta", "uscc", "categories")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class AuthorisationAnswer(_message.Message):
    __slots__ = ("auth_id", "has_data", "valid_until")
    AUTH_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_DATA_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    auth_id: str
    has_data: bool
    valid_until: int
    def __init__(self, auth_id: _Optional[str] = ..., has_data: _Optional[bool] = ..., valid_until: _Optional[int] = ...) -> None: ...

class PsiStartRequest(_message.Message):
    __slots__ = ("meta", "salt", "min_overlap")
    META_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    MIN_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    salt: bytes
    min_overlap: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., salt: _Optional[bytes] = ..., min_overlap: _Optional[int] = ...) -> None: ...

class PsiStarted(_message.Message):
    __slots__ = ("set_blob_id", "set_size")
    SET_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    set_blob_id: str
    set_size: int
    def __init__(self, set_blob_id: _Optional[str] = ..., set_size: _Optional[int] = ...) -> None: ...

class PsiBlindRequest(_message.Message):
    __slots__ = ("meta", "queries_blob_id")
    META_FIELD_NUMBER: _ClassVar[int]
    QUERIES_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    queries_blob_id: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., queries_blob_id: _Optional[str] = ...) -> None: ...

class PsiBlinded(_message.Message):
    __slots__ = ("answer_blob_id", "n_queries")
    ANSWER_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    N_QUERIES_FIELD_NUMBER: _ClassVar[int]
    answer_blob_id: str
    n_queries: int
    def __init__(self, answer_blob_id: _Optional[str] = ..., n_queries: _Optional[int] = ...) -> None: ...

class PsiAcceptRequest(_message.Message):
    __slots__ = ("meta", "positions_blob_id")
    META_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    positions_blob_id: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., positions_blob_id: _Optional[str] = ...) -> None: ...

class PsiAccepted(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class PsiAbortRequest(_message.Message):
    __slots__ = ("meta", "reason")
    META_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    reason: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class PsiAborted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScoreReachRequest(_message.Message):
    __slots__ = ("meta", "uscc", "usccs", "part_sha256", "auth_ids")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    USCCS_FIELD_NUMBER: _ClassVar[int]
    PART_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUTH_IDS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    usccs: _containers.RepeatedScalarFieldContainer[str]
    part_sha256: str
    auth_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., usccs: _Optional[_Iterable[str]] = ..., part_sha256: _Optional[str] = ..., auth_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreReachReply(_message.Message):
    __slots__ = ("statuses", "reach", "n_leaves", "categories", "part_sha256", "auth_ids")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    N_LEAVES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PART_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUTH_IDS_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[str]
    reach: bytes
    n_leaves: int
    categories: _containers.RepeatedScalarFieldContainer[str]
    part_sha256: str
    auth_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, statuses: _Optional[_Iterable[str]] = ..., reach: _Optional[bytes] = ..., n_leaves: _Optional[int] = ..., categories: _Optional[_Iterable[str]] = ..., part_sha256: _Optional[str] = ..., auth_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("meta", "uscc", "predicate_json")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_JSON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    predicate_json: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., predicate_json: _Optional[str] = ...) -> None: ...

class VerifyAnswer(_message.Message):
    __slots__ = ("answer", "categories")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    answer: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, answer: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class PrivateScoreSetupRequest(_message.Message):
    __slots__ = ("meta", "part_sha256", "ckks_context")
    META_FIELD_NUMBER: _ClassVar[int]
    PART_SHA256_FIELD_NUMBER: _ClassVar[int]
    CKKS_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    part_sha256: str
    ckks_context: bytes
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., part_sha256: _Optional[str] = ..., ckks_context: _Optional[bytes] = ...) -> None: ...

class PrivateScoreSetupReply(_message.Message):
    __slots__ = ("context_sha256", "x25519_public_key", "n_leaves")
    CONTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    N_LEAVES_FIELD_NUMBER: _ClassVar[int]
    context_sha256: str
    x25519_public_key: bytes
    n_leaves: int
    def __init__(self, context_sha256: _Optional[str] = ..., x25519_public_key: _Optional[bytes] = ..., n_leaves: _Optional[int] = ...) -> None: ...

class PrivateScoreRequest(_message.Message):
    __slots__ = ("meta", "uscc", "usccs", "part_sha256", "auth_ids", "context_sha256", "n_blocks", "payload", "previous_holder", "previous_public_key", "next_holder", "next_public_key")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    USCCS_FIELD_NUMBER: _ClassVar[int]
    PART_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUTH_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    N_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HOLDER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOLDER_FIELD_NUMBER: _ClassVar[int]
    NEXT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    usccs: _containers.RepeatedScalarFieldContainer[str]
    part_sha256: str
    auth_ids: _containers.RepeatedScalarFieldContainer[str]
    context_sha256: str
    n_blocks: int
    payload: bytes
    previous_holder: str
    previous_public_key: bytes
    next_holder: str
    next_public_key: bytes
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., usccs: _Optional[_Iterable[str]] = ..., part_sha256: _Optional[str] = ..., auth_ids: _Optional[_Iterable[str]] = ..., context_sha256: _Optional[str] = ..., n_blocks: _Optional[int] = ..., payload: _Optional[bytes] = ..., previous_holder: _Optional[str] = ..., previous_public_key: _Optional[bytes] = ..., next_holder: _Optional[str] = ..., next_public_key: _Optional[bytes] = ...) -> None: ...

class PrivateScoreReply(_message.Message):
    __slots__ = ("statuses", "auth_ids", "categories", "payload", "part_sha256")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    AUTH_IDS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PART_SHA256_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[str]
    auth_ids: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    payload: bytes
    part_sha256: str
    def __init__(self, statuses: _Optional[_Iterable[str]] = ..., auth_ids: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., payload: _Optional[bytes] = ..., part_sha256: _Optional[str] = ...) -> None: ...
