"""`labfleet top`: the live district picture in a terminal, for sites without Grafana.

It reads the service's HTTP API with a token (`GET /api/v1/stats/live`, and `GET /api/v1/stats/peaks` for
`--school`), so it works from any machine that can reach the service, and shows only the token's schools.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

# 5 s between refreshes: the service rebuilds its fleet snapshot every 15 s and its byte rate is a 5-minute
# roll-up, so faster polling only adds load.
DEFAULT_INTERVAL_S = 5.0
# One API call should answer in milliseconds; 10 s means the service is in trouble, and the frame says so.
HTTP_TIMEOUT_S = 10.0
# Above these utilisation and online shares a cell turns yellow / red (the alert rules use 80% and 95%).
WARN_UTIL_PCT, CRIT_UTIL_PCT = 60.0, 80.0
WARN_ONLINE_PCT, CRIT_ONLINE_PCT = 98.0, 95.0
SORTS = ("utilisation", "online", "code")
# A service clock further than this from the real one is a simulated clock (a real one is NTP-close).
CLOCK_SKEW_S = 60.0


class TopError(Exception):
    """The service could not be read (unreachable, token refused, bad answer)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One read of the ingest counters, to turn totals into a rate on the next frame."""

    at: float  # monotonic seconds
    messages: float
    dead_letters: float


def _mbit(bytes_per_second: float) -> str:
    return f"{bytes_per_second * 8 / 1e6:.2f}"


def _pct_style(value: float | None, warn: float, crit: float, *, high_is_bad: bool = True) -> str:
    if value is None:
        return "dim"
    bad = value >= crit if high_is_bad else value < crit
    worse = value >= warn if high_is_bad else value < warn
    return "bold red" if bad else "yellow" if worse else "green"


def _online_pct(s: dict[str, Any]) -> float | None:
    online, expected = s.get("online"), s.get("expected_online")
    if online is None or not expected:
        return None
    # Devices online that were expected: expected minus the unexpectedly offline ones.
    return (expected - (s.get("unexpectedly_offline") or 0)) / expected * 100


def _sorted(schools: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort == "code":
        return sorted(schools, key=lambda s: s["code"])
    if sort == "online":
        return sorted(
            schools, key=lambda s: (_online_pct(s) if _online_pct(s) is not None else 101.0, s["code"])
        )
    return sorted(schools, key=lambda s: (-(s.get("uplink_utilisation_pct") or 0.0), s["code"]))


def school_table(live: dict[str, Any], sort: str = "utilisation") -> Table:
    """Schools by uplink utilisation (busiest first): online against expected, lessons, bandwidth, alerts."""
    table = Table(title="Schools", title_justify="left", expand=False, header_style="bold")
    for col, justify in (
        ("school", "left"),
        ("online / expected", "right"),
        ("in service", "right"),
        ("lessons", "right"),
        ("period", "left"),
        ("sessions", "right"),
        ("Mbit/s", "right"),
        ("uplink", "right"),
        ("util %", "right"),
        ("alerts", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]  # left/right: rich JustifyMethod
    for s in _sorted(list(live.get("schools", [])), sort):
        pct = _online_pct(s)
        online = "—" if s.get("online") is None else f"{s['online']} / {s.get('expected_online', 0)}"
        util = s.get("uplink_utilisation_pct")
        alerts = s.get("alerts_open") or {}
        alert_text = Text(
            " ".join(f"{n} {sev}" for sev, n in sorted(alerts.items())) or "—",
            style="bold red" if alerts.get("critical") else "yellow" if alerts else "dim",
        )
        table.add_row(
            s["code"],
            Text(
                online + (f" ({pct:.0f}%)" if pct is not None else ""),
                style=_pct_style(pct, WARN_ONLINE_PCT, CRIT_ONLINE_PCT, high_is_bad=False),
            ),
            "—" if s.get("in_service") is None else str(s["in_service"]),
            "—" if s.get("lessons_in_progress") is None else str(s["lessons_in_progress"]),
            s.get("current_period") or "—",
            "—" if s.get("active_sessions") is None else str(s["active_sessions"]),
            _mbit(s.get("bytes_per_second") or 0.0),
            f"{s.get('uplink_mbps', 0)}",
            Text(
                "—" if util is None else f"{util:.1f}", style=_pct_style(util, WARN_UTIL_PCT, CRIT_UTIL_PCT)
            ),
            alert_text,
        )
    return table


def district_line(
    live: dict[str, Any], previous: Sample | None, now_mono: float
) -> tuple[Text, Sample | None]:
    """Totals, alerts and ingest health in one block; returns the ingest sample for the next frame's rate."""
    schools = live.get("schools", [])
    known = [s for s in schools if s.get("online") is not None]
    online = sum(s["online"] for s in known)
    expected = sum(s.get("expected_online") or 0 for s in known)
    lessons = sum(s.get("lessons_in_progress") or 0 for s in known)
    rate = sum(s.get("bytes_per_second") or 0.0 for s in schools)
    alerts = live.get("alerts_open") or {}
    age = live.get("snapshot_age_seconds")
    out = Text()
    out.append(f"district: {len(schools)} schools · ", style="bold")
    out.append(f"online {online}" + (f" of {expected} expected" if expected else "") if known else "online —")
    out.append(f" · {lessons} lessons in progress · {_mbit(rate)} Mbit/s")
    out.append(
        f" · alerts: {' '.join(f'{n} {k}' for k, n in sorted(alerts.items())) or 'none'}",
        style="bold red" if alerts.get("critical") else "yellow" if alerts else "",
    )
    out.append(
        f" · fleet snapshot {'not yet published' if age is None else f'{age:.0f} s old'}"
        f" · byte rate over the last {live.get('rate_window_seconds', 0):.0f} s\n"
    )
    ingest = live.get("ingest")
    sample = None
    if ingest is None:
        out.append("ingest: not reported by this service", style="dim")
        return out, None
    total = float(sum((ingest.get("messages") or {}).values()))
    dead = float(ingest.get("dead_letters") or 0)
    sample = Sample(now_mono, total, dead)
    out.append("ingest: ")
    out.append(
        "broker connected" if ingest.get("broker_connected") else "BROKER DISCONNECTED",
        style="green" if ingest.get("broker_connected") else "bold red",
    )
    if previous is not None and now_mono > previous.at:
        msg_rate = (total - previous.messages) / (now_mono - previous.at)
        dead_rate = (dead - previous.dead_letters) / (now_mono - previous.at)
        out.append(f" · {msg_rate:.0f} msg/s · dead letters {dead_rate:.1f}/s")
    else:
        out.append(f" · {total:.0f} messages since start · {dead:.0f} dead letters")
    depth, cap, lag = (
        ingest.get("queue_depth") or 0,
        ingest.get("queue_capacity") or 0,
        ingest.get("lag_seconds") or 0,
    )
    out.append(
        f" · queue {depth:.0f}/{cap:.0f} · lag {lag:.1f} s",
        style="bold red" if lag > 10 else "yellow" if cap and depth > cap / 2 else "",
    )
    return out, sample


