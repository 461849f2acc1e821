"""`labfleet rollout ...`: create, list, show, control and school update policy."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli.common import CLI, console, err_console, run_db, settings
from fleet.domain.clock import SystemClock
from fleet.domain.rollouts import GroupPlan, GroupStrategy, Window

rollout_app = typer.Typer(
    help="Staged firmware rollouts (timetable-aware, paced per school).", no_args_is_help=True
)


def _percents(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter("percents is a comma-separated list, e.g. 25,50,100") from None


async def resolve_model(session: Any, text: str) -> int:
    """A device model by id, firmware profile key (terminal-lt100) or model number (LT100)."""
    from sqlalchemy import or_, select

    from fleet.errors import InvalidInput, NotFound
    from fleet.persistence.models import DeviceModel

    if text.isdigit():
        return int(text)
    rows = (
        await session.execute(
            select(DeviceModel.id, DeviceModel.profile_key)
            .where(or_(DeviceModel.profile_key == text, DeviceModel.model_number == text))
            .order_by(DeviceModel.id)
        )
    ).all()
    if not rows:
        known = (
            await session.execute(
                select(DeviceModel.id, DeviceModel.model_number, DeviceModel.profile_key).order_by(
                    DeviceModel.id
                )
            )
        ).all()
        listing = ", ".join(f"{i} {num} ({key or 'no profile'})" for i, num, key in known) or "none yet"
        raise NotFound(f"no device model {text!r}; models: {listing}")
    if len(rows) > 1:
        raise InvalidInput(
            f"{text!r} names {len(rows)} device models (ids "
            f"{', '.join(str(i) for i, _ in rows)}); pass the id"
        )
    return int(rows[0][0])


async def resolve_schools(session: Any, items: list[str]) -> tuple[int, ...]:
    """Schools by id or code."""
    from sqlalchemy import select

    from fleet.errors import NotFound
    from fleet.persistence.models import School

    out = []
    for item in items:
        if item.isdigit():
            out.append(int(item))
            continue
        sid = (await session.execute(select(School.id).where(School.code == item))).scalar_one_or_none()
        if sid is None:
            raise NotFound(f"no school with code {item!r}")
        out.append(int(sid))
    return tuple(out)


async def resolve_rooms(session: Any, items: list[str], school_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Rooms by id, or by name inside the given schools (a name must be unambiguous)."""
    from sqlalchemy import select

    from fleet.errors import InvalidInput, NotFound
    from fleet.persistence.models import Room

    out = []
    for item in items:
        if item.isdigit():
            out.append(int(item))
            continue
        q = select(Room.id).where(Room.name == item)
        if school_ids:
            q = q.where(Room.school_id.in_(school_ids))
        ids = list((await session.execute(q)).scalars())
        if not ids:
            raise NotFound(f"no room named {item!r}" + (" in those schools" if school_ids else ""))
        if len(ids) > 1:
            raise InvalidInput(f"{len(ids)} rooms are named {item!r}; add --school or pass room ids")
        out.append(int(ids[0]))
    return tuple(out)


