"""Sign-in, sign-out, the first-admin setup link, and the language switch."""

from __future__ import annotations

import math
import time

from fastapi import APIRouter, Response
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from fleet.console.app import (
    LANG_COOKIE,
    PRE_COOKIE,
    SESSION_COOKIE,
    AnyPage,
    ConsoleRoute,
    Page,
    is_https,
    safe_next,
)
from fleet.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from fleet.i18n import _, gettext, normalize, set_locale
from fleet.services import users

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


class SignInGuard:
    """Failed sign-ins per client address in a moving minute (in memory, per process), beside the per-account
    lockout in the database: one stops guessing many accounts from one place, the other one account."""

    def __init__(self, per_minute: int) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._item = RateLimitItemPerMinute(per_minute)

    def retry_after(self, source: str) -> int:
        if self._limiter.test(self._item, "signin", source):
            return 0
        reset_at = self._limiter.get_window_stats(self._item, "signin", source).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def failed(self, source: str) -> None:
        self._limiter.hit(self._item, "signin", source)


def _guard(page: Page) -> SignInGuard:
    """One guard per app (kept on the app's own state), so every request counts into the same window."""
    app_state = page.request.app.state
    guard = getattr(app_state, "console_signin_guard", None)
    if guard is None:
        guard = app_state.console_signin_guard = SignInGuard(
            page.state.settings.console.sign_in_failures_per_minute
        )
    return guard


def _start_session(page: Page, signed: users.SignedIn, to: str) -> Response:
    resp = page.redirect(to)
    resp.set_cookie(
        SESSION_COOKIE,
        signed.token,
        httponly=True,
        samesite="lax",
        secure=is_https(page.request, page.state),
        path="/",
        max_age=page.state.settings.console.session_max_hours * 3600,
    )
    resp.delete_cookie(PRE_COOKIE, path="/")
    return resp


@router.get("/signin")
async def signin_form(page: AnyPage, next: str = "/") -> Response:
    if page.cur is not None:
        return page.redirect(safe_next(next))
    return page.render("signin.html", next=safe_next(next), error=None, username="")


@router.post("/signin")
async def signin(page: AnyPage) -> Response:
    username = page.field("username")
    password = str(page.form.get("password") or "")
    to = safe_next(page.field("next"))
    source = page.request.client.host if page.request.client else "unknown"
    guard = _guard(page)
    wait = guard.retry_after(source)
    if wait:
        error = _("Too many failed sign-ins from this computer. Try again in {s} seconds.", s=wait)
        return page.render("signin.html", status=429, next=to, error=error, username=username)
    try:
        signed = await users.sign_in(
            page.db, page.state.settings.console, username=username, password=password, now=page.now
        )
    except Unauthenticated as err:
        guard.failed(source)
        # The failed-attempt count is kept (the unit of work commits: nothing was raised past here).
        return page.render("signin.html", status=401, next=to, error=gettext(err.message), username=username)
    return _start_session(page, signed, to)


@router.post("/signout")
async def signout(page: AnyPage) -> Response:
    if page.cur is not None:
        await users.sign_out(page.db, page.cur, page.now)
    resp = page.redirect("/signin")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/setup")
async def setup_form(page: AnyPage, token: str = "") -> Response:
    await users.check_setup_token(page.db, token, page.now)
    return page.render("setup.html", token=token, errors={}, username="")


@router.post("/setup")
async def setup(page: AnyPage) -> Response:
    token = page.field("token")
    username = page.field("username")
    password = str(page.form.get("password") or "")
    errors: dict[str, str] = {}
    if password != str(page.form.get("password2") or ""):
        errors["password2"] = _("The two passwords differ.")
    elif (reason := users.check_password_rules(password)) is not None:
        errors["password"] = gettext(reason)
    if not users.USERNAME_RE.match(username):
        errors["username"] = _("2 to 64 letters, digits or . _ @ -")
    if not errors:
        try:
            signed = await users.complete_setup(
                page.db,
                page.state.settings.console,
                token=token,
                username=username,
                password=password,
                now=page.now,
            )
        except (InvalidInput, Conflict) as err:
            errors["username"] = gettext(err.message)
        except NotFound:
            raise
        else:
            return _start_session(page, signed, "/")
    return page.render("setup.html", status=422, token=token, errors=errors, username=username)


@router.post("/language")
async def language(page: AnyPage) -> Response:
    loc = normalize(page.field("lang"))
    if page.cur is not None:
        await users.set_locale(page.db, page.cur.user, loc)
    set_locale(loc)
    resp = page.redirect(safe_next(page.field("next")))
    if loc:
        resp.set_cookie(LANG_COOKIE, loc, httponly=True, samesite="lax", path="/", max_age=365 * 86400)
    return resp
