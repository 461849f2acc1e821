"""Rollouts: the list, one rollout's groups with live progress, and pause, resume, start and abort."""

from __future__ import annotations

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.domain.permissions import Permission
from fleet.domain.rollouts import RolloutStatus
from fleet.errors import IllegalTransition
from fleet.i18n import _
from fleet.services.common import MAX_PAGE_SIZE
from fleet.services.rollouts import RolloutService

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATES = [s.value for s in RolloutStatus]


@router.get("/rollouts")
async def rollouts(page: UserPage, state: str = "", cursor: str | None = None) -> Response:
    svc = RolloutService(page.db, page.principal, page.now)
    result = await svc.list(cursor=cursor, limit=MAX_PAGE_SIZE, state=state if state in STATES else None)
    return page.render("rollouts.html", nav="rollouts", result=result, state=state, states=STATES)


async def _detail(page: UserPage, rollout_id: int, template: str, error: str | None = None) -> Response:
    detail = await RolloutService(page.db, page.principal, page.now).get(rollout_id)
    return page.render(
        template,
        nav="rollouts",
        d=detail,
        r=detail.rollout,
        may_control=page.can(Permission.MANAGE_ROLLOUTS),
        error=error,
    )


@router.get("/rollouts/{rollout_id}")
async def rollout(page: UserPage, rollout_id: int) -> Response:
    return await _detail(page, rollout_id, "rollout.html")


@router.get("/rollouts/{rollout_id}/progress")
async def progress(page: UserPage, rollout_id: int) -> Response:
    """The groups table alone; the rollout page polls it while the rollout runs."""
    return await _detail(page, rollout_id, "rollout_progress.html")


@router.post("/rollouts/{rollout_id}/{action}")
async def control(page: UserPage, rollout_id: int, action: str) -> Response:
    svc = RolloutService(page.db, page.principal, page.now)
    try:
        if action == "pause":
            await svc.pause(rollout_id)
            page.state.metrics.rollout_paused("manual")
        elif action == "resume":
            await svc.resume(rollout_id)
        elif action == "start":
            await svc.start(rollout_id)
        elif action == "abort":
            engine = page.state.rollout_engine
            if engine is None:
                await svc.abort(rollout_id)
            else:
                await page.db.commit()  # the engine uses its own transaction
                await engine.abort(page.principal, rollout_id, page.now)
        else:
            return await _detail(page, rollout_id, "rollout.html", _("Unknown action."))
    except IllegalTransition:
        await page.rollback()
        return await _detail(
            page, rollout_id, "rollout.html", _("Not possible in the rollout's current state.")
        )
    return page.redirect(f"/rollouts/{rollout_id}")