@rollout_app.command("create")
def rollout_create(
    model: Annotated[
        str, typer.Option(help="device model: id, profile key (terminal-lt100) or model number")
    ],
    version: Annotated[
        str, typer.Option(help="target firmware version (one of the model's profile versions)")
    ],
    name: Annotated[str, typer.Option(help="a name for people (default: profile and version)")] = "",
    school: Annotated[
        list[str] | None, typer.Option(help="school id or code (repeatable; default: all)")
    ] = None,
    room: Annotated[
        list[str] | None, typer.Option(help="room id, or name within --school (repeatable)")
    ] = None,
    from_version: Annotated[
        list[str] | None, typer.Option(help="only devices on this version (repeatable)")
    ] = None,
    canary: Annotated[int, typer.Option(help="canary group size (devices)")] = 1,
    canary_percent: Annotated[float | None, typer.Option(help="canary as a percentage instead")] = None,
    strategy: Annotated[
        GroupStrategy, typer.Option(help="groups after the canary")
    ] = GroupStrategy.PER_SCHOOL,
    percents: Annotated[
        str, typer.Option(help="cumulative percentages for --strategy percent")
    ] = "25,50,100",
    success: Annotated[float, typer.Option(help="success share (0-1) that starts the next group")] = 0.9,
    error: Annotated[
        float, typer.Option(help="failure share (0-1) of a group that pauses the rollout")
    ] = 0.2,
    max_attempts: Annotated[int, typer.Option(help="tries per device (1-10)")] = 3,
    download_window: Annotated[Window, typer.Option(help="when downloads may run")] = Window.OUTSIDE_LESSONS,
    install_window: Annotated[Window, typer.Option(help="when installs may run")] = Window.OUTSIDE_LESSONS,
    draft: Annotated[bool, typer.Option("--draft", help="create without starting")] = False,
) -> None:
    """Create a rollout and start it (canary first); `labfleet serve` drives it."""
    from fleet.services.rollouts import RolloutService, RolloutSpec

    plan = GroupPlan(canary, canary_percent, strategy, _percents(percents))

    async def work(session: Any) -> Any:
        model_id = await resolve_model(session, model)
        schools = await resolve_schools(session, school or [])
        rooms = await resolve_rooms(session, room or [], schools)
        from fleet.persistence.models import DeviceModel

        dm = await session.get(DeviceModel, model_id)
        label = name or f"{(dm.profile_key if dm else None) or f'model {model_id}'} to {version}"
        spec = RolloutSpec(
            name=label,
            model_id=model_id,
            target_version=version,
            school_ids=schools,
            room_ids=rooms,
            from_versions=tuple(from_version or ()),
            plan=plan,
            success_threshold=success,
            error_threshold=error,
            max_attempts=max_attempts,
            download_window=download_window,
            install_window=install_window,
            start=not draft,
        )
        r = await RolloutService(session, CLI, SystemClock().now()).create(spec)
        return await RolloutService(session, CLI, SystemClock().now()).get(r.id)

    detail = run_db(work)
    console.print(render(detail))
    if draft:
        console.print(f"Draft: start it with `labfleet rollout start {detail.rollout.id}`.")
    else:
        console.print(
            f"Follow it with `labfleet rollout show {detail.rollout.id} --watch` "
            f"(the service running `labfleet serve` sends the commands)."
        )


@rollout_app.command("list")
def rollout_list(status: Annotated[str | None, typer.Option(help="only this state")] = None) -> None:
    """List rollouts."""
    from fleet.services.rollouts import RolloutService

    async def work(session: Any) -> Any:
        return (
            await RolloutService(session, CLI, SystemClock().now()).list(cursor=None, limit=500, state=status)
        ).items

    table = Table("id", "name", "profile", "target", "state", "group", "reason")
    for r in run_db(work):
        table.add_row(
            str(r.id),
            r.name,
            r.profile_key,
            r.target_version,
            r.state,
            "canary" if r.current_group == 0 else f"#{r.current_group + 1}",
            r.state_reason if r.state_reason and r.state_reason != r.state else "",
        )
    console.print(table)


# Rollout states after which nothing more happens: `show --watch` stops there.
FINISHED = ("completed", "aborted")
# States counted as "in flight" in the summary line.
IN_FLIGHT = ("scheduled", "downloading", "downloaded", "installing")
# Width of the per-group progress bar in characters.
BAR_WIDTH = 24


def _bar(by_state: dict[str, int], total: int) -> str:
    """A text bar: succeeded green, failed or rolled back red, in flight yellow, the rest dim."""
    if total <= 0:
        return "[dim]" + "·" * BAR_WIDTH + "[/dim]"
    parts = [
        (sum(by_state.get(s, 0) for s in ("succeeded",)), "green", "█"),
        (sum(by_state.get(s, 0) for s in ("failed", "rolled_back")), "red", "█"),
        (sum(by_state.get(s, 0) for s in IN_FLIGHT), "yellow", "▒"),
    ]
    out, used = "", 0
    for n, colour, ch in parts:
        w = round(n / total * BAR_WIDTH)
        w = min(w, BAR_WIDTH - used)
        if w:
            out += f"[{colour}]{ch * w}[/{colour}]"
            used += w
    return out + "[dim]" + "░" * (BAR_WIDTH - used) + "[/dim]"


def _summary(totals: dict[str, int]) -> str:
    total = sum(totals.values())
    done = totals.get("succeeded", 0)
    failed = totals.get("failed", 0) + totals.get("rolled_back", 0)
    flying = sum(totals.get(s, 0) for s in IN_FLIGHT)
    rest = [
        f"{n} {s}"
        for s, n in sorted(totals.items())
        if s not in ("succeeded", "failed", "rolled_back", *IN_FLIGHT) and n
    ]
    return f"{done}/{total} succeeded, {failed} failed or rolled back, {flying} in flight" + (
        f", {', '.join(rest)}" if rest else ""
    )


