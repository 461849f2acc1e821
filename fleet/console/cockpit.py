"""The cockpit: every school now (online against expected, lesson period, uplink, alerts, ingest), live over
Server-Sent Events, and one school's day of peaks per lesson period as charts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from fleet.console.app import SESSION_COOKIE, ConsoleRoute, Page, UserPage
from fleet.errors import FleetError, Unauthenticated
from fleet.i18n import _, set_locale
from fleet.i18n import format as fmt
from fleet.observability.metrics import ingest_summary
from fleet.services import peaks, users
from fleet.services.console_live import PUSH_S, OnlineFeed

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
# A stream re-checks its session this often, so a signed-out or disabled user's stream ends within seconds.
RECHECK_S = 5.0
# A viewer's stream ends after this long; the browser's EventSource reconnects (and re-authenticates).
STREAM_MAX_S = 600.0


def feed_of(page: Page) -> OnlineFeed:
    # One feed per app (its in-memory cache is shared by every viewer), kept on the app's own state.
    app_state = page.request.app.state
    feed = getattr(app_state, "console_online_feed", None)
    if feed is None:
        feed = app_state.console_online_feed = OnlineFeed(page.state.sessions)
    return feed


async def _overview(page: Page, db: Any) -> peaks.LiveOverview:
    return await peaks.live_overview(
        db,
        page.principal,
        snapshot=page.state.snapshot.snapshot(),
        ingest=ingest_summary(page.state.metrics),
        now=page.now,
    )


def _figures(overview: peaks.LiveOverview, online: dict[int, int]) -> dict[str, Any]:
    schools: dict[str, Any] = {}
    total_online = total_expected = total_alerts = 0
    for s in overview.schools:
        n = online.get(s.id, 0)
        expected = s.expected_online if s.expected_online is not None else 0
        alerts = sum(s.alerts_open.values())
        total_online += n
        total_expected += expected
        total_alerts += alerts
        util = s.uplink_utilisation_pct or 0.0
        schools[str(s.id)] = {
            "online": fmt.number(n),
            "expected": fmt.number(expected),
            "in_service": fmt.number(s.in_service or 0),
            "period": s.current_period or _("No lesson now"),
            "lessons": fmt.number(s.lessons_in_progress or 0),
            "util": fmt.percent(util / 100.0),
            "util_pct": util,
            "rate": _(
                "{mbit} Mbit/s of {cap} Mbit/s",
                mbit=fmt.number(s.bytes_per_second * 8 / 1e6, digits=1),
                cap=fmt.number(s.uplink_mbps),
            ),
            "alerts": fmt.number(alerts),
        }
    ingest = overview.ingest
    return {
        "schools": schools,
        "total": {
            "online": fmt.number(total_online),
            "expected": fmt.number(total_expected),
            "alerts": fmt.number(total_alerts),
        },
        "ingest": {
            "state": (_("Connected") if ingest.broker_connected else _("Not connected")) if ingest else "—",
            "messages": fmt.number(sum(ingest.messages.values()), digits=0) if ingest else "—",
            "queue": fmt.number(ingest.queue_depth, digits=0) if ingest else "—",
            "lag": fmt.number(ingest.lag_seconds, digits=1) if ingest else "—",
        },
        "at": fmt.moment(overview.generated_at, None, fmt="medium"),
    }


def _peaks_charts(p: peaks.SchoolPeaks) -> tuple[str, str]:
    names = [x.name for x in p.periods]
    online = {
        "tooltip": {"trigger": "axis"},
        "legend": {"data": [_("Peak online"), _("Expected online"), _("Peak sessions")]},
        "xAxis": {"type": "category", "data": names},
        "yAxis": {"type": "value", "name": _("Devices")},
        "series": [
            {"name": _("Peak online"), "type": "bar", "data": [x.peak_online for x in p.periods]},
            {"name": _("Expected online"), "type": "line", "data": [x.expected_online for x in p.periods]},
            {"name": _("Peak sessions"), "type": "bar", "data": [x.peak_sessions for x in p.periods]},
        ],
        "grid": {"left": 50, "right": 20, "bottom": 40},
    }
    band = {
        "tooltip": {"trigger": "axis"},
        "legend": {"data": [_("Peak uplink use (%)")]},
        "xAxis": {"type": "category", "data": names},
        "yAxis": {"type": "value", "name": "%", "max": 100},
        "series": [
            {
                "name": _("Peak uplink use (%)"),
                "type": "bar",
                "data": [x.uplink_utilisation_pct for x in p.periods],
            }
        ],
        "grid": {"left": 50, "right": 20, "bottom": 40},
    }
    return json.dumps(online, ensure_ascii=False), json.dumps(band, ensure_ascii=False)


@router.get("/")
async def cockpit(page: UserPage, school: str | None = None) -> Response:
    overview = await _overview(page, page.db)
    online = await feed_of(page).get(page.principal)
    figures = _figures(overview, online)
    chosen = school or (str(overview.schools[0].id) if overview.schools else None)
    day = None
    charts: tuple[str, str] | None = None
    if chosen:
        try:
            day = await peaks.school_peaks(page.db, page.principal, chosen, None, page.now)
            charts = _peaks_charts(day)
        except FleetError:
            day = None
    return page.render(
        "cockpit.html",
        nav="cockpit",
        overview=overview,
        figures=figures,
        day=day,
        charts=charts,
        chosen=chosen,
    )


@router.get("/cockpit/stream")
async def stream(page: UserPage) -> Response:
    """The live figures as Server-Sent Events, one `update` a second."""
    principal = page.principal
    token = page.request.cookies.get(SESSION_COOKIE, "")
    locale = page.locale
    feed = feed_of(page)
    state = page.state
    loop = asyncio.get_running_loop()

    async def events() -> AsyncIterator[bytes]:
        set_locale(locale)
        started = last_check = loop.time()
        overview: peaks.LiveOverview | None = None
        overview_at = -1e9
        yield b"retry: 2000\n\n"
        while loop.time() - started < STREAM_MAX_S:
            now = loop.time()
            check = now - last_check >= RECHECK_S
            fresh = overview is None or now - overview_at >= RECHECK_S

            async def read(
                check: bool = check, fresh: bool = fresh
            ) -> tuple[bool, peaks.LiveOverview | None]:
                async with state.sessions() as db:
                    if check:
                        try:
                            await users.current(db, state.settings.console, token, state.clock.now())
                        except Unauthenticated:
                            return False, None
                    if not fresh:
                        return True, None
                    # Uplink, lessons and alerts move slowly (5-minute buckets): re-read every 5 s.
                    view = Page(page.request, state, db, page.cur, locale, page.csrf)
                    return True, await _overview(view, db)

            # Shielded: a viewer who leaves cancels the stream, never a database session half-closed.
            ok, fresh_view = await asyncio.shield(asyncio.ensure_future(read()))
            if not ok:
                yield b"event: signin\ndata: {}\n\n"
                return
            if check:
                last_check = now
            if fresh_view is not None:
                overview, overview_at = fresh_view, now
            assert overview is not None
            online = await feed.get(principal)
            data = json.dumps(_figures(overview, online), ensure_ascii=False)
            yield f"event: update\ndata: {data}\n\n".encode()
            await asyncio.sleep(PUSH_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
