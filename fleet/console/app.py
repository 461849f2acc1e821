"""The console's frame: templates, the per-request page context, sign-in and CSRF checks, and error pages.

Every console route uses `ConsoleRoute`, so errors become pages in one place: a missing or expired session
sends the browser to sign-in (and back afterwards), NotFound and PermissionDenied render the 404 and 403
pages, anything unexpected the 500 page; no stack trace or raw JSON reaches a person. Every POST carries the
CSRF token (form field `csrf` or header `X-CSRF-Token`), checked in `page()` before any handler runs.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet import __version__
from fleet.api.deps import Session as DbSession
from fleet.api.deps import get_state
from fleet.domain.permissions import Permission, Principal
from fleet.errors import FleetError, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from fleet.i18n import _, current_locale, negotiate, set_locale, template_gettext
from fleet.i18n import format as fmt
from fleet.i18n.labels import audit_action, audit_details, audit_object, label
from fleet.runtime.state import FleetState
from fleet.services import users

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SESSION_COOKIE = "lf_session"
# Anonymous pages (sign-in, setup) use a double-submit token: this cookie, echoed in the form.
PRE_COOKIE = "lf_pre"
LANG_COOKIE = "lf_lang"


class SignInRequired(Exception):
    """No valid session: the browser is sent to sign-in, then back to `next`."""


class CsrfRejected(PermissionDenied):
    """A state-changing request without the page's CSRF token."""


def _ngettext(singular: str, plural: str, n: int) -> str:
    return template_gettext(singular if n == 1 else plural)


def build_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Whitespace in {% trans %} blocks is collapsed, as fleet.i18n.extract reads them (trimmed=true).
    env.policies["ext.i18n.trimmed"] = True
    # Jinja fills %(name)s fields itself after translating (newstyle gettext).
    env.install_gettext_callables(  # type: ignore[attr-defined]
        template_gettext, _ngettext, newstyle=True
    )
    env.globals.update(
        label=label,
        audit_action=audit_action,
        audit_details=audit_details,
        audit_object=audit_object,
        fmt=fmt,
        version=__version__,
        Permission=Permission,
        current_locale=current_locale,
    )
    return env


ENV = build_env()


def is_https(request: Request, state: FleetState) -> bool:
    if state.settings.console.force_secure_cookies or request.url.scheme == "https":
        return True
    return request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"


def safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or a scheme), so sign-in cannot redirect elsewhere."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@dataclass
class Page:
    """What a console handler needs: the request, the database, who is signed in, language and CSRF token."""

    request: Request
    state: FleetState
    db: AsyncSession
    cur: users.Current | None
    locale: str
    csrf: str
    set_pre_cookie: bool = False
    form: dict[str, Any] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        if self.cur is None:
            raise SignInRequired()
        return self.cur.principal

    @property
    def now(self) -> datetime:
        return self.state.clock.now()

    def can(self, permission: Permission) -> bool:
        return self.cur is not None and self.cur.principal.has(permission)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = ENV.get_template(template).render(page=self, request=self.request, **values)
        resp = HTMLResponse(html, status_code=status)
        self.finish(resp)
        return resp

    def redirect(self, to: str) -> Response:
        """After a POST: a 303 for plain forms, HX-Redirect for htmx requests."""
        if self.request.headers.get("hx-request"):
            resp: Response = Response(status_code=204, headers={"HX-Redirect": to})
        else:
            resp = RedirectResponse(to, status_code=303)
        self.finish(resp)
        return resp

    def finish(self, resp: Response) -> None:
        if self.set_pre_cookie:
            resp.set_cookie(
                PRE_COOKIE,
                self.csrf,
                httponly=True,
                samesite="lax",
                secure=is_https(self.request, self.state),
                path="/",
            )
        # Pages show scoped data: never cached by a shared proxy, never replayed from history after sign-out.
        resp.headers.setdefault("Cache-Control", "no-store")

    async def rollback(self) -> None:
        """Undo this request's writes (a dry run, a refused form) and reload who is signed in, which the
        rollback expired, so the page can still be rendered."""
        await self.db.rollback()
        token = self.request.cookies.get(SESSION_COOKIE)
        if self.cur is not None and token:
            self.cur = await users.current(self.db, self.state.settings.console, token[:200], self.now)

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name, default)
        return value.strip() if isinstance(value, str) else default


async def _load_page(request: Request, state: FleetState, db: AsyncSession, *, anonymous: bool) -> Page:
    cfg = state.settings.console
    cur: users.Current | None = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        try:
            cur = await users.current(db, cfg, token[:200], state.clock.now())
        except Unauthenticated:
            cur = None
    locale = negotiate(
        user=(cur.user.locale if cur else None) or request.cookies.get(LANG_COOKIE),
        accept_language=request.headers.get("accept-language"),
        default=state.settings.locale,
    )
    set_locale(locale)
    if cur is None and not anonymous:
        await db.commit()  # an idle session's end is written even though the request stops here
        raise SignInRequired()
    pre = request.cookies.get(PRE_COOKIE)
    page = Page(
        request=request,
        state=state,
        db=db,
        cur=cur,
        locale=locale,
        csrf=cur.row.csrf_token if cur else (pre or secrets.token_urlsafe(32)),
        set_pre_cookie=cur is None and not pre,
    )
    if request.method not in ("GET", "HEAD"):
        form = await request.form()
        page.form = {k: v for k, v in form.items()}
        given = request.headers.get("x-csrf-token") or page.field("csrf")
        expected = cur.row.csrf_token if cur else (pre or "")
        if not expected or not users.csrf_matches(expected, given):
            raise CsrfRejected("the form's security token is missing or stale; reload the page")
    return page


