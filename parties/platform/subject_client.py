"""The platform's side of ``xinyidai.v1.Subject``: ask every holder on a signed-in enterprise's
behalf, each with a fresh token for that holder, concurrently, each call bounded by a short
deadline.

Why a short deadline and answers per holder: a person is waiting for the page. A holder that
is down or slow must cost the page at most ``timeout_s`` and be named ("holder 'tax' did not
answer"), while every other holder's answer still shows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.errors import PeerError
from federation.transport.calls import new_meta
from federation.transport.grpc_transport import GrpcPeer, TlsIdentity
from parties.config import NodeConfig
from parties.holder.subject_service import SUBJECT_PURPOSE, SUBJECT_SERVICE
from parties.platform.tokens import issue_subject_token
from protos import subject_pb2

__all__ = ["HolderAnswer", "SubjectClient"]


@dataclass(frozen=True)
class HolderAnswer:
    """One holder's answer (``value``), or why there is none (``error``, for the page)."""

    holder: str
    value: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _explain(holder: str, exc: PeerError) -> str:
    if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return f"holder '{holder}' did not answer"
    return f"holder '{holder}' refused: {exc.detail[:200]}"


class SubjectClient:
    """Clients of every holder the platform's ``peers`` list with an address, as the platform
    (its certificate), signing one token per call with the platform's key."""

    def __init__(
        self, config: NodeConfig, signing_key: Ed25519PrivateKey, *, timeout_s: float = 3.0
    ):
        self.config = config
        self.key = signing_key
        self.timeout_s = timeout_s
        self.holders = [p for p in config.peers if p.role == "holder" and p.address]
        self._peers: dict[str, GrpcPeer] = {}
        self._lock = threading.Lock()
        # Waiting on holders is I/O: enough threads that concurrent pages do not queue here
        # (20 sessions x 2 holders are 40 calls in flight).
        self._pool = ThreadPoolExecutor(
            max_workers=max(4, min(64, 16 * len(self.holders))), thread_name_prefix="subject"
        )

    @property
    def names(self) -> list[str]:
        return [p.node_id for p in self.holders]

    def _peer(self, holder: str) -> GrpcPeer:
        with self._lock:
            peer = self._peers.get(holder)
            if peer is None:
                link = next(p for p in self.holders if p.node_id == holder)
                tls = self.config.tls
                peer = GrpcPeer(
                    node_id=holder,
                    address=link.address,
                    identity=TlsIdentity.from_files(tls.ca, tls.cert, tls.key),
                    max_message_bytes=self.config.limits.max_message_mb << 20,
                    service=SUBJECT_SERVICE,
                    self_id=self.config.node_id,
                    audit=None,  # the portal writes one record per action, naming the holders
                    deadline_s=self.timeout_s,
                )
                self._peers[holder] = peer
            return peer

    def _token(self, holder: str, uscc: str, session: str) -> subject_pb2.SubjectToken:
        token = issue_subject_token(self.key, uscc=uscc, session=session, holder=holder)
        return subject_pb2.SubjectToken(body=token.body, signature=token.signature)

    def _ask(self, holder: str, fn: Callable[[GrpcPeer], Any]) -> HolderAnswer:
        try:
            return HolderAnswer(holder, value=fn(self._peer(holder)))
        except PeerError as exc:
            return HolderAnswer(holder, error=_explain(holder, exc))

    def _each(
        self, holders: Sequence[str] | None, fn: Callable[[str], HolderAnswer]
    ) -> list[HolderAnswer]:
        chosen = self.names if holders is None else [h for h in self.names if h in holders]
        return list(self._pool.map(fn, chosen))

    # -- the three RPCs --------------------------------------------------------------------------
    def reports(
        self, uscc: str, session: str, holders: Sequence[str] | None = None
    ) -> list[HolderAnswer]:
        """Each holder's report (a dict, ``xinyidai.subject-report/1``) or why not."""

        def one(holder: str) -> HolderAnswer:
            def call(peer: GrpcPeer) -> Any:
                reply = peer.call(
                    "Report",
                    subject_pb2.SubjectReportRequest(
                        meta=new_meta(SUBJECT_PURPOSE),
                        uscc=uscc,
                        token=self._token(holder, uscc, session),
                    ),
                )
                return json.loads(bytes(reply.report_json).decode("utf-8"))

            return self._ask(holder, call)

        return self._each(holders, one)

    def disputes(
        self, uscc: str, session: str, holders: Sequence[str] | None = None
    ) -> list[HolderAnswer]:
        """Each holder's ``DisputeList`` for the enterprise, or why not."""

        def one(holder: str) -> HolderAnswer:
            return self._ask(
                holder,
                lambda peer: peer.call(
                    "Disputes",
                    subject_pb2.DisputesRequest(
                        meta=new_meta(SUBJECT_PURPOSE),
                        uscc=uscc,
                        token=self._token(holder, uscc, session),
                    ),
                ),
            )

        return self._each(holders, one)

    def file_dispute(
        self, holder: str, uscc: str, session: str, *, categories: Sequence[str], text: str
    ) -> HolderAnswer:
        """File a dispute at one holder; the stored ``Dispute``, or why not."""
        if holder not in self.names:
            return HolderAnswer(holder, error=f"'{holder[:63]}' is not a holder of this platform")
        return self._ask(
            holder,
            lambda peer: peer.call(
                "FileDispute",
                subject_pb2.FileDisputeRequest(
                    meta=new_meta(SUBJECT_PURPOSE),
                    uscc=uscc,
                    token=self._token(holder, uscc, session),
                    categories=list(categories),
                    text=text,
                ),
            ),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for peer in self._peers.values():
                peer.close()
            self._peers.clear()
