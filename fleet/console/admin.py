"""Administration: users (create, disable, enable), API tokens (create, list, revoke), the audit log with
filters. School timetables and update policies have their own modules (`timetables`, `update_policies`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage, invalid_fields
from fleet.console.choices import choices
from fleet.domain.enums import Role
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.i18n import _, gettext
from fleet.services import audit, tls, tokens, users
from fleet.services.common import MAX_PAGE_SIZE

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
ROLES = [r.value for r in Role]
# An API token's lifetime from the console: at most ten years, empty for one that does not expire.
MAX_TOKEN_DAYS = 3650


async def _users_page(page: UserPage, **extra: Any) -> Response:
    rows = await users.list_users(page.db, page.principal)
    toks = (await tokens.list_tokens(page.db, page.principal, cursor=None, limit=MAX_PAGE_SIZE)).items
    opts = await choices(page)
    return page.render(
        "admin.html",
        nav="admin",
        # Certificates this server serves with that expire within 30 days: renew before, not at the bell.
        cert_warnings=await tls.expiry_warnings(page.state.settings, page.now),
        users=rows,
        tokens=toks,
        roles=ROLES,
        opts=opts,
        sub="users",
        **({"errors": {}, "form": {}, "token_errors": {}, "token_form": {}, "issued": None} | extra),
    )


@router.get("/admin")
async def admin(page: UserPage) -> Response:
    return await _users_page(page)


@router.post("/admin/users")
async def create_user(page: UserPage) -> Response:
    form = {k: page.field(k) for k in ("username", "role", "school")}
    errors: dict[str, str] = {}
    password = str(page.form.get("password") or "")
    if form["role"] not in ROLES:
        errors["role"] = _("Choose a role.")
    if (reason := users.check_password_rules(password)) is not None:
        errors["password"] = gettext(reason)
    if not users.USERNAME_RE.match(form["username"]):
        errors["username"] = _("2 to 64 letters, digits or . _ @ -")
    school_ids = [int(form["school"])] if form["school"].isdigit() else []
    if not errors:
        try:
            await users.create_user(
                page.db,
                principal=page.principal,
                at=page.now,
                username=form["username"],
                password=password,
                role=Role(form["role"]),
                school_ids=[] if form["role"] == "admin" else school_ids,
                district_wide=form["role"] == "admin" or not school_ids,
            )
        except (InvalidInput, Conflict) as err:
            fields = invalid_fields(err) if isinstance(err, InvalidInput) else {"username": "taken"}
            errors["username" if "username" in fields else "school"] = (
                _("That username is taken.") if fields.get("username") == "taken" else gettext(err.message)
            )
    if errors:
        await page.rollback()
        return await _users_page(page, errors=errors, form=form)
    return page.redirect("/admin")


@router.post("/admin/users/{user_id}/{action}")
async def disable(page: UserPage, user_id: int, action: str) -> Response:
    if action not in ("disable", "enable"):
        raise NotFound(f"no action {action!r}")
    await users.set_disabled(page.db, page.principal, user_id, disabled=action == "disable", at=page.now)
    return page.redirect("/admin")


@router.post("/admin/tokens")
async def create_token(page: UserPage) -> Response:
    form = {k: page.field(k) for k in ("name", "role", "school", "days")}
    errors: dict[str, str] = {}
    if not 1 <= len(form["name"]) <= 120:
        errors["name"] = _("1 to 120 characters.")
    if form["role"] not in ROLES:
        errors["role"] = _("Choose a role.")
    days = form["days"]
    if days and not (days.isdigit() and 1 <= int(days) <= MAX_TOKEN_DAYS):
        errors["days"] = _("A whole number of days from 1 to {top}, or empty.", top=MAX_TOKEN_DAYS)
    school_ids = [int(form["school"])] if form["school"].isdigit() and len(form["school"]) <= 10 else []
    if not errors:
        try:
            _row, secret = await tokens.create_token(
                page.db,
                principal=page.principal,
                at=page.now,
                name=form["name"],
                role=Role(form["role"]),
                school_ids=[] if form["role"] == "admin" else school_ids,
                district_wide=form["role"] == "admin" or not school_ids,
                expires_at=page.now + timedelta(days=int(days)) if days else None,
            )
        except InvalidInput:
            errors["school"] = _("Choose a school you see, or district-wide.")
    if errors:
        await page.rollback()
        return await _users_page(page, token_errors=errors, token_form=form)
    return await _users_page(page, issued=secret)


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(page: UserPage, token_id: int) -> Response:
    await tokens.revoke_token(page.db, page.principal, token_id, page.now)
    return page.redirect("/admin")


@router.get("/admin/audit")
async def audit_log(
    page: UserPage, actor: str = "", action: str = "", object_type: str = "", cursor: str | None = None
) -> Response:
    result = await audit.list_entries(
        page.db,
        page.principal,
        cursor=cursor,
        limit=100,
        actor=actor[:120] or None,
        action=action[:64] or None,
        object_type=object_type[:64] or None,
        newest_first=True,
    )
    filters = {"actor": actor, "action": action, "object_type": object_type}
    return page.render("audit.html", nav="admin", sub="audit", result=result, filters=filters)
