from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestMeta(_message.Message):
    __slots__ = ("purpose", "job_id", "model_id", "request_id", "head")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    job_id: str
    model_id: str
    request_id: str
    head: str
    def __init__(self, purpose: _Optional[str] = ..., job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., request_id: _Optional[str] = ..., head: _Optional[str] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("blob_id", "meta", "total_size", "content_type", "offset", "data", "sha256")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    meta: RequestMeta
    total_size: int
    content_type: str
    offset: int
    data: bytes
    sha256: bytes
    def __init__(self, blob_id: _Optional[str] = ..., meta: _Optional[_Union[RequestMeta, _Mapping]] = ..., total_size: _Optional[int] = ..., content_type: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class BlobReceipt(_message.Message):
    __slots__ = ("blob_id", "size", "sha256")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    size: int
    sha256: bytes
    def __init__(self, blob_id: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class BlobRequest(_message.Message):
    __slots__ = ("meta", "blob_id")
    META_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    meta: RequestMeta
    blob_id: str
    def __init__(self, meta: _Optional[_Union[RequestMeta, _Mapping]] = ..., blob_id: _Optional[str] = ...) -> None: ...

class ColumnInfo(_message.Message):
    __slots__ = ("name_hash", "dtype", "category", "grade", "alias")
    NAME_HASH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name_hash: str
    dtype: str
    category: str
    grade: int
    alias: str
    def __init__(self, name_hash: _Optional[str] = ..., dtype: _Optional[str] = ..., category: _Optional[str] = ..., grade: _Optional[int] = ..., alias: _Optional[str] = ...) -> None: ...

class TableSummary(_message.Message):
    __slots__ = ("table", "n_rows", "columns", "schema_digest", "data_digest")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    table: str
    n_rows: int
    columns: _containers.RepeatedCompositeFieldContainer[ColumnInfo]
    schema_digest: str
    data_digest: str
    def __init__(self, table: _Optional[str] = ..., n_rows: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[ColumnInfo, _Mapping]]] = ..., schema_digest: _Optional[str] = ..., data_digest: _Optional[str] = ...) -> None: ...

class ConsentStats(_message.Message):
    __slots__ = ("active", "revoked", "expired", "enterprises", "auth_set_sha256", "auth_set_size")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISES_FIELD_NUMBER: _ClassVar[int]
    AUTH_SET_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUTH_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    active: int
    revoked: int
    expired: int
    enterprises: int
    auth_set_sha256: str
    auth_set_size: int
    def __init__(self, active: _Optional[int] = ..., revoked: _Optional[int] = ..., expired: _Optional[int] = ..., enterprises: _Optional[int] = ..., auth_set_sha256: _Optional[str] = ..., auth_set_size: _Optional[int] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("meta", "protocol_version", "alignment_id")
    META_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    meta: RequestMeta
    protocol_version: str
    alignment_id: str
    def __init__(self, meta: _Optional[_Union[RequestMeta, _Mapping]] = ..., protocol_version: _Optional[str] = ..., alignment_id: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("node_id", "role", "caller_id", "software_version", "protocol_version", "tables", "consent", "allowed_purposes", "categories")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PURPOSES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    caller_id: str
    software_version: str
    protocol_version: str
    tables: _containers.RepeatedCompositeFieldContainer[TableSummary]
    consent: ConsentStats
    allowed_purposes: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ..., caller_id: _Optional[str] = ..., software_version: _Optional[str] = ..., protocol_version: _Optional[str] = ..., tables: _Optional[_Iterable[_Union[TableSummary, _Mapping]]] = ..., consent: _Optional[_Union[ConsentStats, _Mapping]] = ..., allowed_purposes: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...
