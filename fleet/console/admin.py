"""Administration: users (create, disable, enable), API tokens (list, revoke), the audit log with filters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage, invalid_fields
from fleet.domain.enums import Role
from fleet.errors import Conflict, InvalidInput
from fleet.i18n import _, gettext
from fleet.services import audit, console_plane, tokens, users
from fleet.services.common import MAX_PAGE_SIZE

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
ROLES = [r.value for r in Role]


async def _users_page(page: UserPage, **extra: Any) -> Response:
    rows = await users.list_users(page.db, page.principal)
    toks = (await tokens.list_tokens(page.db, page.principal, cursor=None, limit=MAX_PAGE_SIZE)).items
    opts = await console_plane.choices(page.db, page.principal)
    return page.render(
        "admin.html",
        nav="admin",
        users=rows,
        tokens=toks,
        roles=ROLES,
        opts=opts,
        **({"errors": {}, "form": {}} | extra),
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
    await users.set_disabled(page.db, page.principal, user_id, disabled=action == "disable", at=page.now)
    return page.redirect("/admin")


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
    )
    filters = {"actor": actor, "action": action, "object_type": object_type}
    return page.render("audit.html", nav="admin", result=result, filters=filters)
