"""coverage: rooms equipped and devices deployed against the plan targets, per school and room kind."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from fleet.domain.enums import DeviceKind, RoomKind
from fleet.i18n import _
from fleet.services.reports.data import FIELDED, Context
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem, ratio

TITLE = "Coverage against the plan"


async def build(ctx: Context) -> Report:
    """A room is equipped when its deployed devices reach its quota (at least one device when it has none)."""
    ctx.step("devices", 0, 3)
    models = await ctx.models()
    rooms = await ctx.rooms()
    devices = await ctx.devices_at_end()
    ctx.step("devices", 1, 3)
    deployed_in_room: Counter[int] = Counter()
    terminals_in_room: Counter[int] = Counter()
    terminals_by_school: Counter[int] = Counter()
    for d, status in devices:
        if status not in FIELDED:
            continue
        is_terminal = models[d.model_id].kind == DeviceKind.TERMINAL
        if is_terminal:
            terminals_by_school[d.school_id] += 1
        if d.room_id is not None and d.room_id in rooms:
            deployed_in_room[d.room_id] += 1
            terminals_in_room[d.room_id] += is_terminal

    def equipped(room_id: int) -> bool:
        return deployed_in_room[room_id] >= max(rooms[room_id].capacity, 1)

    per: dict[tuple[int, str], list[int]] = defaultdict(
        lambda: [0, 0, 0, 0, 0]
    )  # rooms, equipped, quota, dev, term
    below = []
    for r in rooms.values():
        acc = per[(r.school_id, r.kind)]
        acc[0] += 1
        acc[1] += equipped(r.id)
        acc[2] += r.capacity
        acc[3] += deployed_in_room[r.id]
        acc[4] += terminals_in_room[r.id]
        if deployed_in_room[r.id] < r.capacity:
            below.append(r)
    ctx.step("devices", 2, 3)
    schools = ctx.scope.schools
    by_school_kind = [
        (schools[sid].code, schools[sid].name, kind, a[0], a[1], a[2], a[3], a[4], ratio(a[3], a[2]))
        for (sid, kind), a in sorted(per.items(), key=lambda kv: (schools[kv[0][0]].code, kv[0][1]))
    ]

    equipped_by_kind: Counter[str] = Counter()
    rooms_by_kind: Counter[str] = Counter()
    for r in rooms.values():
        rooms_by_kind[r.kind] += 1
        equipped_by_kind[r.kind] += equipped(r.id)
    districts = ctx.scope.district_ids
    targets = ctx.settings.targets_for(next(iter(districts)) if len(districts) == 1 else None)
    terminals = sum(terminals_by_school.values())
    plan = [
        (
            _("Smart classrooms equipped"),
            targets.smart_classrooms,
            equipped_by_kind[RoomKind.SMART_CLASSROOM],
            rooms_by_kind[RoomKind.SMART_CLASSROOM],
            ratio(equipped_by_kind[RoomKind.SMART_CLASSROOM], targets.smart_classrooms),
        ),
        (
            _("Digital labs equipped"),
            targets.digital_labs,
            equipped_by_kind[RoomKind.DIGITAL_LAB],
            rooms_by_kind[RoomKind.DIGITAL_LAB],
            ratio(equipped_by_kind[RoomKind.DIGITAL_LAB], targets.digital_labs),
        ),
        ("AI labs equipped", None, equipped_by_kind[RoomKind.AI_LAB], rooms_by_kind[RoomKind.AI_LAB], None),
        ("Terminals deployed", targets.terminals, terminals, None, ratio(terminals, targets.terminals)),
    ]
    per_school = []
    for sid, s in sorted(schools.items(), key=lambda kv: kv[1].code):
        rs = [r for r in rooms.values() if r.school_id == sid]
        per_school.append(
            (
                s.code,
                s.name,
                len(rs),
                sum(equipped(r.id) for r in rs),
                sum(r.capacity for r in rs),
                sum(deployed_in_room[r.id] for r in rs),
                terminals_by_school[sid],
            )
        )
    below_rows = sorted(
        (
            (
                schools[r.school_id].code,
                r.name,
                r.kind,
                r.capacity,
                deployed_in_room[r.id],
                r.capacity - deployed_in_room[r.id],
            )
            for r in below
        ),
        key=lambda t: (-t[5], t[0], t[1]),
    )
    ctx.step("devices", 3, 3)
    total_label = _("Total")

    def column_sums(rows: Sequence[tuple[Any, ...]], first: int, last: int) -> list[int]:
        """Sums of the count columns first..last (inclusive) over the rows."""
        return [sum(int(r[i]) for r in rows) for i in range(first, last + 1)]

    school_sums = column_sums(per_school, 2, 6)
    kind_sums = column_sums(by_school_kind, 3, 7)
    below_sums = column_sums(below_rows, 3, 5)
    sections = [
        Section(
            "plan",
            "Progress against the plan",
            (
                Column("metric", "Metric"),
                Column("target", "Target", "int"),
                Column("actual", "Actual", "int"),
                Column("rooms", "Rooms of this kind", "int"),
                Column("share", "Share of target", "percent"),
            ),
            plan,
            note="Targets from settings (per district when set). A room is equipped when its deployed "
            "devices reach its quota.",
            chart=Chart("metric", ("target", "actual"), "Progress against the plan", horizontal=True),
        ),
        Section(
            "by_school",
            "Per school",
            (
                Column("school_code", "School code"),
                Column("school", "School"),
                Column("rooms", "Rooms", "int"),
                Column("equipped", "Rooms equipped", "int"),
                Column("quota", "Device quota", "int"),
                Column("deployed", "Devices deployed in rooms", "int"),
                Column("terminals", "Terminals deployed", "int"),
            ),
            per_school,
            chart=Chart("school_code", ("quota", "deployed"), "Device quota and devices deployed per school"),
            totals=(total_label, None, *school_sums),
        ),
        Section(
            "by_school_kind",
            "Per school and room kind",
            (
                Column("school_code", "School code"),
                Column("school", "School"),
                Column("room_kind", "Room kind", "code"),
                Column("rooms", "Rooms", "int"),
                Column("equipped", "Rooms equipped", "int"),
                Column("quota", "Device quota", "int"),
                Column("deployed", "Devices deployed", "int"),
                Column("terminals", "Terminals deployed", "int"),
                Column("fill", "Quota filled", "percent"),
            ),
            by_school_kind,
            # Quota filled over the scope: devices deployed against the summed quota, not a sum of shares.
            totals=(total_label, None, None, *kind_sums, ratio(kind_sums[3], kind_sums[2])),
        ),
        Section(
            "below_quota",
            "Rooms below their device quota",
            (
                Column("school_code", "School code"),
                Column("room", "Room"),
                Column("room_kind", "Room kind", "code"),
                Column("quota", "Device quota", "int"),
                Column("deployed", "Devices deployed", "int"),
                Column("shortfall", "Shortfall", "int"),
            ),
            below_rows,
            totals=(total_label, None, None, *below_sums),
        ),
    ]
    summary = [
        SummaryItem("smart_classrooms_equipped", "Smart classrooms equipped", plan[0][2], "int"),
        SummaryItem("smart_classrooms_target", "Smart classrooms target", targets.smart_classrooms, "int"),
        SummaryItem("digital_labs_equipped", "Digital labs equipped", plan[1][2], "int"),
        SummaryItem("digital_labs_target", "Digital labs target", targets.digital_labs, "int"),
        SummaryItem("terminals_deployed", "Terminals deployed", terminals, "int"),
        SummaryItem("terminals_target", "Terminals target", targets.terminals, "int"),
        SummaryItem("rooms_below_quota", "Rooms below their device quota", len(below_rows), "int"),
    ]
    return ctx.report(
        "coverage",
        TITLE,
        summary,
        sections,
        [
            _(
                "Status as of {end}; deployed = provisioned, in service or in repair.",
                end=ctx.scope.end.isoformat(),
            )
        ],
    )
