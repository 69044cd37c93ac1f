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
