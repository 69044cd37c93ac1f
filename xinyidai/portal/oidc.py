"""Production sign-in: OpenID Connect with the province's identity service (Authlib).

Configured in the platform's ``node.yaml`` (``parties.config.PortalAuthConfig``)::

    portal:
      address: 0.0.0.0:8443
      tls_cert: portal.pem
      tls_key: portal.key
      auth: {kind: oidc, issuer: https://id.example.gov.cn, client_id: xinyidai-portal,
             client_secret_file: oidc_secret, uscc_claim: uscc}

Why Authlib's Starlette client: discovery, state, nonce and ID-token validation are done by a
well-kept library, not here. The enterprise's USCC comes only from the validated ID token's
``uscc_claim`` (check digit verified); the portal's own session (``xinyidai.portal.security``)
is then made exactly as after an embedded sign-in (a fresh id, rotated). Authlib keeps its
state and nonce in Starlette's signed-cookie session (``SessionMiddleware``, a random key per
process), separate from the portal's session cookie.

Not testable end to end here (no identity provider); ``tests/unit/test_portal_config.py``
checks the configuration and that the routes are built.
"""

from __future__ import annotations

import secrets
import stat
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from federation.errors import ConfigError
from parties.config import PortalAuthConfig
from parties.data import uscc as uscc_codes

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from xinyidai.portal.app import PortalContext

__all__ = ["add_oidc_middleware", "oidc_client", "oidc_routes"]


def _secret(auth: PortalAuthConfig) -> str:
    path = auth.client_secret_file
    if path is None or not path.is_file():
        raise ConfigError(f"portal.auth.client_secret_file {path}: not found")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(f"{path}: the OIDC client secret is readable by others; chmod 600 it")
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise ConfigError(f"{path}: empty OIDC client secret")
    return secret


def oidc_client(auth: PortalAuthConfig) -> Any:
    """The Authlib client for ``auth`` (no network until someone signs in)."""
    if auth.kind != "oidc":
        raise ConfigError("portal.auth.kind is not 'oidc'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Authlib's notice about its httpx module name
        from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register(
        name="province",
        client_id=auth.client_id,
        client_secret=_secret(auth),
        server_metadata_url=f"{str(auth.issuer).rstrip('/')}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid"},
    )
    return oauth.province


def add_oidc_middleware(app: Starlette, ctx: PortalContext) -> None:
    from starlette.middleware.sessions import SessionMiddleware

    app.add_middleware(
        SessionMiddleware,
        secret_key=secrets.token_urlsafe(32),
        session_cookie="xyd_oidc",
        same_site="lax",
        https_only=ctx.secure_cookies,
        max_age=600,
    )


def oidc_routes(
    ctx: PortalContext,
    redirect: Callable[[str, Any], Response],
    finish: Callable[[Response, Any], Response],
) -> list[Route]:
    """``/login/oidc`` (to the identity service) and ``/login/oidc/callback`` (back)."""
    from xinyidai.portal.app import COOKIE

    claim = ctx.config.portal.auth.uscc_claim if ctx.config.portal is not None else "uscc"

    async def start(request: Request) -> Response:
        target = str(request.url_for("oidc_callback"))
        response: Response = await ctx.oidc.authorize_redirect(request, target)
        return response

    async def callback(request: Request) -> Response:
        token = await ctx.oidc.authorize_access_token(request)
        info = token.get("userinfo") or {}
        code = uscc_codes.normalise(str(info.get(claim, "")))
        old = ctx.sessions.get(request.cookies.get(COOKIE)) or ctx.sessions.new()
        if uscc_codes.problem(code) is not None:
            ctx.record("sign_in", None, decision="deny", reason=f"OIDC: no valid '{claim}' claim")
            return redirect("/login", old)
        fresh = ctx.sessions.rotate(old)
        fresh.login, fresh.kind, fresh.uscc = code, "enterprise", code
        ctx.record("sign_in", fresh, subject=code, reason="enterprise signed in through OIDC")
        return redirect("/me/authorisations", fresh)

    return [
        Route("/login/oidc", start, methods=["GET"]),
        Route("/login/oidc/callback", callback, methods=["GET"], name="oidc_callback"),
    ]
