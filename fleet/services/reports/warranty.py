"""warranty: warranties ending soon, devices out of warranty with open faults, and their replacement cost."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

from fleet.domain.enums import DeviceStatus
from fleet.i18n import _
from fleet.services.reports.data import GONE, Context, add_months
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem, money

TITLE = "Warranty"


async def build(ctx: Context) -> Report:
    ctx.step("devices", 0, 2)
    models = await ctx.models()
    devices = await ctx.devices_at_end()
    open_faults = await ctx.fault_alerts(open_only=True)
    ctx.step("devices", 1, 2)
    schools = ctx.scope.schools
    as_of = ctx.scope.end
    horizon = ctx.settings.warranty_horizon_days
    expiring, faulty = [], []
    no_date = 0
    expiring_n: Counter[int] = Counter()
    faulty_n: Counter[int] = Counter()
    for d, status in devices:
        if status in GONE:
            continue
        m = models[d.model_id]
        if d.purchase_date is None:
            no_date += 1
            continue
        ends = add_months(d.purchase_date, m.warranty_months)
        if as_of < ends <= as_of + timedelta(days=horizon):
            expiring.append(
                (
                    d.asset_tag,
                    d.serial_number,
                    m.label,
                    m.supplier,
                    schools[d.school_id].code,
                    status,
                    d.purchase_date,
                    ends,
                    (ends - as_of).days,
                    money(m.unit_price),
                )
            )
            expiring_n[d.model_id] += 1
        elif ends <= as_of:
            reasons = (["in repair"] if status == DeviceStatus.IN_REPAIR else []) + sorted(
                {rule for rule, _at in open_faults.get(d.id, ())}
            )
            if reasons:
                faulty.append(
                    (
                        d.asset_tag,
                        d.serial_number,
                        m.label,
                        m.supplier,
                        schools[d.school_id].code,
                        status,
                        ends,
                        "; ".join(reasons),
                        money(m.unit_price),
                    )
                )
                faulty_n[d.model_id] += 1
    ctx.step("devices", 2, 2)
    expiring.sort(key=lambda r: (r[7], r[0]))
    faulty.sort(key=lambda r: (r[6], r[0]))
    model_rows = [
        (
            models[mid].label,
            models[mid].supplier,
            expiring_n[mid],
            faulty_n[mid],
            money(models[mid].unit_price),
            money(models[mid].unit_price * faulty_n[mid]),
        )
        for mid in sorted(set(expiring_n) | set(faulty_n), key=lambda k: models[k].label)
    ]
    replacement = money(sum((r[8] for r in faulty), Decimal(0)))
    expiring_cost = money(sum((r[9] for r in expiring), Decimal(0)))
    total_label = _("Total")
    ident = (
        Column("asset_tag", "Asset tag"),
        Column("serial_number", "Serial number"),
        Column("model", "Model"),
        Column("supplier", "Supplier"),
        Column("school_code", "School code"),
        Column("status", "Status", "code"),
    )
    sections = [
        Section(
            "expiring",
            _("Warranty ends within {horizon} days", horizon=horizon),
            (
                *ident,
                Column("purchase_date", "Purchased", "date"),
                Column("warranty_end", "Warranty ends", "date"),
                Column("days_left", "Days left", "int"),
                Column("unit_price", "Current unit price", "money"),
            ),
            expiring,
            totals=(total_label, None, None, None, None, None, None, None, None, expiring_cost),
        ),
        Section(
            "out_with_faults",
            "Out of warranty with open faults",
            (
                *ident,
                Column("warranty_end", "Warranty ended", "date"),
                Column("faults", "Open faults"),
                Column("replacement_cost", "Estimated replacement cost", "money"),
            ),
            faulty,
            sheet="Out of warranty, faulty",
            totals=(total_label, None, None, None, None, None, None, None, replacement),
        ),
        Section(
            "by_model",
            "Per model",
            (
                Column("model", "Model"),
                Column("supplier", "Supplier"),
                Column("expiring", "Ending soon", "int"),
                Column("out_with_faults", "Out of warranty with faults", "int"),
                Column("unit_price", "Current unit price", "money"),
                Column("replacement_cost", "Estimated replacement cost", "money"),
            ),
            model_rows,
            chart=Chart(
                "model", ("expiring", "out_with_faults"), "Warranty exposure per model", horizontal=True
            ),
            totals=(
                total_label,
                None,
                len(expiring),
                len(faulty),
                None,
                money(sum((r[5] for r in model_rows), Decimal(0))),
            ),
        ),
    ]
    summary = [
        SummaryItem("as_of", "As of", as_of, "date"),
        SummaryItem("horizon_days", "Horizon (days)", horizon, "int"),
        SummaryItem("expiring", "Warranties ending within the horizon", len(expiring), "int"),
        SummaryItem(
            "expiring_value", "Current price of devices whose warranty ends soon", expiring_cost, "money"
        ),
        SummaryItem("out_with_faults", "Out of warranty with open faults", len(faulty), "int"),
        SummaryItem(
            "replacement_cost", "Estimated replacement cost (out of warranty, faulty)", replacement, "money"
        ),
        SummaryItem("no_purchase_date", "Devices without a purchase date (warranty unknown)", no_date, "int"),
    ]
    notes = [
        (
            "Warranty ends purchase date + the model's warranty months. Open faults are critical alerts not "
            "yet "
            "resolved, or the device being in repair. Replacement cost is the model's current unit price."
        )
    ]
    return ctx.report("warranty", TITLE, summary, sections, notes)
