"""screentime: myopia prevention, from the terminals' `screen_session` events (protocol 5.3.1) rolled up per
terminal and local day (usage_screen): minutes of use per day, sessions longer than the policy allows, breaks
the policy enforced and terminals over their daily limit, per school, room and day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Integer, case, func, select

from fleet.i18n import N_, _
from fleet.persistence.models_mqtt import UsageScreen
from fleet.services.reports.data import Context
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem

TITLE = N_("Screen time")

U = UsageScreen
# A terminal-day is over its limit when its summed use passes the day's last reported daily limit (5.3.1).
_OVER = case((U.daily_limit_min.is_not(None) & (U.use_seconds > U.daily_limit_min * 60), 1), else_=0)


@dataclass(slots=True)
class Acc:
    """Sums over some terminal-days (a school, a room, a day, one terminal)."""

    terminals: set[int] = field(default_factory=set)
    days: int = 0
    seconds: int = 0
    sessions: int = 0
    long: int = 0
    breaks: int = 0
    locks: int = 0
    unmanaged: int = 0
    days_over: int = 0
    over: set[int] = field(default_factory=set)  # terminals with at least one day over the limit
    longest: int = 0
    worst_day: int = 0  # the most seconds of use in one day
    daily_limit: int | None = None  # the largest daily limit reported (terminal rows)
    session_limit: int | None = None

    def add(self, dev: int, row: tuple[int | None, ...]) -> None:
        days, seconds, sessions, long, breaks, locks, unmanaged, over, longest, worst = (
            v or 0 for v in row[:10]
        )
        slim, dlim = row[10:]  # only the two limits may be None
        self.terminals.add(dev)
        self.days += days
        self.seconds += seconds
        self.sessions += sessions
        self.long += long
        self.breaks += breaks
        self.locks += locks
        self.unmanaged += unmanaged
        self.days_over += over
        if over:
            self.over.add(dev)
        self.longest = max(self.longest, longest)
        self.worst_day = max(self.worst_day, worst)
        if slim is not None:
            self.session_limit = max(self.session_limit or 0, slim)
        if dlim is not None:
            self.daily_limit = max(self.daily_limit or 0, dlim)

    def figures(self) -> tuple[object, ...]:
        """The columns every table shares, in FIGURES order."""
        return (
            len(self.terminals),
            self.days,
            minutes(self.seconds),
            per_day(self.seconds, self.days),
            self.sessions,
            self.long,
            self.breaks,
            self.locks,
            self.unmanaged,
            self.days_over,
            len(self.over),
        )


# asset tag, school, room, days, minutes a day, most in a day, daily limit, days over, long sessions, longest,
# session limit, sessions without a policy
TerminalRow = tuple[str, str, str, int, float | None, int, int | None, int, int, int, int | None, int]


def minutes(seconds: int) -> int:
    return round(seconds / 60)


def per_day(seconds: int, days: int) -> float | None:
    return round(seconds / 60 / days, 1) if days else None


FIGURES = (
    Column("terminals", N_("Terminals reporting"), "int"),
    Column("terminal_days", N_("Terminal-days in use"), "int"),
    Column("use_minutes", N_("Minutes of use"), "int"),
    Column("minutes_per_terminal_day", N_("Minutes per terminal per day"), "float"),
    Column("sessions", N_("Sessions"), "int"),
    Column("long_sessions", N_("Sessions longer than the policy allows"), "int"),
    Column("breaks", N_("Breaks enforced"), "int"),
    Column("limit_locks", N_("Daily-limit locks"), "int"),
    Column("unmanaged_sessions", N_("Sessions without a policy"), "int"),
    Column("days_over_limit", N_("Terminal-days over the daily limit"), "int"),
    Column("terminals_over_limit", N_("Terminals over their daily limit"), "int"),
)


async def _per_terminal(ctx: Context) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """(device, school, room, sums) per terminal and room over the range's days."""
    stmt = select(
        U.device_id,
        U.school_id,
        U.room_id,
        func.count(),
        func.sum(U.use_seconds),
        func.sum(U.sessions),
        func.sum(U.long_sessions),
        func.sum(U.breaks),
        func.sum(U.limit_locks),
        func.sum(U.unmanaged_sessions),
        func.sum(_OVER, type_=Integer),
        func.max(U.longest_seconds),
        func.max(U.use_seconds),
        func.max(U.session_limit_min),
        func.max(U.daily_limit_min),
    ).where(U.day >= ctx.scope.start, U.day <= ctx.scope.end)
    where = ctx.scope.where(U.school_id)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.group_by(U.device_id, U.school_id, U.room_id)
    return [(r[0], r[1], r[2], tuple(r[3:])) for r in await ctx.rows(stmt)]


