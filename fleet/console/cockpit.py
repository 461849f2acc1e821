"""The cockpit: every school now (online against expected, lesson period, uplink, alerts, ingest), live
over Server-Sent Events; drill-down school -> room -> device; a school's day of peaks per period as charts.

The live picture comes from one `LiveHub` per app, computed once per interval for every viewer; each stream
sends the frame of its scope and language, encoded once per picture and shared by every viewer with the
same scope and language."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from fleet.console.app import SESSION_COOKIE, ConsoleRoute, Page, UserPage
from fleet.errors import FleetError, Unauthenticated
from fleet.i18n import _, current_locale, set_locale
from fleet.i18n import format as fmt
from fleet.observability.metrics import ingest_summary
from fleet.services import peaks, users
from fleet.services.console_live import LiveHub, LiveNow, RoomNow, SchoolNow, room_detail, scope_key

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
# A stream re-checks its session this often, so a signed-out or disabled user's stream ends within seconds.
RECHECK_S = 5.0
# A viewer's stream ends after this long; the browser's EventSource reconnects (and re-authenticates).
STREAM_MAX_S = 600.0
# An unchanged picture is sent again this often, so the page's "updated at" and live dot keep moving.
HEARTBEAT_S = 5.0
# Encoded frames kept: one per (scope, language, school page) in use; more only with many distinct scopes.
FRAMES_MAX = 256


class Frames:
    """Encoded SSE frames per (scope, language, school), one per picture version: built once, sent to all."""

    def __init__(self) -> None:
        self._frames: dict[tuple[str, str, int | None], tuple[int, str, bytes]] = {}
        self.built = 0

    def get(self, key: tuple[str, str, int | None], version: int, build: Any) -> tuple[str, bytes]:
        hit = self._frames.get(key)
        if hit is not None and hit[0] == version:
            return hit[1], hit[2]
        figures = build()
        at = figures.pop("at")
        # The digest leaves out the time, so a stream can skip a picture that did not change.
        digest = hashlib.blake2b(json.dumps(figures, sort_keys=True).encode(), digest_size=16).hexdigest()
        figures["at"] = at
        data = f"event: update\ndata: {json.dumps(figures, ensure_ascii=False)}\n\n".encode()
        if len(self._frames) >= FRAMES_MAX and key not in self._frames:
            self._frames.pop(next(iter(self._frames)))
        self._frames[key] = (version, digest, data)
        self.built += 1
        return digest, data


def hub_of(page: Page) -> tuple[LiveHub, Frames]:
    # One hub and one frame cache per app (shared by every viewer), kept on the app's own state.
    app_state = page.request.app.state
    hub = getattr(app_state, "console_live_hub", None)
    if hub is None:
        hub = app_state.console_live_hub = LiveHub(page.state.sessions, page.state.clock)
        app_state.console_live_frames = Frames()
    frames: Frames = app_state.console_live_frames
    return hub, frames


@functools.lru_cache(maxsize=8192)
def _count(locale: str, n: int) -> str:
    # Counts repeat (0..a few hundred per school or room) in every picture: formatted once per language.
    return fmt.number(n, locale)


def _school_figures(s: SchoolNow) -> dict[str, Any]:
    locale = current_locale()
    return dict(
        _school_cached(
            locale,
            s.online,
            s.expected,
            s.enrolled,
            s.current_period,
            s.lessons_in_progress,
            s.bytes_per_second,
            s.uplink_mbps,
            s.uplink_utilisation_pct,
            sum(s.alerts_open.values()),
        )
    )


# A school's figures change only with its values: between two pictures most schools' do not.
@functools.lru_cache(maxsize=4096)
def _school_cached(
    locale: str,
    online: int,
    expected: int,
    enrolled: int,
    period: str | None,
    lessons: int,
    bytes_per_second: float,
    uplink_mbps: int,
    util: float,
    alerts: int,
) -> tuple[tuple[str, Any], ...]:
    return (
        ("online", _count(locale, online)),
        ("expected", _count(locale, expected)),
        ("enrolled", _count(locale, enrolled)),
        ("period", period or _("No lesson now")),
        ("lessons", _count(locale, lessons)),
        ("util", fmt.percent(util / 100.0)),
        ("util_pct", util),
        ("meter", min(util, 100.0)),
        (
            "rate",
            _(
                "{mbit} Mbit/s of {cap} Mbit/s",
                mbit=fmt.number(bytes_per_second * 8 / 1e6, digits=1),
                cap=_count(locale, uplink_mbps),
            ),
        ),
        ("alerts", _count(locale, alerts)),
    )


def _room_figures(r: RoomNow) -> dict[str, Any]:
    locale = current_locale()
    return {
        "online": _count(locale, r.online),
        "expected": _count(locale, r.expected),
        "placed": _count(locale, r.placed),
        "lesson": (r.period or _("Lesson")) if r.in_lesson else _("No lesson now"),
        "rate": _("{mbit} Mbit/s", mbit=fmt.number(r.bytes_per_second * 8 / 1e6, digits=1)),
    }


def _ingest_figures(page: Page, view: LiveNow) -> dict[str, Any]:
    """Ingest health: the newest message any ingest process stored (the database), and this process's own
    ingest when it runs one (with `labfleet ingest` workers it does not: "—")."""
    last = view.last_message_at
    age = (view.generated_at - last).total_seconds() if last else None
    plane = page.state.plane
    here = ingest_summary(page.state.metrics) if plane is not None and plane.ingest is not None else None
    return {
        "last": fmt.moment(last, None, fmt="medium") if last else "—",
        "age": _("{s} s ago", s=fmt.number(max(0.0, age), digits=0)) if age is not None else "—",
        "state": (_("Connected") if here.broker_connected else _("Not connected")) if here else "—",
        "messages": fmt.number(sum(here.messages.values()), digits=0) if here else "—",
        "queue": fmt.number(here.queue_depth, digits=0) if here else "—",
        "lag": fmt.number(here.lag_seconds, digits=1) if here else "—",
    }


def _figures(page: Page, view: LiveNow, school_id: int | None = None) -> dict[str, Any]:
    schools = {str(s.id): _school_figures(s) for s in view.schools}
    out: dict[str, Any] = {
        "schools": schools,
        "total": {
            "online": fmt.number(sum(s.online for s in view.schools)),
            "expected": fmt.number(sum(s.expected for s in view.schools)),
            "alerts": fmt.number(sum(sum(s.alerts_open.values()) for s in view.schools)),
        },
        "ingest": _ingest_figures(page, view),
        "at": fmt.moment(view.generated_at, None, fmt="medium"),
    }
    if school_id is not None:
        out["rooms"] = {str(r.id): _room_figures(r) for r in view.rooms_of(school_id)}
    return out


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
    hub, _frames = hub_of(page)
    view = await hub.now(page.principal)
    figures = _figures(page, view)
    chosen = school or (str(view.schools[0].id) if view.schools else None)
    day = None
    charts: tuple[str, str] | None = None
    if chosen:
        try:
            day = await peaks.school_peaks(page.db, page.principal, chosen, None, page.now)
            charts = _peaks_charts(day)
        except FleetError:
            day = None
    return page.render(
        "cockpit.html", nav="cockpit", view=view, figures=figures, day=day, charts=charts, chosen=chosen
    )


@router.get("/cockpit/schools/{school_id}")
async def school_page(page: UserPage, school_id: int) -> Response:
    """One school now: its rooms (online against expected, lesson, uplink), each linking to its devices."""
    hub, _frames = hub_of(page)
    view, school = await hub.school(page.principal, school_id)
    figures = _figures(page, view, school_id)
    return page.render(
        "cockpit_school.html",
        nav="cockpit",
        school=school,
        rooms=view.rooms_of(school_id),
        figures=figures,
        f=figures["schools"][str(school_id)],
    )


@router.get("/cockpit/rooms/{room_id}")
async def room_page(page: UserPage, room_id: int) -> Response:
    """One room now and its devices, each linking to the device page."""
    hub, _frames = hub_of(page)
    detail = await room_detail(hub, page.db, page.principal, room_id)
    return page.render(
        "cockpit_room.html",
        nav="cockpit",
        room=detail.room,
        school=detail.school,
        devices=detail.devices,
        r=_room_figures(detail.room),
    )


@router.get("/cockpit/stream")
async def stream(page: UserPage, school: int | None = None) -> Response:
    """The live figures as Server-Sent Events: a new picture within a second of it changing (with `school`,
    that school's rooms too)."""
    principal = page.principal
    hub, frames = hub_of(page)
    if school is not None:
        await hub.school(principal, school)  # another school's: the 404 page, before the stream starts
    token = page.request.cookies.get(SESSION_COOKIE, "")
    locale = page.locale
    state = page.state
    loop = asyncio.get_running_loop()
    key = (scope_key(principal), locale, school)

    async def signed_in() -> bool:
        async with state.sessions() as db:
            try:
                await users.current(db, state.settings.console, token, state.clock.now())
            except Unauthenticated:
                return False
            return True

    async def events() -> AsyncIterator[bytes]:
        set_locale(locale)
        started = last_check = last_sent = loop.time()
        sent: str | None = None
        version = -1
        yield b"retry: 2000\n\n"
        while loop.time() - started < STREAM_MAX_S:
            now = loop.time()
            if now - last_check >= RECHECK_S:
                # Shielded: a viewer who leaves cancels the stream, never a database session half-closed.
                if not await asyncio.shield(asyncio.ensure_future(signed_in())):
                    yield b"event: signin\ndata: {}\n\n"
                    return
                last_check = now
            view = await hub.next(principal, version)
            version = view.version
            digest, data = frames.get(key, version, lambda v=view: _figures(page, v, school))
            if digest != sent or loop.time() - last_sent >= HEARTBEAT_S:
                sent, last_sent = digest, loop.time()
                yield data

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
