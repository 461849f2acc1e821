"""Provisioning: claim tokens per school (create with uses and expiry, revoke) and enrollment progress."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.services import console_plane, enrollment

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


async def _page(page: UserPage, school: str, **extra: Any) -> Response:
    opts = await console_plane.choices(page.db, page.principal)
    chosen = (
        int(school)
        if school.isdigit() and len(school) <= 10
        else (opts["schools"][0].id if opts["schools"] else None)
    )
    tokens = await console_plane.list_claim_tokens(page.db, page.principal, chosen) if chosen else []
    return page.render(
        "provisioning.html",
        nav="provisioning",
        opts=opts,
        chosen=chosen,
        tokens=tokens,
        **({"errors": {}, "issued": None} | extra),
    )


@router.get("/provisioning")
async def provisioning(page: UserPage, school: str = "") -> Response:
    return await _page(page, school)


@router.post("/provisioning/{school_id}/claim-tokens")
async def create(page: UserPage, school_id: int) -> Response:
    errors: dict[str, str] = {}
    uses = page.field("max_uses", "1")
    days = page.field("days", "7")
    if not uses.isdigit() or not 1 <= int(uses) <= enrollment.MAX_TOKEN_USES:
        errors["max_uses"] = f"1 – {enrollment.MAX_TOKEN_USES}"
    max_days = int(enrollment.MAX_TOKEN_TTL.total_seconds() // 86400)
    if not days.isdigit() or not 1 <= int(days) <= max_days:
        errors["days"] = f"1 – {max_days}"
    if errors:
        return await _page(page, str(school_id), errors=errors)
    _row, token = await console_plane.create_claim_token(
        page.db,
        page.principal,
        school_id=school_id,
        max_uses=int(uses),
        ttl=timedelta(days=int(days)),
        allow_unknown=page.field("allow_unknown") == "on",
        label=page.field("label")[:120],
        now=page.now,
    )
    return await _page(page, str(school_id), issued=token)


@router.post("/provisioning/claim-tokens/{token_id}/revoke")
async def revoke(page: UserPage, token_id: int) -> Response:
    row = await console_plane.revoke_claim_token(page.db, page.principal, token_id, page.now)
    return page.redirect(f"/provisioning?school={row.school_id}")