def peaks_table(peaks: dict[str, Any]) -> Table:
    """Today's periods of one school: peak concurrency and bandwidth against expected and the uplink."""
    day = peaks["day"]
    title = f"{peaks['school']['code']} {day['local_date']} ({day['kind'].replace('_', ' ')})"
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in (
        "period",
        "from",
        "to",
        "status",
        "expected",
        "peak online",
        "online %",
        "peak sessions",
        "peak Mbit/s",
        "util %",
    ):
        table.add_column(col, justify="left" if col in ("period", "status") else "right")
    for p in peaks["periods"]:
        pct, util = p.get("online_vs_expected_pct"), p.get("uplink_utilisation_pct")
        table.add_row(
            p["name"],
            p["start"][11:16],
            p["end"][11:16],
            p["status"] if p["lesson"] else "no lesson",
            str(p["expected_online"]),
            "—" if p["peak_online"] is None else str(p["peak_online"]),
            Text(
                "—" if pct is None else f"{pct:.0f}",
                style=_pct_style(pct, WARN_ONLINE_PCT, CRIT_ONLINE_PCT, high_is_bad=False),
            ),
            "—" if p["peak_sessions"] is None else str(p["peak_sessions"]),
            "—" if p["peak_bytes_per_second"] is None else _mbit(p["peak_bytes_per_second"]),
            Text(
                "—" if util is None else f"{util:.1f}", style=_pct_style(util, WARN_UTIL_PCT, CRIT_UTIL_PCT)
            ),
        )
    return table


