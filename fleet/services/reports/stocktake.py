"""stocktake: the room counts (issue 21, point 3): per school and room when last counted and what that count
found, missed and moved; the rooms not counted this term; the devices missing in two consecutive counts."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from fleet.domain.enums import CalendarKind
from fleet.domain.stocktake import LineStatus, Resolution
from fleet.i18n import N_, _
from fleet.persistence.models import CalendarDay
from fleet.persistence.models_stocktake import Stocktake, StocktakeLine
from fleet.services.reports.data import Context
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem

TITLE = N_("Room stocktake")


def _scoped(ctx: Context, stmt: Any, school_column: Any) -> Any:
    clause = ctx.scope.where(school_column)
    return stmt if clause is None else stmt.where(clause)


@dataclass(frozen=True, slots=True)
class Count:
    id: int
    room_id: int
    finished_at: datetime
    found: int
    missing: int
    unexpected: int
    moved: int
    lost: int


async def _terms(ctx: Context) -> dict[int, date]:
    """Each school's current term start: the term (calendar) holding the report's end date."""
    stmt = _scoped(
        ctx,
        select(CalendarDay.school_id, CalendarDay.start_date).where(
            CalendarDay.kind == CalendarKind.TERM,
            CalendarDay.start_date <= ctx.scope.end,
            CalendarDay.end_date >= ctx.scope.end,
        ),
        CalendarDay.school_id,
    )
    out: dict[int, date] = {}
    for school_id, start in await ctx.rows(stmt):
        out[school_id] = max(out.get(school_id, start), start)
    return out


async def _counts(ctx: Context) -> dict[int, list[Count]]:
    """Finished counts up to the end of the report's range, newest first per room."""
    stmt = _scoped(
        ctx,
        select(
            Stocktake.id,
            Stocktake.room_id,
            Stocktake.finished_at,
            Stocktake.found,
            Stocktake.missing,
            Stocktake.unexpected,
            Stocktake.moved,
            Stocktake.lost,
        ).where(Stocktake.finished_at.is_not(None), Stocktake.finished_at < ctx.scope.end_at),
        Stocktake.school_id,
    )
    by_room: dict[int, list[Count]] = defaultdict(list)
    for row in await ctx.rows(stmt):
        by_room[row[1]].append(Count(*row))
    for counts in by_room.values():
        counts.sort(key=lambda c: (c.finished_at, c.id), reverse=True)
    return by_room


async def _missing_twice(ctx: Context, pairs: dict[int, tuple[Count, Count]]) -> dict[int, list[int]]:
    """Room -> devices missing (not found, not settled) in both of its last two counts."""
    ids = [c.id for pair in pairs.values() for c in pair]
    if not ids:
        return {}
    rows = await ctx.rows(
        select(StocktakeLine.stocktake_id, StocktakeLine.device_id).where(
            StocktakeLine.stocktake_id.in_(ids),
            StocktakeLine.status == LineStatus.MISSING,
            StocktakeLine.resolution.is_(None) | (StocktakeLine.resolution != Resolution.MARKED_LOST),
        )
    )
    missing: dict[int, set[int]] = defaultdict(set)
    for stocktake_id, device_id in rows:
        missing[stocktake_id].add(device_id)
    return {
        room: sorted(missing[last.id] & missing[before.id])
        for room, (last, before) in pairs.items()
        if missing[last.id] & missing[before.id]
    }


