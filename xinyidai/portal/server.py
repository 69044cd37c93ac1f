"""The portal's HTTP server, in the platform node's process: uvicorn in a thread.

Why in the same process as the platform's gRPC service: the portal signs grants with the same
key and writes the same feed and audit log as the operators' commands, and a deployment of the
platform is one process to start, watch and stop. The portal listens on its own port
(``portal.address``), so its HTTP traffic never shares the nodes' mutual-TLS port.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.errors import ConfigError
from parties.authorisation import PlatformSigner
from parties.config import NodeConfig
from parties.platform.accounts import AccountStore
from parties.platform.subject_client import SubjectClient
from xinyidai.portal.app import PortalContext, create_app
from xinyidai.portal.security import RateLimiter, SessionStore

if TYPE_CHECKING:
    from parties.platform.service import PlatformNode

__all__ = ["PortalServer", "portal_context"]

log = logging.getLogger(__name__)
_ANY_OR_LOOPBACK = {"127.0.0.1", "::", "[::]", "0.0.0.0"}  # noqa: S104 - names, not a bind


def portal_context(config: NodeConfig, node: PlatformNode) -> PortalContext:
    """The portal's context over the platform node's feed (with its key) and audit log."""
    portal = config.portal
    if portal is None:
        raise ConfigError(f"platform '{config.node_id}': no portal configured")
    key = node.feed._key
    if key is None:
        raise ConfigError("the platform's feed was opened without its signing key")
    oidc = None
    if portal.auth.kind == "oidc":
        from xinyidai.portal.oidc import oidc_client

        oidc = oidc_client(portal.auth)
    return PortalContext(
        config=config,
        feed=node.feed,
        audit=node.audit,
        accounts=AccountStore.for_node_dir(config.node_dir),
        subjects=SubjectClient(config, key, timeout_s=portal.holder_timeout_s),
        signer=PlatformSigner(key),
        sessions=SessionStore(idle_s=portal.session_minutes * 60),
        limiter=RateLimiter(max_failures=portal.max_failures, window_s=portal.failure_window_s),
        secure_cookies=portal.cookies_secure,
        oidc=oidc,
        access=node.access,
    )


class PortalServer:
    """uvicorn serving the portal app on ``portal.address`` in a daemon thread."""

    def __init__(self, ctx: PortalContext):
        import uvicorn

        portal = ctx.config.portal
        if portal is None:
            raise ConfigError(f"platform '{ctx.config.node_id}': no portal configured")
        self.ctx = ctx
        host, _, port = portal.address.rpartition(":")
        try:
            self.port = int(port)
        except ValueError:
            raise ConfigError(f"portal.address {portal.address!r} is not HOST:PORT") from None
        self.host = host or "127.0.0.1"
        # Bind here, so a port in use fails the node's start with a clear message. IPPROTO_TCP
        # named: asyncio sets TCP_NODELAY only on sockets that say so, and without it a page's
        # body waits ~40 ms behind its headers for the client's delayed ACK (Nagle).
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
        )
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.host.strip("[]"), self.port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(f"portal.address {portal.address}: cannot listen: {exc}") from None
        self.port = self._socket.getsockname()[1]
        extra: dict[str, Any] = {}
        if portal.tls_cert is not None and portal.tls_key is not None:
            extra = {"ssl_certfile": str(portal.tls_cert), "ssl_keyfile": str(portal.tls_key)}
        self.scheme = "https" if extra else "http"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(ctx),
                log_level="warning",
                access_log=False,
                timeout_keep_alive=5,
                limit_concurrency=256,
                **extra,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "localhost" if self.host in _ANY_OR_LOOPBACK else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, name="portal", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the portal did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        log.info("portal serving on %s", self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.ctx.subjects.close()
        self.ctx.accounts.close()
        self._socket.close()


def write_portal_state(node_dir: Path, url: str) -> None:
    """``NODE_DIR/portal.url``: where the portal listens (the demo and tests read it)."""
    (node_dir / "portal.url").write_text(url + "\n")