async def _per_day(ctx: Context) -> list[tuple[date, tuple[int, ...]]]:
    stmt = select(
        U.day,
        func.count(),
        func.sum(U.use_seconds),
        func.sum(U.sessions),
        func.sum(U.long_sessions),
        func.sum(U.breaks),
        func.sum(U.limit_locks),
        func.sum(U.unmanaged_sessions),
        func.sum(_OVER, type_=Integer),
    ).where(U.day >= ctx.scope.start, U.day <= ctx.scope.end)
    where = ctx.scope.where(U.school_id)
    if where is not None:
        stmt = stmt.where(where)
    return [(r[0], tuple(int(v or 0) for v in r[1:])) for r in await ctx.rows(stmt.group_by(U.day))]


async def build(ctx: Context) -> Report:
    ctx.step("screen time", 0, 3)
    schools = ctx.scope.schools
    rooms = await ctx.rooms()
    devices = {d.id: d for d in await ctx.all_devices()}
    per_terminal = await _per_terminal(ctx)
    ctx.step("screen time", 1, 3)
    days = await _per_day(ctx)
    ctx.step("screen time", 2, 3)

    total = Acc()
    by_school: dict[int, Acc] = {}
    by_room: dict[tuple[int, int], Acc] = {}
    by_dev: dict[int, Acc] = {}
    for dev, school, room, sums in per_terminal:
        row = tuple(int(v) if v is not None else None for v in sums)
        for acc in (
            total,
            by_school.setdefault(school, Acc()),
            by_room.setdefault((school, room), Acc()),
            by_dev.setdefault(dev, Acc()),
        ):
            acc.add(dev, row)

    no_room = _("(no room)")
    school_rows = [
        (schools[sid].code, schools[sid].name, *by_school[sid].figures())
        for sid in sorted(by_school, key=lambda s: schools[s].code)
        if sid in schools
    ]

    def room_key(k: tuple[int, int]) -> tuple[str, str]:
        r = rooms.get(k[1])
        return (schools[k[0]].code, r.name if r else "")

    room_rows = []
    for key in sorted((k for k in by_room if k[0] in schools), key=room_key):
        r = rooms.get(key[1])
        room_rows.append(
            (
                schools[key[0]].code,
                r.name if r else no_room,
                r.kind if r else None,
                *by_room[key].figures(),
            )
        )

    day_rows: list[tuple[object, ...]] = []
    day_sums = [0] * 6
    for day, (n, secs, *counts) in sorted(days):
        day_rows.append((day, n, minutes(secs), per_day(secs, n), *counts))
        day_sums = [a + b for a, b in zip(day_sums, counts, strict=True)]
    day_total = (_("Total"), None, minutes(total.seconds), per_day(total.seconds, total.days), *day_sums)

    def terminal_row(dev: int) -> TerminalRow:
        a = by_dev[dev]
        d = devices.get(dev)
        room = rooms.get(d.room_id) if d is not None and d.room_id is not None else None
        return (
            d.asset_tag if d else str(dev),
            schools[d.school_id].code if d and d.school_id in schools else "",
            room.name if room else "",
            a.days,
            per_day(a.seconds, a.days),
            minutes(a.worst_day),
            a.daily_limit,
            a.days_over,
            a.long,
            minutes(a.longest),
            a.session_limit,
            a.unmanaged,
        )

    flagged = [dev for dev, a in by_dev.items() if a.days_over or a.long]
    terminal_rows = sorted((terminal_row(dev) for dev in flagged), key=lambda r: (-r[7], -r[8], r[0]))
    total_label = _("Total")
    sections = [
        Section(
            "by_school",
            N_("Per school"),
            (Column("school_code", N_("School code")), Column("school", N_("School")), *FIGURES),
            school_rows,
            chart=Chart(
                "school_code",
                ("minutes_per_terminal_day",),
                N_("Minutes of use per terminal per day, by school"),
                horizontal=True,
            ),
            totals=(total_label, None, *total.figures()),
        ),
        Section(
            "by_room",
            N_("Per room"),
            (
                Column("school_code", N_("School code")),
                Column("room", N_("Room")),
                Column("room_kind", N_("Room kind"), "code"),
                *FIGURES,
            ),
            room_rows,
            totals=(total_label, None, None, *total.figures()),
        ),
        Section(
            "by_day",
            N_("Per day"),
            (
                Column("day", N_("Day"), "date"),
                Column("terminals", N_("Terminals reporting"), "int"),
                Column("use_minutes", N_("Minutes of use"), "int"),
                Column("minutes_per_terminal", N_("Minutes per terminal"), "float"),
                Column("sessions", N_("Sessions"), "int"),
                Column("long_sessions", N_("Sessions longer than the policy allows"), "int"),
                Column("breaks", N_("Breaks enforced"), "int"),
                Column("limit_locks", N_("Daily-limit locks"), "int"),
                Column("unmanaged_sessions", N_("Sessions without a policy"), "int"),
                Column("terminals_over_limit", N_("Terminals over their daily limit"), "int"),
            ),
            day_rows,
            totals=day_total,
        ),
        Section(
            "terminals",
            N_("Terminals over their daily limit or with sessions longer than the policy allows"),
            (
                Column("asset_tag", N_("Asset tag")),
                Column("school_code", N_("School code")),
                Column("room", N_("Room")),
                Column("terminal_days", N_("Days in use"), "int"),
                Column("minutes_per_day", N_("Minutes per day"), "float"),
                Column("most_minutes_in_a_day", N_("Most minutes in a day"), "int"),
                Column("daily_limit", N_("Daily limit (minutes)"), "int"),
                Column("days_over_limit", N_("Days over the daily limit"), "int"),
                Column("long_sessions", N_("Sessions longer than the policy allows"), "int"),
                Column("longest_session", N_("Longest session (minutes)"), "int"),
                Column("session_limit", N_("Session limit (minutes)"), "int"),
                Column("unmanaged_sessions", N_("Sessions without a policy"), "int"),
            ),
            terminal_rows,
            sheet=N_("Terminals over the limits"),
        ),
    ]
    summary = [
        SummaryItem("terminals", N_("Terminals reporting"), len(total.terminals), "int"),
        SummaryItem("terminal_days", N_("Terminal-days in use"), total.days, "int"),
        SummaryItem("use_minutes", N_("Minutes of use"), minutes(total.seconds), "int"),
        SummaryItem(
            "minutes_per_terminal_day",
            N_("Minutes per terminal per day"),
            per_day(total.seconds, total.days),
            "float",
        ),
        SummaryItem("sessions", N_("Sessions"), total.sessions, "int"),
        SummaryItem("long_sessions", N_("Sessions longer than the policy allows"), total.long, "int"),
        SummaryItem("breaks", N_("Breaks enforced"), total.breaks, "int"),
        SummaryItem("limit_locks", N_("Daily-limit locks"), total.locks, "int"),
        SummaryItem("unmanaged_sessions", N_("Sessions without a policy"), total.unmanaged, "int"),
        SummaryItem("days_over_limit", N_("Terminal-days over the daily limit"), total.days_over, "int"),
        SummaryItem("terminals_over_limit", N_("Terminals over their daily limit"), len(total.over), "int"),
    ]
    notes = [
        _(
            "From the sessions of use the terminals report (protocol section 5.3.1), per local day of "
            "the school from {start} to {end}. Use is time with the screen on and unlocked; a session "
            "ends with a rest as long as the policy's break.",
            start=ctx.scope.start.isoformat(),
            end=ctx.scope.end.isoformat(),
        ),
        N_(
            "Minutes per terminal per day = minutes of use / terminal-days in use (days on which the "
            "terminal reported use). A session is longer than the policy allows when its use exceeds "
            "the session limit in force on the terminal; a session without a policy is counted apart "
            "and never judged long. A terminal-day is over the daily limit when its use exceeds the "
            "last daily limit it reported that day. A break enforced is a session the policy ended; a "
            "daily-limit lock is one the daily limit ended."
        ),
    ]
    ctx.step("screen time", 3, 3)
    return ctx.report("screentime", TITLE, summary, sections, notes)
