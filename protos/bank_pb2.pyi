from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GreetRequest(_message.Message):
    __slots__ = ("meta",)
    META_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ...) -> None: ...

class PeerGreeting(_message.Message):
    __slots__ = ("node_id", "address", "ok", "error", "hello", "round_trip_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    ok: bool
    error: str
    hello: _common_pb2.HelloReply
    round_trip_ms: float
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., hello: _Optional[_Union[_common_pb2.HelloReply, _Mapping]] = ..., round_trip_ms: _Optional[float] = ...) -> None: ...

class GreetReply(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerGreeting]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerGreeting, _Mapping]]] = ...) -> None: ...