async def build(ctx: Context) -> Report:
    ctx.step("counts", 0, 3)
    schools = ctx.scope.schools
    rooms = await ctx.rooms()
    terms = await _terms(ctx)
    counts = await _counts(ctx)
    ctx.step("counts", 1, 3)

    def term_start(school_id: int) -> date:
        return terms.get(school_id, ctx.scope.start)

    room_rows, never_rows = [], []
    per_school: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0])
    pairs: dict[int, tuple[Count, Count]] = {}
    for room in sorted(rooms.values(), key=lambda r: (schools[r.school_id].code, r.name)):
        history = counts.get(room.id, [])
        last = history[0] if history else None
        if len(history) >= 2:
            pairs[room.id] = (history[0], history[1])
        since = term_start(room.school_id)
        this_term = [c for c in history if c.finished_at.date() >= since]
        code = schools[room.school_id].code
        acc = per_school[room.school_id]
        acc[0] += 1
        acc[1] += bool(this_term)
        if last is not None:
            acc[2] += last.found
            acc[3] += last.missing
            acc[4] += last.unexpected
            acc[5] += last.moved
            acc[6] += last.lost
        room_rows.append(
            (
                code,
                room.name,
                room.kind,
                last.finished_at if last else None,
                len(this_term),
                last.found if last else None,
                last.missing if last else None,
                last.unexpected if last else None,
                last.moved if last else None,
                last.lost if last else None,
            )
        )
        if not this_term:
            never_rows.append((code, room.name, room.kind, since, last.finished_at if last else None))
    ctx.step("counts", 2, 3)

    twice = await _missing_twice(ctx, pairs)
    devices = {d.id: d for d in await ctx.all_devices()}
    models = await ctx.models()
    twice_rows = []
    for room_id, device_ids in twice.items():
        room = rooms[room_id]
        last, before = pairs[room_id]
        for device_id in device_ids:
            d = devices.get(device_id)
            if d is None:  # moved to a school outside the report's scope since
                continue
            twice_rows.append(
                (
                    d.asset_tag,
                    d.serial_number,
                    models[d.model_id].label,
                    schools[room.school_id].code,
                    room.name,
                    before.finished_at,
                    last.finished_at,
                    d.status,
                )
            )
    twice_rows.sort(key=lambda r: (r[3], r[4], r[0]))
    ctx.step("counts", 3, 3)

    school_rows: list[tuple[Any, ...]] = [
        (s.code, s.name, *per_school[sid])
        for sid, s in sorted(schools.items(), key=lambda kv: kv[1].code)
        if sid in per_school
    ]
    total_label = _("Total")
    sums = [sum(int(r[i]) for r in school_rows) for i in range(2, 9)]
    sections = [
        Section(
            "by_school",
            N_("By school"),
            (
                Column("school_code", N_("School code")),
                Column("school", N_("School")),
                Column("rooms", N_("Rooms"), "int"),
                Column("rooms_counted", N_("Rooms counted this term"), "int"),
                Column("found", N_("Found in the last counts"), "int"),
                Column("missing", N_("Missing in the last counts"), "int"),
                Column("unexpected", N_("Found belonging elsewhere"), "int"),
                Column("moved", N_("Moved into the room"), "int"),
                Column("lost", N_("Marked lost"), "int"),
            ),
            school_rows,
            chart=Chart("school_code", ("found", "missing"), N_("Found and missing per school")),
            totals=(total_label, None, *sums),
        ),
        Section(
            "by_room",
            N_("By room"),
            (
                Column("school_code", N_("School code")),
                Column("room", N_("Room")),
                Column("kind", N_("Room kind"), "code"),
                Column("last_counted", N_("Last counted"), "datetime"),
                Column("counts_this_term", N_("Counts this term"), "int"),
                Column("found", N_("Found here"), "int"),
                Column("missing", N_("Missing"), "int"),
                Column("unexpected", N_("Belongs elsewhere"), "int"),
                Column("moved", N_("Moved here"), "int"),
                Column("lost", N_("Marked lost"), "int"),
            ),
            room_rows,
        ),
        Section(
            "not_counted",
            N_("Rooms not counted this term"),
            (
                Column("school_code", N_("School code")),
                Column("room", N_("Room")),
                Column("kind", N_("Room kind"), "code"),
                Column("term_start", N_("Term began"), "date"),
                Column("last_counted", N_("Last counted"), "datetime"),
            ),
            never_rows,
            sheet=N_("Not counted this term"),
        ),
        Section(
            "missing_twice",
            N_("Devices missing in two consecutive counts"),
            (
                Column("asset_tag", N_("Asset tag")),
                Column("serial_number", N_("Serial number")),
                Column("model", N_("Model")),
                Column("school_code", N_("School code")),
                Column("room", N_("Room")),
                Column("first_missed", N_("First missed"), "datetime"),
                Column("missed_again", N_("Missed again"), "datetime"),
                Column("status", N_("Status"), "code"),
            ),
            twice_rows,
            sheet=N_("Missing twice"),
        ),
    ]
    summary = [
        SummaryItem("rooms", N_("Rooms"), sums[0], "int"),
        SummaryItem("rooms_counted", N_("Rooms counted this term"), sums[1], "int"),
        SummaryItem("rooms_not_counted", N_("Rooms not counted this term"), len(never_rows), "int"),
        SummaryItem("found", N_("Found in the last counts"), sums[2], "int"),
        SummaryItem("missing", N_("Missing in the last counts"), sums[3], "int"),
        SummaryItem("moved", N_("Moved into the room"), sums[5], "int"),
        SummaryItem("missing_twice", N_("Devices missing in two consecutive counts"), len(twice_rows), "int"),
    ]
    notes = [
        N_(
            "Figures are those of each room's last finished count up to the end date. This term is the "
            "school's term in the calendar that holds the end date; a school without one uses the report's "
            "start date. A device missing twice was neither scanned nor heard from by the network in the "
            "room's last two counts, and was not marked lost."
        )
    ]
    return ctx.report("stocktake", TITLE, summary, sections, notes)
