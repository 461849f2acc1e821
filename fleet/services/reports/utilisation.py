"""utilisation: active lesson minutes per device per week from the usage roll-ups, idle devices, full
rooms."""

from __future__ import annotations

from collections import defaultdict

from fleet.i18n import _
from fleet.services.reports.data import FIELDED, Context
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem, ratio

TITLE = "Utilisation"


async def build(ctx: Context) -> Report:
    ctx.step("usage", 0, 3)
    models = await ctx.models()
    rooms = await ctx.rooms()
    devices = [(d, s) for d, s in await ctx.devices_at_end() if s in FIELDED]
    ctx.step("usage", 1, 3)
    minutes = await ctx.active_minutes()
    ctx.step("usage", 2, 3)
    schools = ctx.scope.schools
    weeks = ctx.scope.days / 7
    threshold = ctx.settings.idle_minutes_per_week
    device_rows, idle_rows = [], []
    per_room: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # devices, minutes, idle
    per_model: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for d, status in devices:
        total = minutes.get(d.id, 0)
        per_week = round(total / weeks, 1)
        idle = per_week < threshold
        room = rooms.get(d.room_id) if d.room_id is not None else None
        row = (
            d.asset_tag,
            models[d.model_id].label,
            schools[d.school_id].code,
            room.name if room else "",
            status,
            total,
            per_week,
            idle,
        )
        device_rows.append(row)
        if idle:
            idle_rows.append(row)
        for acc in ((per_room[room.id],) if room else ()) + (per_model[d.model_id],):
            acc[0] += 1
            acc[1] += total
            acc[2] += int(idle)
    room_rows, over = [], []
    for rid, r in sorted(rooms.items(), key=lambda kv: (schools[kv[1].school_id].code, kv[1].name)):
        n, total, idle_n = per_room.get(rid, [0, 0, 0])
        per_dev_week = round(total / n / weeks, 1) if n else None
        room_rows.append(
            (schools[r.school_id].code, r.name, r.kind, r.capacity, n, total, per_dev_week, idle_n)
        )
        if r.capacity and n > r.capacity:
            over.append((schools[r.school_id].code, r.name, r.kind, r.capacity, n, n - r.capacity))
    model_rows = [
        (models[mid].label, n, total, round(total / n / weeks, 1), idle)
        for mid, (n, total, idle) in sorted(per_model.items(), key=lambda kv: models[kv[0]].label)
    ]
    idle_rows.sort(key=lambda r: (r[6], r[0]))
    ctx.step("usage", 3, 3)
    dev_cols = (
        Column("asset_tag", "Asset tag"),
        Column("model", "Model"),
        Column("school_code", "School code"),
        Column("room", "Room"),
        Column("status", "Status", "code"),
        Column("active_minutes", "Active minutes", "int"),
        Column("minutes_per_week", "Active minutes per week", "float"),
        Column("idle", "Idle", "bool"),
    )
    total_minutes = sum(r[5] for r in device_rows)
    total_label = _("Total")

    def per_device_week(minutes: int, n: int) -> float | None:
        """Over a group: its minutes per device per week (an average, never a sum of averages)."""
        return round(minutes / n / weeks, 1) if n else None

    idle_minutes = sum(r[5] for r in idle_rows)
    room_devices, room_minutes = sum(r[4] for r in room_rows), sum(r[5] for r in room_rows)
    sections = [
        Section(
            "by_model",
            "Per model",
            (
                Column("model", "Model"),
                Column("devices", "Device count", "int"),
                Column("active_minutes", "Active minutes", "int"),
                Column("minutes_per_device_week", "Minutes per device per week", "float"),
                Column("idle", "Idle devices", "int"),
            ),
            model_rows,
            chart=Chart(
                "model",
                ("minutes_per_device_week",),
                "Active minutes per device per week, by model",
                horizontal=True,
            ),
            totals=(
                total_label,
                len(device_rows),
                total_minutes,
                per_device_week(total_minutes, len(device_rows)),
                len(idle_rows),
            ),
        ),
        Section(
            "by_room",
            "Per room",
            (
                Column("school_code", "School code"),
                Column("room", "Room"),
                Column("room_kind", "Room kind", "code"),
                Column("capacity", "Capacity", "int"),
                Column("devices", "Devices placed", "int"),
                Column("active_minutes", "Active minutes", "int"),
                Column("minutes_per_device_week", "Minutes per device per week", "float"),
                Column("idle", "Idle devices", "int"),
            ),
            room_rows,
            # Devices not placed in a room are in no row here, so these sums can be below the per-model ones.
            totals=(
                total_label,
                None,
                None,
                sum(r[3] for r in room_rows),
                room_devices,
                room_minutes,
                per_device_week(room_minutes, room_devices),
                sum(r[7] for r in room_rows),
            ),
        ),
        Section(
            "idle",
            _("Idle devices (under {threshold} active minutes a week)", threshold=threshold),
            dev_cols,
            idle_rows,
            sheet="Idle devices",
            totals=(
                total_label,
                None,
                None,
                None,
                None,
                idle_minutes,
                per_device_week(idle_minutes, len(idle_rows)),
                None,
            ),
        ),
        Section(
            "over_capacity",
            "Rooms over capacity",
            (
                Column("school_code", "School code"),
                Column("room", "Room"),
                Column("room_kind", "Room kind", "code"),
                Column("capacity", "Capacity", "int"),
                Column("devices", "Devices placed", "int"),
                Column("excess", "Over by", "int"),
            ),
            over,
            totals=(
                total_label,
                None,
                None,
                sum(r[3] for r in over),
                sum(r[4] for r in over),
                sum(r[5] for r in over),
            ),
        ),
        Section(
            "by_device",
            "Per device",
            dev_cols,
            device_rows,
            totals=(
                total_label,
                None,
                None,
                None,
                None,
                total_minutes,
                per_device_week(total_minutes, len(device_rows)),
                None,
            ),
        ),
    ]
    summary = [
        SummaryItem("weeks", "Weeks in range", round(weeks, 2), "float"),
        SummaryItem("devices", "Fielded devices", len(device_rows), "int"),
        SummaryItem("active_minutes", "Active minutes", total_minutes, "int"),
        SummaryItem(
            "minutes_per_device_week",
            "Active minutes per device per week",
            round(total_minutes / len(device_rows) / weeks, 1) if device_rows else None,
            "float",
        ),
        SummaryItem("idle_threshold", "Idle threshold (minutes a week)", threshold, "int"),
        SummaryItem("idle", "Idle devices", len(idle_rows), "int"),
        SummaryItem("idle_share", "Idle share", ratio(len(idle_rows), len(device_rows)), "percent"),
        SummaryItem("rooms_over_capacity", "Rooms over capacity", len(over), "int"),
    ]
    notes = [
        (
            _(
                "Active minutes from the hourly usage roll-ups between {start} and {end} ({days} days = "
                "{weeks} "
                "weeks); fielded = provisioned, in service or in repair at the end.",
                start=ctx.scope.start.isoformat(),
                end=ctx.scope.end.isoformat(),
                days=ctx.scope.days,
                weeks=f"{weeks:.2f}",
            )
        ),
        "A room is over capacity when more devices are placed in it than its seat quota.",
    ]
    return ctx.report("utilisation", TITLE, summary, sections, notes)
