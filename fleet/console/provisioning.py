"""Provisioning: per school, claim tokens (create with uses and expiry, revoke), enrollment progress, and the
lab edge agents with the kits they bridge (online, firmware)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.console.choices import choices
from fleet.errors import InvalidInput
from fleet.i18n import _
from fleet.services import claim_tokens, edge_agents, enrollment

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


async def _page(page: UserPage, school: str, **extra: Any) -> Response:
    opts = await choices(page, rooms=False, models=False)
    chosen = (
        int(school)
        if school.isdigit() and len(school) <= 10
        else (opts.schools[0].id if opts.schools else None)
    )
    tokens = await claim_tokens.list_for_school(page.db, page.principal, chosen) if chosen else []
    progress = await claim_tokens.progress(page.db, page.principal, chosen) if chosen else None
    agents = await edge_agents.list_agents(page.db, page.principal, school_id=chosen) if chosen else []
    return page.render(
        "provisioning.html",
        nav="provisioning",
        opts=opts,
        chosen=chosen,
        tokens=tokens,
        progress=progress,
        agents=agents,
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
        errors["max_uses"] = _("A whole number from 1 to {n}.", n=enrollment.MAX_TOKEN_USES)
    max_days = int(enrollment.MAX_TOKEN_TTL.total_seconds() // 86400)
    if not days.isdigit() or not 1 <= int(days) <= max_days:
        errors["days"] = _("A whole number from 1 to {n}.", n=max_days)
    if errors:
        return await _page(page, str(school_id), errors=errors)
    spec = claim_tokens.ClaimTokenSpec(
        max_uses=int(uses),
        ttl=timedelta(days=int(days)),
        allow_unknown=page.field("allow_unknown") == "on",
        label=page.field("label")[:120],
    )
    try:
        issued = await claim_tokens.create(page.db, page.principal, page.state.clock, school_id, spec)
    except InvalidInput as err:
        return await _page(page, str(school_id), errors=_refused(err, max_days))
    return await _page(page, str(school_id), issued=issued.token)


def _refused(err: InvalidInput, max_days: int) -> dict[str, str]:
    """The service's refusal as a reason beside the field, in the user's language (its message is English)."""
    field = err.details.get("field") if isinstance(err.details, dict) else None
    if field == "max_uses":
        return {"max_uses": _("A whole number from 1 to {n}.", n=enrollment.MAX_TOKEN_USES)}
    if field == "ttl":
        return {"days": _("A whole number from 1 to {n}.", n=max_days)}
    return {
        "school": _(
            "This school's code cannot be used in device topics (Latin letters, digits and . _ : - only). "
            "Ask an administrator to change the school's code."
        )
    }


@router.post("/provisioning/claim-tokens/{token_id}/revoke")
async def revoke(page: UserPage, token_id: int) -> Response:
    row = await claim_tokens.revoke(page.db, page.principal, page.state.clock, token_id)
    return page.redirect(f"/provisioning?school={row.school_id}")
