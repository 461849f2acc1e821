"""reliability: failures per 100 device-months, time between faults, downtime, firmware-update failures,
repairs and warranty claims, per model, supplier and purchase batch (order number)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from itertools import pairwise

from fleet.domain.clock import as_utc
from fleet.domain.enums import DeviceStatus
from fleet.i18n import _
from fleet.i18n.format import moment as fmt_moment
from fleet.services.reports.data import (
    DAYS_PER_MONTH,
    Context,
    Dev,
    ModelInfo,
    add_months,
    entries_into,
    seconds_in,
)
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem, ratio

TITLE = "Reliability by model, supplier and batch"
IN_SERVICE = frozenset({DeviceStatus.IN_SERVICE.value})
IN_REPAIR = frozenset({DeviceStatus.IN_REPAIR.value})


@dataclass
class Acc:
    devices: int = 0
    service_s: float = 0.0
    failures: int = 0
    repairs: int = 0
    repair_s: float = 0.0
    offline_s: float = 0.0
    fault_alerts: int = 0
    fw_attempts: int = 0
    fw_failures: int = 0
    claims: int = 0

    def add(self, o: Acc) -> None:
        for k in Acc.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))


def repairs_done(timeline: list[tuple[datetime, str]], start: datetime, end: datetime) -> int:
    """Repairs finished within the range: in_repair followed by in_service."""
    return sum(
        1
        for (_, a), (t, b) in pairwise(timeline)
        if a == DeviceStatus.IN_REPAIR and b == DeviceStatus.IN_SERVICE and start <= t < end
    )


def window_start(d: Dev, timeline: list[tuple[datetime, str]], start: datetime) -> datetime:
    """A device counts from the later of its purchase date and its first record (and not before the range):
    history recorded before the purchase (a demo, a test bench, a backdated import) is not its service
    life."""
    first_record = timeline[0][0] if timeline else as_utc(d.created_at)
    lo = max(start, first_record)
    if d.purchase_date is not None:
        lo = max(lo, datetime.combine(d.purchase_date, time(), tzinfo=UTC))
    return lo


def under_warranty(d: Dev, m: ModelInfo, at: datetime) -> bool:
    return d.purchase_date is not None and at.date() < add_months(d.purchase_date, m.warranty_months)


COLUMNS = (
    Column("devices", "Device count", "int"),
    Column("device_months", "Device-months in service", "float"),
    Column("failures", "Failures", "int"),
    Column("failures_per_100", "Failures per 100 device-months", "float"),
    Column("mtbf_days", "Mean time between faults (days)", "float"),
    Column("fault_alerts", "Fault alerts", "int"),
    Column("repair_hours", "In-repair hours", "float"),
    Column("offline_hours", "Unexpected offline hours", "float"),
    Column("downtime_hours", "Downtime hours", "float"),
    Column("fw_updates", "Firmware updates", "int"),
    Column("fw_failure_rate", "Firmware-update failure rate", "percent"),
    Column("repairs", "Repairs completed", "int"),
    Column("warranty_claims", "Warranty claims due", "int"),
)


def figures(a: Acc) -> tuple[object, ...]:
    months = a.service_s / 86400 / DAYS_PER_MONTH
    return (
        a.devices,
        round(months, 2),
        a.failures,
        round(a.failures * 100 / months, 2) if months else None,
        round(a.service_s / 86400 / a.failures, 1) if a.failures else None,
        a.fault_alerts,
        round(a.repair_s / 3600, 1),
        round(a.offline_s / 3600, 1),
        round((a.repair_s + a.offline_s) / 3600, 1),
        a.fw_attempts,
        ratio(a.fw_failures, a.fw_attempts),
        a.repairs,
        a.claims,
    )


async def per_device(ctx: Context) -> dict[int, Acc]:
    """Each device's reliability figures within the range."""
    start, end = ctx.scope.start_at, ctx.until
    models = await ctx.models()
    tls = await ctx.timelines()
    ctx.step("presence", 0, 1)
    offline = await ctx.unexpected_offline_seconds()
    alerts = await ctx.fault_alerts(open_only=False)
    fw = await ctx.firmware_outcomes()
    ctx.step("presence", 1, 1)
    out: dict[int, Acc] = {}
    devices = await ctx.all_devices()
    for i, d in enumerate(devices):
        tl = tls.get(d.id, [])
        if not tl and d.created_at >= ctx.scope.end_at:
            continue
        lo = window_start(d, tl, start)
        failures = entries_into(tl, DeviceStatus.IN_REPAIR, lo, end)
        attempts, fw_failed = fw.get(d.id, (0, 0))
        out[d.id] = Acc(
            devices=1,
            service_s=seconds_in(tl, IN_SERVICE, lo, end),
            failures=len(failures),
            repairs=repairs_done(tl, lo, end),
            repair_s=seconds_in(tl, IN_REPAIR, lo, end),
            offline_s=offline.get(d.id, 0.0),
            fault_alerts=len(alerts.get(d.id, ())),
            fw_attempts=attempts,
            fw_failures=fw_failed,
            claims=sum(under_warranty(d, models[d.model_id], t) for t in failures),
        )
        if i % 2000 == 0:
            ctx.step("devices", i, len(devices))
    ctx.step("devices", len(devices), len(devices))
    return out