def render(d: Any, *, devices: bool = False) -> Any:
    """A rollout's header, totals and group progress (and per-device rows) as one printable."""
    from rich.console import Group

    r = d.rollout
    colour = {"running": "cyan", "paused": "yellow", "completed": "green", "aborted": "red"}.get(
        r.state, "white"
    )
    head = (
        f"rollout {r.id} [bold]{r.name}[/bold]: {r.profile_key} -> {r.target_version}, "
        f"[{colour}]{r.state}[/{colour}]"
        + (f" ({r.state_reason})" if r.state_reason and r.state_reason != r.state else "")
    )
    table = Table("group", "kind", "state", "progress", "devices", "by state")
    for g in d.groups:
        table.add_row(
            g.name,
            g.kind,
            g.state,
            _bar(g.by_state, g.total),
            str(g.total),
            ", ".join(f"{k} {v}" for k, v in sorted(g.by_state.items())),
        )
    parts: list[Any] = [head, _summary(d.totals), table]
    if devices:
        dt = Table("device", "school", "room", "state", "from", "reported", "attempts", "reason")
        for x in d.devices:
            dt.add_row(
                str(x.device_id),
                str(x.school_id),
                str(x.room_id or ""),
                x.state,
                x.from_version or "",
                x.reported_version or "",
                str(x.attempts),
                x.reason or "",
            )
        parts.append(dt)
    return Group(*parts)


@rollout_app.command("show")
def rollout_show(
    rollout_id: int,
    devices: Annotated[bool, typer.Option("--devices", help="list per-device states")] = False,
    device: Annotated[int | None, typer.Option(help="one device's timeline in this rollout")] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="refresh until it completes or is aborted (Ctrl-C stops watching, not the rollout)",
        ),
    ] = False,
    every: Annotated[float, typer.Option(help="seconds between refreshes with --watch")] = 2.0,
) -> None:
    """A rollout's totals and group progress (per-device states with --devices, one device's timeline with
    --device ID); --watch keeps it on screen as the service drives it."""
    from fleet.services.rollouts import RolloutService

    if device is not None:

        async def timeline(session: Any) -> Any:
            return await RolloutService(session, CLI, SystemClock().now()).timeline(rollout_id, device)

        table = Table("at", "event", "detail", title=f"device {device} in rollout {rollout_id}")
        for e in run_db(timeline):
            table.add_row(e.at.isoformat(timespec="seconds"), e.event, e.detail or "")
        console.print(table)
        return

    async def work(session: Any) -> Any:
        return await RolloutService(session, CLI, SystemClock().now()).get(rollout_id)

    if not watch:
        console.print(render(run_db(work), devices=devices))
        return
    if every <= 0:
        raise typer.BadParameter("--every must be positive")
    _watch(rollout_id, every, devices)


def _watch(rollout_id: int, every: float, devices: bool) -> None:
    """Re-read and redraw every `every` seconds in one process (one engine, a fresh session per read)."""
    import asyncio

    from rich.live import Live

    from fleet.errors import FleetError
    from fleet.persistence.db import create_engine, session_factory
    from fleet.services.rollouts import RolloutService

    cfg = settings()

    async def main() -> str:
        engine = create_engine(cfg.database_url)
        sessions = session_factory(engine)
        try:
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    async with sessions() as session:
                        d = await RolloutService(session, CLI, SystemClock().now()).get(rollout_id)
                    live.update(render(d, devices=devices), refresh=True)
                    if d.rollout.state in FINISHED:
                        return str(d.rollout.state)
                    await asyncio.sleep(every)
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        console.print("stopped watching; the rollout carries on in the service")
    except FleetError as err:
        err_console.print(f"[red]Error:[/red] {err.message}")
        raise typer.Exit(1) from None


def _control(action: str, rollout_id: int) -> None:
    from fleet.services.rollouts import RolloutService

    async def work(session: Any) -> Any:
        svc = RolloutService(session, CLI, SystemClock().now())
        await getattr(svc, action)(rollout_id)
        return await svc.get(rollout_id)

    d = run_db(work)
    console.print(render(d))
    if action == "abort":
        console.print(
            "Devices holding a partial or staged image are told to drop it by the service's next step; "
            "installs already running finish and report."
        )


@rollout_app.command("pause")
def rollout_pause(rollout_id: int) -> None:
    """Pause: no new downloads or installs start; those in flight finish."""
    _control("pause", rollout_id)


@rollout_app.command("resume")
def rollout_resume(rollout_id: int) -> None:
    """Resume a paused rollout."""
    _control("resume", rollout_id)


@rollout_app.command("abort")
def rollout_abort(rollout_id: int) -> None:
    """Abort: pending and downloading devices are cancelled (the service tells them); installs finish."""
    _control("abort", rollout_id)


