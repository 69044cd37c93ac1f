from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubjectToken(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SubjectReportRequest(_message.Message):
    __slots__ = ("meta", "uscc", "token")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    token: SubjectToken
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., token: _Optional[_Union[SubjectToken, _Mapping]] = ...) -> None: ...

class SubjectReportReply(_message.Message):
    __slots__ = ("node_id", "report_json")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    report_json: bytes
    def __init__(self, node_id: _Optional[str] = ..., report_json: _Optional[bytes] = ...) -> None: ...

class FileDisputeRequest(_message.Message):
    __slots__ = ("meta", "uscc", "token", "categories", "text")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    token: SubjectToken
    categories: _containers.RepeatedScalarFieldContainer[str]
    text: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., token: _Optional[_Union[SubjectToken, _Mapping]] = ..., categories: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ...) -> None: ...

class Dispute(_message.Message):
    __slots__ = ("dispute_id", "categories", "reason", "raised_by", "raised_at", "status", "resolved_at", "resolved_by", "resolution_note")
    DISPUTE_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RAISED_BY_FIELD_NUMBER: _ClassVar[int]
    RAISED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BY_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_NOTE_FIELD_NUMBER: _ClassVar[int]
    dispute_id: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    raised_by: str
    raised_at: float
    status: str
    resolved_at: float
    resolved_by: str
    resolution_note: str
    def __init__(self, dispute_id: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., raised_by: _Optional[str] = ..., raised_at: _Optional[float] = ..., status: _Optional[str] = ..., resolved_at: _Optional[float] = ..., resolved_by: _Optional[str] = ..., resolution_note: _Optional[str] = ...) -> None: ...

class DisputesRequest(_message.Message):
    __slots__ = ("meta", "uscc", "token")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    token: SubjectToken
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., token: _Optional[_Union[SubjectToken, _Mapping]] = ...) -> None: ...

class DisputeList(_message.Message):
    __slots__ = ("node_id", "disputes", "categories")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPUTES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    disputes: _containers.RepeatedCompositeFieldContainer[Dispute]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., disputes: _Optional[_Iterable[_Union[Dispute, _Mapping]]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...