async def build(ctx: Context) -> Report:
    models = await ctx.models()
    accs = await per_device(ctx)
    devs = {d.id: d for d in await ctx.all_devices()}

    def group(key: Callable[[Dev], tuple[object, ...]]) -> list[tuple[object, ...]]:
        groups: dict[tuple[object, ...], Acc] = defaultdict(Acc)
        for dev_id, a in accs.items():
            groups[key(devs[dev_id])].add(a)
        return [(*k, *figures(a)) for k, a in sorted(groups.items(), key=lambda kv: str(kv[0]))]

    by_model = group(lambda d: (models[d.model_id].label, models[d.model_id].supplier))
    by_supplier = group(lambda d: (models[d.model_id].supplier,))
    by_batch = group(
        lambda d: (d.order_number or "(none)", models[d.model_id].label, models[d.model_id].supplier)
    )
    total = Acc()
    for a in accs.values():
        total.add(a)
    t = dict(zip((c.key for c in COLUMNS), figures(total), strict=True))
    total_label = _("Total")
    sections = [
        Section(
            "by_model",
            "Per model",
            (Column("model", "Model"), Column("supplier", "Supplier"), *COLUMNS),
            by_model,
            chart=Chart(
                "model", ("failures_per_100",), "Failures per 100 device-months by model", horizontal=True
            ),
            totals=(total_label, None, *figures(total)),
        ),
        Section(
            "by_supplier",
            "Per supplier",
            (Column("supplier", "Supplier"), *COLUMNS),
            by_supplier,
            chart=Chart(
                "supplier",
                ("failures_per_100",),
                "Failures per 100 device-months by supplier",
                horizontal=True,
            ),
            totals=(total_label, *figures(total)),
        ),
        Section(
            "by_batch",
            "Per purchase batch (order number)",
            (
                Column("order_number", "Order number"),
                Column("model", "Model"),
                Column("supplier", "Supplier"),
                *COLUMNS,
            ),
            by_batch,
            totals=(total_label, None, None, *figures(total)),
            sheet="Per purchase batch",
        ),
    ]
    summary = [
        SummaryItem("devices", "Device count", t["devices"], "int"),
        SummaryItem("device_months", "Device-months in service", t["device_months"], "float"),
        SummaryItem("failures", "Failures", t["failures"], "int"),
        SummaryItem("failures_per_100", "Failures per 100 device-months", t["failures_per_100"], "float"),
        SummaryItem("mtbf_days", "Mean time between faults (days)", t["mtbf_days"], "float"),
        SummaryItem("downtime_hours", "Downtime hours", t["downtime_hours"], "float"),
        SummaryItem("fw_failure_rate", "Firmware-update failure rate", t["fw_failure_rate"], "percent"),
        SummaryItem("warranty_claims", "Warranty claims due", t["warranty_claims"], "int"),
    ]
    counted_to = min(ctx.scope.end_at, ctx.now)
    notes = [
        _(
            "Window: each device counts from the later of its purchase date and its first record in LabFleet "
            "(and not before {start}), up to {end}.",
            start=ctx.scope.start.isoformat(),
            end=fmt_moment(counted_to),
        ),
        _(
            "A failure is a device entering repair. Device-months count time in service within the window (a "
            "month is {days} days). Mean time between faults = days in service / failures.",
            days=f"{DAYS_PER_MONTH:.4f}",
        ),
        _("Downtime = hours in repair + hours offline when the timetable expected the device online."),
        _("A warranty claim is due for each failure that happened before the device's warranty ended."),
        _(
            "Firmware-update failure rate: rollout updates that finished within the range and failed or were "
            "rolled back, over all that finished (cancelled ones never ran)."
        ),
    ]
    return ctx.report("reliability", TITLE, summary, sections, notes)