def clock_line(generated_at: str, real_now: datetime) -> str:
    """Which clock the figures follow: the service's. Expected-online counts, lessons and periods are the
    service's at its own time; a service under `labfleet simulate` runs the simulated clock, and then the
    line says so beside the real time."""
    service_now = datetime.fromisoformat(generated_at)
    if service_now.tzinfo is None:
        service_now = service_now.replace(tzinfo=UTC)
    shown = f"{service_now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC (service clock)"
    if abs((service_now - real_now).total_seconds()) > CLOCK_SKEW_S:
        shown += f"; simulated: the real clock says {real_now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return shown


async def _get(http: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    try:
        r = await http.get(path, params=params or None)
    except httpx.HTTPError as err:
        raise TopError(f"cannot reach {http.base_url}: {err}") from err
    if r.status_code == 401:
        raise TopError("the service refused the token (create one with `labfleet token create`)")
    if r.status_code != 200:
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        raise TopError(f"{path} answered {r.status_code}: {message}")
    return r.json()


async def frame(
    http: httpx.AsyncClient, *, school: str | None, sort: str, previous: Sample | None
) -> tuple[RenderableType, Sample | None]:
    """One screen: the district line, the schools table, and a school's periods when asked for."""
    live = await _get(http, "/api/v1/stats/live")
    line, sample = district_line(live, previous, time.monotonic())
    parts: list[RenderableType] = [
        Text(f"LabFleet top · {clock_line(live['generated_at'], datetime.now(UTC))}", style="bold"),
        line,
        school_table(live, sort),
    ]
    if school:
        parts.append(peaks_table(await _get(http, "/api/v1/stats/peaks", school=school)))
    return Group(*parts), sample


async def run_top(
    api: str,
    token: str,
    *,
    once: bool,
    interval: float,
    school: str | None,
    sort: str,
    console: Console,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Print one frame (`once`) or refresh in place until interrupted; errors in a live view show in the
    frame."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=api, headers=headers, timeout=HTTP_TIMEOUT_S, transport=transport
    ) as http:
        if once:
            view, _ = await frame(http, school=school, sort=sort, previous=None)
            console.print(view)
            return
        previous: Sample | None = None
        with Live(Text("connecting…"), console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    view, previous = await frame(http, school=school, sort=sort, previous=previous)
                except TopError as err:
                    view = Text(f"{err} (retrying every {interval:.0f} s)", style="bold red")
                live.update(view, refresh=True)
                await asyncio.sleep(interval)


def top(
    api: Annotated[
        str,
        typer.Option(
            "--api",
            "--url",
            help="service base URL (the one `labfleet simulate` prints for the service it starts)",
            envvar="LABFLEET_API",
        ),
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str, typer.Option(help="API token (any role; shows the token's schools)", envvar="LABFLEET_TOKEN")
    ] = "",
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    interval: Annotated[
        float, typer.Option(help="seconds between refreshes", min=1.0, max=3600.0)
    ] = DEFAULT_INTERVAL_S,
    school: Annotated[
        str | None, typer.Option(help="also show this school's periods today (id or code)")
    ] = None,
    sort: Annotated[str, typer.Option(help="utilisation | online | code")] = "utilisation",
) -> None:
    """Live district picture: schools by uplink utilisation, online against expected, lessons, alerts,
    ingest."""
    if not token:
        raise typer.BadParameter("an API token is needed: --token or LABFLEET_TOKEN (labfleet token create)")
    if sort not in SORTS:
        raise typer.BadParameter(f"sort must be one of {', '.join(SORTS)}")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                run_top(api, token, once=once, interval=interval, school=school, sort=sort, console=Console())
            )
    except TopError as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None