async def signed_in_page(
    request: Request, state: Annotated[FleetState, Depends(get_state)], db: DbSession
) -> Page:
    return await _load_page(request, state, db, anonymous=False)


async def any_page(request: Request, state: Annotated[FleetState, Depends(get_state)], db: DbSession) -> Page:
    return await _load_page(request, state, db, anonymous=True)


UserPage = Annotated[Page, Depends(signed_in_page)]
AnyPage = Annotated[Page, Depends(any_page)]


def _error_page(
    request: Request, status: int, title: str, detail: str, incident: str | None = None
) -> HTMLResponse:
    headers = {"Cache-Control": "no-store"}
    if incident:
        headers["X-Incident-Id"] = incident
    try:
        html = ENV.get_template("error.html").render(
            page=None, request=request, status=status, title=title, detail=detail, incident=incident
        )
    except Exception:  # the error page itself must never fail
        log.exception("error page did not render")
        html = f"<!doctype html><title>{status}</title><h1>{status}</h1>"
    return HTMLResponse(html, status_code=status, headers=headers)


def _return_to(request: Request) -> str:
    """Where the user was: the page itself, or for an htmx request (a fragment, a poll) the page that made
    it; after a plain POST, the page the form was on."""
    current = request.headers.get("hx-current-url")
    if request.headers.get("hx-request") and current:
        parts = urlsplit(current)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    if request.method != "GET":
        ref = urlsplit(request.headers.get("referer", ""))
        return ref.path + (f"?{ref.query}" if ref.query else "") if ref.path else "/"
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def error_response(request: Request, err: BaseException, status: int | None = None) -> Response:
    """The page for an error that reached the frame (one place for every console route); `status` overrides
    the error's usual one (a 405 shown as the 404 page)."""
    if isinstance(err, SignInRequired):
        to = "/signin?next=" + quote(safe_next(_return_to(request)), safe="")
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": to})
        return RedirectResponse(to, status_code=303)
    if isinstance(err, CsrfRejected):
        return _error_page(
            request, 403, _("Refused"), _("The form's security token is missing or stale. Reload the page.")
        )
    if isinstance(err, NotFound):
        return _error_page(
            request,
            status or 404,
            _("Not found"),
            _("There is nothing here, or it belongs to a school you do not see."),
        )
    if isinstance(err, PermissionDenied):
        return _error_page(request, 403, _("Not allowed"), _("Your role does not allow this."))
    if isinstance(err, FleetError):
        return _error_page(
            request,
            status or 400,
            _("Cannot do that"),
            _("The request was refused: {reason}", reason=err.message),
        )
    if isinstance(err, OperationalError):
        # SQLite's writer lock held past the busy timeout, or PostgreSQL gone: worth a retry, not a bug.
        log.warning("database unavailable for a console page: %s", type(err.orig).__name__)
        return _error_page(
            request, 503, _("Busy"), _("The database is busy or unavailable. Try again in a moment.")
        )
    # The same incident id as the API's 500 answers: the person quotes it, the log has the trace.
    incident = uuid.uuid4().hex[:16]
    log.error(
        "incident %s: console page failed: %s %s",
        incident,
        request.method,
        request.url.path,
        exc_info=err,
    )
    return _error_page(
        request,
        500,
        _("Something went wrong"),
        _("The error was logged. Try again shortly; if it happens again, quote the incident number."),
        incident=incident,
    )


class ConsoleRoute(APIRoute):
    """Console routes answer with pages, never JSON: every error is turned into a page here."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except (SignInRequired, FleetError) as err:
                return error_response(request, err)
            except Exception as err:  # noqa: BLE001 - the 500 page, logged with its trace
                from fastapi.exceptions import RequestValidationError

                if isinstance(err, RequestValidationError):
                    return _error_page(request, 404, _("Not found"), _("There is nothing here."))
                return error_response(request, err)

        return run


def invalid_fields(err: InvalidInput) -> dict[str, str]:
    """Field -> reason from a service's InvalidInput, for the form to show beside each field."""
    out: dict[str, str] = {}
    for d in err.details if isinstance(err.details, list) else []:
        if isinstance(d, dict) and d.get("field"):
            out[str(d["field"])] = str(d.get("reason", ""))
    return out


def api_not_found() -> JSONResponse:
    from fleet.api.errors import error_body

    return JSONResponse(error_body("not_found", "Not Found"), status_code=404)


def icon(name: str) -> Markup:  # pragma: no cover - tiny helper for templates
    return Markup(f'<span class="icon icon-{name}" aria-hidden="true"></span>')
