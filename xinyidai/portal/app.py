"""The portal's web application (Starlette, server-rendered Jinja2 pages, no JavaScript).

Who sees what:
- an **enterprise** acts only for the USCC of its session (set at sign-in; no page reads a USCC
  from the URL or a form): its authorisations (grant to an admitted bank, revoke), what each
  holder holds about it (fetched live through ``Subject.Report`` with a token for that holder),
  every access on record, its disputes (file, follow);
- an **auditor** sees each node's witnessed audit head, the platform's chain and feed status,
  the institutions and counts per bank - counts, never enterprise data;
- a bank's **operator** sees its admitted status and the enterprises that authorised it.

Every action (sign-in, sign-out, page with enterprise data, grant, revoke, dispute, refusal) is
one record in the platform's audit log. Blocking work (argon2, SQL, gRPC) runs in worker threads.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from federation.audit import AuditLog
from parties.authorisation import PlatformSigner
from parties.config import NodeConfig
from parties.disputes import DISPUTABLE_CATEGORIES
from parties.platform.accounts import AccountError, AccountStore, normalise_login
from parties.platform.events import FeedError
from parties.platform.feed import FeedStore
from parties.platform.register import authorisations_for_bank, authorisations_of
from parties.platform.stats import AccessStore, platform_statistics
from parties.platform.subject_client import HolderAnswer, SubjectClient
from parties.platform.tokens import session_hash
from xinyidai.portal.i18n import LANGS, label
from xinyidai.portal.security import RateLimiter, Session, SessionStore

__all__ = ["COOKIE", "PortalContext", "create_app"]

COOKIE = "xyd_session"
GRANT_CATEGORIES = ("tax", "electricity", "water", "gas")
MAX_FORM_BYTES = 16 * 1024
_TEMPLATES = Path(__file__).parent / "templates"
_CSS = (Path(__file__).parent / "static" / "portal.css").read_text(encoding="utf-8")
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request], Awaitable[Response]]
LINEAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}-lineage\.(html|md)")
"""A lineage report's file name (``xinyidai lineage`` writes ``<model>-v<version>-lineage.*``)."""
LINEAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""A served HTML report may style itself inline, nothing else (no script, no fetch, no image)."""
MAX_LINEAGE_BYTES = 32 << 20


@dataclass
class PortalContext:
    """What the portal works with, all owned by the platform node's process."""

    config: NodeConfig
    feed: FeedStore
    audit: AuditLog
    accounts: AccountStore
    subjects: SubjectClient
    signer: PlatformSigner
    sessions: SessionStore
    limiter: RateLimiter
    secure_cookies: bool = False
    oidc: Any = None  # the Authlib client when portal.auth.kind is oidc
    access: AccessStore | None = None  # what holders report of each bank's requests
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def cached(self, key: str, ttl_s: float, make: Callable[[], Any]) -> Any:
        """A value recomputed at most every ``ttl_s`` (chain verification on the audit page)."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl_s:
            return hit[1]
        value = make()
        self._cache[key] = (now, value)
        return value

    def record(
        self,
        operation: str,
        session: Session | None,
        *,
        subject: str = "",
        reason: str = "",
        decision: str = "allow",
        counts: dict[str, int] | None = None,
    ) -> None:
        """One record per portal action in the platform's audit log."""
        who = f"portal:{session.login}" if session is not None and session.login else "portal"
        self.audit.append(
            direction="local",
            peer=who[:255],
            operation=f"portal.{operation}",
            subject=subject[:64],
            decision=decision,
            reason=reason[:500],
            counts=counts or {},
        )


