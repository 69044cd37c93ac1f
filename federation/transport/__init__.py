"""Transport: a small interface (``PeerBase``/``ServiceRuntime``) with a gRPC carrier and an in-process twin."""

from federation.transport.base import (
    CallFailed,
    CallInfo,
    PeerBase,
    PeerRefused,
    ServiceRuntime,
    new_meta,
)

__all__ = ["CallFailed", "CallInfo", "PeerBase", "PeerRefused", "ServiceRuntime", "new_meta"]