@rollout_app.command("start")
def rollout_start(rollout_id: int) -> None:
    """Start a draft rollout."""
    _control("start", rollout_id)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_window(text: str) -> list[dict[str, object]]:
    """ "mon-fri 16:30-22:00" or "sat 08:00-12:00" -> the policy's window objects (one per weekday)."""
    try:
        days, hours = text.strip().lower().split()
        first, _, last = days.partition("-")
        a, b = DAYS.index(first[:3]), DAYS.index((last or first)[:3])
        start, end = hours.split("-")
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: write a window as DAYS HH:MM-HH:MM, e.g. 'mon-fri 16:30-22:00'"
        ) from None
    if b < a:
        raise typer.BadParameter(f"{text!r}: days run Monday to Sunday, e.g. 'mon-fri'")
    return [{"weekday": d, "start": start, "end": end} for d in range(a, b + 1)]


def describe_windows(windows: list[dict[str, Any]]) -> str:
    """Windows back in the CLI's words, consecutive days with the same hours joined: "mon-fri 16:30-22:00"."""
    runs: list[tuple[int, int, str]] = []
    for w in sorted(windows, key=lambda w: (str(w["start"]), str(w["end"]), int(w["weekday"]))):
        hours = f"{w['start']}-{w['end']}"
        day = int(w["weekday"])
        if runs and runs[-1][2] == hours and runs[-1][1] == day - 1:
            runs[-1] = (runs[-1][0], day, hours)
        else:
            runs.append((day, day, hours))
    return ", ".join(f"{DAYS[a]}{'-' + DAYS[b] if b != a else ''} {h}" for a, b, h in sorted(runs))


@rollout_app.command("policy")
def rollout_policy(
    school: Annotated[str, typer.Argument(help="school id or code")],
    window: Annotated[
        list[str] | None,
        typer.Option(
            help="maintenance window, e.g. 'mon-fri 16:30-22:00' (repeatable; replaces the school's windows)"
        ),
    ] = None,
    no_windows: Annotated[
        bool,
        typer.Option(
            "--no-windows", help="drop the maintenance windows (updates may run whenever no lesson is on)"
        ),
    ] = False,
    max_concurrent: Annotated[int | None, typer.Option(help="downloads at once at this school")] = None,
    max_mbps: Annotated[float | None, typer.Option(help="cap on update traffic in Mbit/s")] = None,
    uplink_share: Annotated[
        float | None, typer.Option(help="share (0-1] of the uplink updates may use")
    ] = None,
) -> None:
    """Show a school's update policy, or change it: maintenance windows and download caps (unset options keep
    their current value)."""
    from fleet.services.rollout_policy import get_school_policy, school_budget, set_school_policy

    cfg = settings()
    windows = [w for text in (window or []) for w in parse_window(text)]
    changing = (
        bool(window) or no_windows or any(v is not None for v in (max_concurrent, max_mbps, uplink_share))
    )

    async def work(session: Any) -> Any:
        [sid] = await resolve_schools(session, [school])
        row = await get_school_policy(session, CLI, sid)
        if changing:
            current: dict[str, Any] = {
                "windows": row.windows if row else [],
                "max_concurrent_downloads": row.max_concurrent_downloads if row else None,
                "uplink_share": row.uplink_share if row else None,
                "max_bytes_per_second": row.max_bytes_per_second if row else None,
            }
            row = await set_school_policy(
                session,
                CLI,
                SystemClock().now(),
                sid,
                windows=[] if no_windows else (windows or current["windows"]),
                max_concurrent_downloads=max_concurrent
                if max_concurrent is not None
                else current["max_concurrent_downloads"],
                uplink_share=uplink_share if uplink_share is not None else current["uplink_share"],
                max_bytes_per_second=int(max_mbps * 1_000_000 / 8)
                if max_mbps is not None
                else current["max_bytes_per_second"],
            )
        return sid, row, await school_budget(session, cfg.rollouts, sid)

    _sid, row, budget = run_db(work)
    windows_text = describe_windows(row.windows if row else []) or "none (any time no lesson is on)"
    conc = (row.max_concurrent_downloads if row else None) or cfg.rollouts.default_max_concurrent_downloads
    console.print(f"school {school}: maintenance windows: {windows_text}")
    console.print(
        f"  downloads at once: {conc}; update budget: {budget * 8 / 1e6:.1f} Mbit/s "
        f"(uplink share {(row.uplink_share if row else None) or cfg.rollouts.default_uplink_share:g}"
        + (
            f", capped at {row.max_bytes_per_second * 8 / 1e6:g} Mbit/s"
            if row and row.max_bytes_per_second
            else ""
        )
        + ")"
    )
