"""The transport contract every algorithm and node uses: one dispatch core, two carriers.

``ServiceRuntime`` (``server``) is the server half: it admits a call (size, concurrency cap),
parses it, checks its meta, the caller and the purpose, runs the handler, writes exactly one
audit record *before* the answer leaves (no record, no answer), and turns errors into a status
that names the node and the reason. ``PeerBase`` (``client``) is the client half: it
serialises, calls, records the call in the caller's audit log, and turns failures into
``PeerError`` naming the peer. What both share - statuses, ``CallFailed``, ``CallInfo``,
``new_meta`` - is ``calls``. The gRPC carrier (``grpc_transport``) and the in-process twin
(``inproc``) both plug into these, so a protocol tested without sockets runs unchanged across
processes.

This module is the one place callers import the contract from.
"""

from federation.transport.calls import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    FAILED_PRECONDITION,
    HEAD_METADATA_KEY,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    PERMISSION_DENIED,
    REFUSAL_METADATA_KEY,
    RESOURCE_EXHAUSTED,
    TRAFFIC,
    UNAVAILABLE,
    UNIMPLEMENTED,
    CallFailed,
    CallInfo,
    PeerRefused,
    SubjectAccess,
    Traffic,
    cap,
    check_blob_id,
    invalid,
    message_class,
    new_meta,
    prefix,
    rechunk,
    subject_of,
)
from federation.transport.client import PeerBase
from federation.transport.server import CallGate, PurposeChecker, Servicer, ServiceRuntime

__all__ = [
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "FAILED_PRECONDITION",
    "HEAD_METADATA_KEY",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "OK",
    "PERMISSION_DENIED",
    "REFUSAL_METADATA_KEY",
    "RESOURCE_EXHAUSTED",
    "TRAFFIC",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
    "CallFailed",
    "CallGate",
    "CallInfo",
    "PeerBase",
    "PeerRefused",
    "PurposeChecker",
    "ServiceRuntime",
    "Servicer",
    "SubjectAccess",
    "Traffic",
    "cap",
    "check_blob_id",
    "invalid",
    "message_class",
    "new_meta",
    "prefix",
    "rechunk",
    "subject_of",
]
