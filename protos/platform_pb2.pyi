from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedRequest(_message.Message):
    __slots__ = ("meta", "since_seq", "max_events", "wait_ms", "access", "access_from_seq", "access_upto_seq")
    META_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACCESS_UPTO_SEQ_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    since_seq: int
    max_events: int
    wait_ms: int
    access: _containers.RepeatedCompositeFieldContainer[AccessCount]
    access_from_seq: int
    access_upto_seq: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., since_seq: _Optional[int] = ..., max_events: _Optional[int] = ..., wait_ms: _Optional[int] = ..., access: _Optional[_Iterable[_Union[AccessCount, _Mapping]]] = ..., access_from_seq: _Optional[int] = ..., access_upto_seq: _Optional[int] = ...) -> None: ...

class AccessCount(_message.Message):
    __slots__ = ("bank", "operation", "decision", "records", "enterprises")
    BANK_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISES_FIELD_NUMBER: _ClassVar[int]
    bank: str
    operation: str
    decision: str
    records: int
    enterprises: int
    def __init__(self, bank: _Optional[str] = ..., operation: _Optional[str] = ..., decision: _Optional[str] = ..., records: _Optional[int] = ..., enterprises: _Optional[int] = ...) -> None: ...

class FeedEvent(_message.Message):
    __slots__ = ("seq", "kind", "body", "prev", "at", "hash", "signature", "body_sha256")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    BODY_SHA256_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    body: bytes
    prev: str
    at: float
    hash: str
    signature: bytes
    body_sha256: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., body: _Optional[bytes] = ..., prev: _Optional[str] = ..., at: _Optional[float] = ..., hash: _Optional[str] = ..., signature: _Optional[bytes] = ..., body_sha256: _Optional[str] = ...) -> None: ...

class FeedPage(_message.Message):
    __slots__ = ("events", "head_seq", "head_hash")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedEvent]
    head_seq: int
    head_hash: str
    def __init__(self, events: _Optional[_Iterable[_Union[FeedEvent, _Mapping]]] = ..., head_seq: _Optional[int] = ..., head_hash: _Optional[str] = ...) -> None: ...
