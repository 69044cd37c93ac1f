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

class ScoreRequest(_message.Message):
    __slots__ = ("meta", "uscc", "model_name", "model_ref", "auth_ids")
    META_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_REF_FIELD_NUMBER: _ClassVar[int]
    AUTH_IDS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    uscc: str
    model_name: str
    model_ref: str
    auth_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., uscc: _Optional[str] = ..., model_name: _Optional[str] = ..., model_ref: _Optional[str] = ..., auth_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreReason(_message.Message):
    __slots__ = ("source", "categories", "contribution")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    source: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    contribution: float
    def __init__(self, source: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., contribution: _Optional[float] = ...) -> None: ...

class SourceStatus(_message.Message):
    __slots__ = ("node_id", "status", "auth_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AUTH_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    status: str
    auth_id: str
    def __init__(self, node_id: _Optional[str] = ..., status: _Optional[str] = ..., auth_id: _Optional[str] = ...) -> None: ...

class ScoreReply(_message.Message):
    __slots__ = ("uscc", "model_name", "model_version", "scored", "probability_default", "points", "reason_categories", "reasons", "sources", "missing_sources", "model_family", "serving_mode")
    USCC_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REASON_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    MISSING_SOURCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    SERVING_MODE_FIELD_NUMBER: _ClassVar[int]
    uscc: str
    model_name: str
    model_version: str
    scored: bool
    probability_default: float
    points: float
    reason_categories: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedCompositeFieldContainer[ScoreReason]
    sources: _containers.RepeatedCompositeFieldContainer[SourceStatus]
    missing_sources: _containers.RepeatedScalarFieldContainer[str]
    model_family: str
    serving_mode: str
    def __init__(self, uscc: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., scored: _Optional[bool] = ..., probability_default: _Optional[float] = ..., points: _Optional[float] = ..., reason_categories: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[_Union[ScoreReason, _Mapping]]] = ..., sources: _Optional[_Iterable[_Union[SourceStatus, _Mapping]]] = ..., missing_sources: _Optional[_Iterable[str]] = ..., model_family: _Optional[str] = ..., serving_mode: _Optional[str] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("meta", "model_name", "model_ref", "region", "industry", "usccs", "threshold", "limit")
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_REF_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    INDUSTRY_FIELD_NUMBER: _ClassVar[int]
    USCCS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    model_name: str
    model_ref: str
    region: str
    industry: str
    usccs: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    limit: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., model_ref: _Optional[str] = ..., region: _Optional[str] = ..., industry: _Optional[str] = ..., usccs: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class ScoredEnterprise(_message.Message):
    __slots__ = ("uscc", "status", "probability_default", "points", "reason_categories", "tie")
    USCC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REASON_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    TIE_FIELD_NUMBER: _ClassVar[int]
    uscc: str
    status: str
    probability_default: float
    points: float
    reason_categories: _containers.RepeatedScalarFieldContainer[str]
    tie: bool
    def __init__(self, uscc: _Optional[str] = ..., status: _Optional[str] = ..., probability_default: _Optional[float] = ..., points: _Optional[float] = ..., reason_categories: _Optional[_Iterable[str]] = ..., tie: _Optional[bool] = ...) -> None: ...

class ScoreBatchReply(_message.Message):
    __slots__ = ("model_name", "model_version", "enterprises", "candidates", "scored", "excluded", "model_family", "serving_mode")
    class ExcludedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    SERVING_MODE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    enterprises: _containers.RepeatedCompositeFieldContainer[ScoredEnterprise]
    candidates: int
    scored: int
    excluded: _containers.ScalarMap[str, int]
    model_family: str
    serving_mode: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., enterprises: _Optional[_Iterable[_Union[ScoredEnterprise, _Mapping]]] = ..., candidates: _Optional[int] = ..., scored: _Optional[int] = ..., excluded: _Optional[_Mapping[str, int]] = ..., model_family: _Optional[str] = ..., serving_mode: _Optional[str] = ...) -> None: ...

class BankVerifyRequest(_message.Message):
    __slots__ = ("meta", "holder", "uscc", "predicate_json")
    META_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    PREDICATE_JSON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.RequestMeta
    holder: str
    uscc: str
    predicate_json: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.RequestMeta, _Mapping]] = ..., holder: _Optional[str] = ..., uscc: _Optional[str] = ..., predicate_json: _Optional[str] = ...) -> None: ...

class BankVerifyReply(_message.Message):
    __slots__ = ("holder", "answer")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    holder: str
    answer: str
    def __init__(self, holder: _Optional[str] = ..., answer: _Optional[str] = ...) -> None: ...