def _utc(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def create_app(ctx: PortalContext) -> Starlette:
    """The Starlette application of one platform node's portal."""
    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["utc"] = _utc

    # -- plumbing --------------------------------------------------------------------------------
    def session_of(request: Request) -> Session | None:
        return ctx.sessions.get(request.cookies.get(COOKIE))

    def finish(response: Response, session: Session | None) -> Response:
        for key, value in _HEADERS.items():
            response.headers[key] = value
        if session is not None:
            response.set_cookie(
                COOKIE,
                session.sid,
                httponly=True,
                samesite="lax",
                secure=ctx.secure_cookies,
                path="/",
                max_age=int(ctx.sessions.idle_s),
            )
        return response

    def lang_of(request: Request, session: Session | None) -> str:
        wanted = request.query_params.get("lang")
        if wanted in LANGS and session is not None:
            session.lang = wanted
        if wanted in LANGS:
            return str(wanted)
        return session.lang if session is not None else "zh"

    def page(
        request: Request,
        session: Session | None,
        template: str,
        http_status: int = 200,
        **values: Any,
    ) -> Response:
        lang = lang_of(request, session)
        flash = list(session.flash) if session is not None else []
        if session is not None:
            session.flash.clear()
        html = env.get_template(template).render(
            t=lambda key: label(key, lang),
            lang=lang,
            other_lang="en" if lang == "zh" else "zh",
            path=request.url.path,
            session=session,
            csrf=session.csrf if session is not None else "",
            flash=flash,
            **values,
        )
        return finish(HTMLResponse(html, status_code=http_status), session)

    def redirect(to: str, session: Session | None) -> Response:
        return finish(RedirectResponse(to, status_code=303), session)

    async def form_of(request: Request) -> dict[str, Any]:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_FORM_BYTES:
            return {}
        form = await request.form()
        out: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                out.setdefault(key, []).append(value)
        return {k: v if len(v) > 1 else v[0] for k, v in out.items()}

    def refuse(request: Request, session: Session | None, status: int, message: str) -> Response:
        return page(request, session, "error.html", http_status=status, message=message)

    def guarded(kind: str | None, *, post: bool = False) -> Callable[[Any], Handler]:
        """Wrap a handler: signed in (as ``kind``), and for a POST the session's CSRF token."""

        def wrap(fn: Any) -> Handler:
            async def handler(request: Request) -> Response:
                session = session_of(request)
                form: dict[str, Any] = {}
                if post:
                    form = await form_of(request)
                    token = form.get("csrf")
                    if session is None or not session.csrf_ok(
                        token if isinstance(token, str) else None
                    ):
                        await run_in_threadpool(
                            ctx.record,
                            "csrf",
                            session,
                            decision="deny",
                            reason=f"{request.url.path}: missing or wrong CSRF token",
                        )
                        return refuse(
                            request, session, 403, label("csrf", lang_of(request, session))
                        )
                if kind is not None and (session is None or session.kind != kind):
                    if session is not None and session.signed_in:
                        await run_in_threadpool(
                            ctx.record,
                            "refused",
                            session,
                            decision="deny",
                            reason=f"{request.url.path}: needs a {kind} account",
                        )
                        return refuse(request, session, 403, f"this page is for {kind} accounts")
                    return redirect("/login", session)
                return await fn(request, session, form)

            return handler

        return wrap

    # -- sign-in / sign-out ----------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        session = session_of(request)
        if session is not None and session.signed_in:
            return redirect(_home(session), session)
        if session is None:
            session = ctx.sessions.new(lang=lang_of(request, None))
        return page(request, session, "login.html", oidc=ctx.oidc is not None)

    async def login_post(request: Request) -> Response:
        session = session_of(request)
        form = await form_of(request)
        token = form.get("csrf")
        if session is None or not session.csrf_ok(token if isinstance(token, str) else None):
            await run_in_threadpool(
                ctx.record, "csrf", session, decision="deny", reason="/login: CSRF token"
            )
            return refuse(request, session, 403, label("csrf", lang_of(request, session)))
        if ctx.oidc is not None:
            return refuse(request, session, 400, "this portal signs in through OIDC")
        raw = form.get("login")
        password = form.get("password")
        raw = raw if isinstance(raw, str) else ""
        password = password if isinstance(password, str) else ""
        try:
            login = normalise_login(raw)
        except AccountError:
            login = raw.strip()[:64].lower()
        client = request.client.host if request.client is not None else "unknown"
        keys = (f"login:{login}", f"addr:{client}")
        wait = ctx.limiter.blocked(*keys)
        if wait > 0:
            await run_in_threadpool(
                ctx.record,
                "sign_in",
                None,
                decision="deny",
                reason=f"rate limited: {login[:64]} from {client} ({wait:.0f} s to wait)",
            )
            lang = lang_of(request, session)
            return page(
                request, session, "login.html", http_status=429, error=label("rate_limited", lang)
            )
        account = await run_in_threadpool(ctx.accounts.authenticate, login, password)
        if account is None:
            ctx.limiter.failed(*keys)
            await run_in_threadpool(
                ctx.record,
                "sign_in",
                None,
                decision="deny",
                reason=f"wrong login or password: {login[:64]} from {client}",
            )
            lang = lang_of(request, session)
            return page(
                request, session, "login.html", http_status=401, error=label("bad_login", lang)
            )
        ctx.limiter.succeeded(keys[0])
        fresh = ctx.sessions.rotate(session)  # the pre-sign-in id never becomes signed in
        fresh.login, fresh.kind = account.login, account.kind
        fresh.uscc = account.login if account.kind == "enterprise" else ""
        fresh.bank_id = account.bank_id
        await run_in_threadpool(
            ctx.record,
            "sign_in",
            fresh,
            subject=fresh.uscc,
            reason=f"{account.kind} signed in from {client}",
        )
        return redirect(_home(fresh), fresh)

    @guarded(None, post=True)
    async def logout(request: Request, session: Session | None, form: dict[str, Any]) -> Response:
        if session is not None:
            ctx.sessions.drop(session)
            if session.signed_in:
                await run_in_threadpool(ctx.record, "sign_out", session, subject=session.uscc)
        response = redirect("/login", None)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def home(request: Request) -> Response:
        session = session_of(request)
        if session is None or not session.signed_in:
            return redirect("/login", session)
        return redirect(_home(session), session)

    async def css(request: Request) -> Response:
        return Response(
            _CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
        )

    # -- enterprise ------------------------------------------------------------------------------
    def banks_admitted() -> list[str]:
        return [i.node_id for i in ctx.feed.institutions() if i.status == "admitted"]

    @guarded("enterprise")
    async def authorisations(request: Request, s: Session, form: dict[str, Any]) -> Response:
        auths = await run_in_threadpool(authorisations_of, ctx.feed, s.uscc)
        banks = await run_in_threadpool(banks_admitted)
        return page(
            request,
            s,
            "authorisations.html",
            auths=auths,
            banks=banks,
            categories=GRANT_CATEGORIES,
            now=time.time(),
        )

    @guarded("enterprise", post=True)
    async def grant(request: Request, s: Session, form: dict[str, Any]) -> Response:
        bank = form.get("bank")
        cats = form.get("categories", [])
        cats = [cats] if isinstance(cats, str) else list(cats)
        days_raw = form.get("days", "365")
        try:
            days = int(days_raw) if isinstance(days_raw, str) else 0
        except ValueError:
            days = 0
        problem = ""
        if not isinstance(bank, str) or bank not in await run_in_threadpool(banks_admitted):
            problem = "choose a bank the platform has admitted"
        elif not cats or any(c not in GRANT_CATEGORIES for c in cats):
            problem = f"choose data categories among {', '.join(GRANT_CATEGORIES)}"
        elif not 1 <= days <= 3650:
            problem = "validity must be 1 to 3650 days"
        if problem:
            await run_in_threadpool(
                ctx.record, "grant", s, subject=s.uscc, decision="deny", reason=problem
            )
            return refuse(request, s, 400, problem)

        def do() -> str:
            now = time.time()
            signed = ctx.signer.issue(
                uscc=s.uscc,  # the session's enterprise, never a form field
                bank_id=str(bank),
                purpose="financing",
                categories=cats,
                valid_from=now,
                valid_until=now + days * 86400,
            )
            events = ctx.feed.grant(signed)
            ctx.record(
                "grant",
                s,
                subject=s.uscc,
                reason=f"authorisation {signed.auth.auth_id} for bank {bank}",
                counts={"seq": events[0].seq if events else 0},
            )
            return signed.auth.auth_id

        auth_id = await run_in_threadpool(do)
        s.flash.append(f"{label('granted', s.lang)}: {auth_id}")
        return redirect("/me/authorisations", s)

    @guarded("enterprise", post=True)
    async def revoke(request: Request, s: Session, form: dict[str, Any]) -> Response:
        auth_id = form.get("auth_id")
        mine = {a.auth_id for a in await run_in_threadpool(authorisations_of, ctx.feed, s.uscc)}
        if not isinstance(auth_id, str) or auth_id not in mine:
            await run_in_threadpool(
                ctx.record,
                "revoke",
                s,
                subject=s.uscc,
                decision="deny",
                reason=f"authorisation {str(auth_id)[:40]!r} is not this enterprise's",
            )
            return refuse(request, s, 403, "not one of your authorisations")

        def do() -> str:
            try:
                event = ctx.feed.revoke(auth_id, reason="enterprise revoked it in the portal")
            except FeedError as exc:
                ctx.record("revoke", s, subject=s.uscc, decision="deny", reason=str(exc))
                return str(exc)
            ctx.record(
                "revoke",
                s,
                subject=s.uscc,
                reason=f"authorisation {auth_id}",
                counts={"seq": event.seq if event is not None else 0},
            )
            return ""

        problem = await run_in_threadpool(do)
        if problem:
            return refuse(request, s, 400, problem)
        s.flash.append(f"{label('revoked', s.lang)}: {auth_id}")
        return redirect("/me/authorisations", s)

    async def reports(s: Session, what: str) -> list[HolderAnswer]:
        answers: list[HolderAnswer] = await run_in_threadpool(
            ctx.subjects.reports, s.uscc, session_hash(s.sid)
        )
        await run_in_threadpool(
            ctx.record,
            what,
            s,
            subject=s.uscc,
            reason=", ".join(a.error for a in answers if not a.ok),
            counts={
                "holders": len(answers),
                "answered": sum(a.ok for a in answers),
            },
        )
        return answers

    @guarded("enterprise")
    async def held(request: Request, s: Session, form: dict[str, Any]) -> Response:
        answers = await reports(s, "report")
        return page(request, s, "held.html", answers=answers)

    @guarded("enterprise")
    async def access(request: Request, s: Session, form: dict[str, Any]) -> Response:
        answers = await reports(s, "access")
        rows: list[dict[str, Any]] = []
        uses: list[dict[str, Any]] = []
        for a in answers:
            if not a.ok:
                continue
            for item in a.value.get("accesses", []):
                if item.get("peer") == ctx.config.node_id:
                    continue  # the platform itself, asking on the enterprise's behalf
                rows.append({"holder": a.holder, **item})
            uses += [{"holder": a.holder, **u} for u in a.value.get("uses", [])]
        rows.sort(key=lambda r: -float(r.get("ts") or 0))
        errors = [a.error for a in answers if not a.ok]
        return page(request, s, "access.html", rows=rows, uses=uses, errors=errors)

    @guarded("enterprise")
    async def disputes(request: Request, s: Session, form: dict[str, Any]) -> Response:
        answers: list[HolderAnswer] = await run_in_threadpool(
            ctx.subjects.disputes, s.uscc, session_hash(s.sid)
        )
        await run_in_threadpool(
            ctx.record,
            "disputes",
            s,
            subject=s.uscc,
            reason=", ".join(a.error for a in answers if not a.ok),
            counts={"holders": len(answers), "answered": sum(a.ok for a in answers)},
        )
        return page(
            request,
            s,
            "disputes.html",
            answers=answers,
            holders=ctx.subjects.names,
            # what a dispute can name: the categories the answering holders hold
            categories=sorted({c for a in answers if a.ok for c in a.value.categories})
            or DISPUTABLE_CATEGORIES,
        )

    @guarded("enterprise", post=True)
    async def file_dispute(request: Request, s: Session, form: dict[str, Any]) -> Response:
        holder = form.get("holder")
        text = form.get("text")
        cats = form.get("categories", [])
        cats = [cats] if isinstance(cats, str) else list(cats)
        if not isinstance(holder, str) or not isinstance(text, str) or not text.strip():
            return refuse(request, s, 400, "choose a holder and say what you dispute")
        answer: HolderAnswer = await run_in_threadpool(
            lambda: ctx.subjects.file_dispute(
                holder, s.uscc, session_hash(s.sid), categories=cats, text=text[:2000]
            )
        )
        await run_in_threadpool(
            ctx.record,
            "dispute",
            s,
            subject=s.uscc,
            decision="allow" if answer.ok else "error",
            reason=(
                f"dispute {answer.value.dispute_id} at {holder}" if answer.ok else answer.error
            ),
        )
        if not answer.ok:
            return refuse(request, s, 502, answer.error)
        s.flash.append(f"{label('dispute_filed', s.lang)}: {answer.value.dispute_id}")
        return redirect("/me/disputes", s)

    # -- auditor and bank operator ---------------------------------------------------------------
    def own_status() -> dict[str, Any]:
        result = ctx.audit.verify()
        try:
            events, feed_ok = ctx.feed.verify(ctx.signer.public_key), ""
        except FeedError as exc:
            events, feed_ok = 0, str(exc)
        return {
            "audit_ok": result.ok,
            "audit_records": result.n_records,
            "feed_events": events,
            "feed_problem": feed_ok,
        }

    def statistics() -> Any:
        """Counts per bank and each peer's last witnessed head (``parties.platform.stats``)."""
        nodes = [p.node_id for p in ctx.config.peers]
        return platform_statistics(ctx.feed, ctx.audit, nodes=nodes, access=ctx.access)

    def lineage_reports() -> list[str]:
        """The report names in ``portal.lineage_dir``: regular files named like a report.
        Only a name in this list is ever served, so no path can reach another file."""
        folder = ctx.config.portal.lineage_dir if ctx.config.portal is not None else None
        if folder is None or not folder.is_dir():
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if LINEAGE_NAME.fullmatch(p.name) and not p.is_symlink() and p.is_file()
        )

    @guarded("auditor")
    async def lineage_file(request: Request, s: Session, form: dict[str, Any]) -> Response:
        name = str(request.path_params.get("name", ""))
        names = await run_in_threadpool(lineage_reports)
        folder = ctx.config.portal.lineage_dir if ctx.config.portal is not None else None
        if folder is None or name not in names:
            return refuse(request, s, 404, "no such lineage report")
        path = folder / name
        if path.stat().st_size > MAX_LINEAGE_BYTES:
            return refuse(request, s, 413, f"lineage report {name} is over 32 MiB")
        body = await run_in_threadpool(path.read_bytes)
        await run_in_threadpool(ctx.record, "lineage", s, reason=name)
        html = name.endswith(".html")
        response = finish(Response(body, media_type="text/html" if html else "text/markdown"), s)
        response.headers["Content-Type"] = (
            "text/html; charset=utf-8" if html else "text/markdown; charset=utf-8"
        )
        response.headers["Content-Security-Policy"] = LINEAGE_CSP
        return response

    @guarded("auditor")
    async def auditor(request: Request, s: Session, form: dict[str, Any]) -> Response:
        stats = await run_in_threadpool(statistics)
        reports = await run_in_threadpool(lineage_reports)
        status = await run_in_threadpool(ctx.cached, "own", 30.0, own_status)
        institutions = await run_in_threadpool(ctx.feed.institutions)
        roles = {p.node_id: p.role for p in ctx.config.peers}
        await run_in_threadpool(ctx.record, "auditor", s, counts={"nodes": len(stats.witnesses)})
        return page(
            request,
            s,
            "auditor.html",
            stats=stats,
            roles=roles,
            status=status,
            institutions=institutions,
            platform=ctx.config.node_id,
            lineage=reports,
            lineage_configured=ctx.config.portal is not None
            and ctx.config.portal.lineage_dir is not None,
        )

    @guarded("operator")
    async def bank_page(request: Request, s: Session, form: dict[str, Any]) -> Response:
        institutions = await run_in_threadpool(ctx.feed.institutions)
        mine = next((i for i in institutions if i.node_id == s.bank_id), None)
        auths = await run_in_threadpool(authorisations_for_bank, ctx.feed, s.bank_id)
        stats = await run_in_threadpool(statistics)
        counts = next((b for b in stats.banks if b.bank == s.bank_id), None)
        await run_in_threadpool(
            ctx.record, "bank", s, reason=f"bank {s.bank_id}", counts={"auths": len(auths)}
        )
        return page(
            request,
            s,
            "bank.html",
            institution=mine,
            auths=auths,
            counts=counts,
            now=time.time(),
        )

    routes = [
        Route("/", home),
        Route("/static/portal.css", css),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me/authorisations", authorisations, methods=["GET"]),
        Route("/me/grant", grant, methods=["POST"]),
        Route("/me/revoke", revoke, methods=["POST"]),
        Route("/me/held", held, methods=["GET"]),
        Route("/me/access", access, methods=["GET"]),
        Route("/me/disputes", disputes, methods=["GET"]),
        Route("/me/disputes", file_dispute, methods=["POST"]),
        Route("/auditor", auditor, methods=["GET"]),
        Route("/auditor/lineage/{name}", lineage_file, methods=["GET"]),
        Route("/bank", bank_page, methods=["GET"]),
    ]
    if ctx.oidc is not None:
        from xinyidai.portal.oidc import oidc_routes

        routes += oidc_routes(ctx, redirect, finish)
    app = Starlette(routes=routes)
    if ctx.oidc is not None:
        from xinyidai.portal.oidc import add_oidc_middleware

        add_oidc_middleware(app, ctx)
    return app


def _home(session: Session) -> str:
    return {"enterprise": "/me/authorisations", "auditor": "/auditor", "operator": "/bank"}.get(
        session.kind, "/login"
    )
