"""inventory: devices by model, supplier, status and school; owned against leased; age buckets."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal

from fleet.domain.enums import DeviceStatus, Ownership
from fleet.i18n import _
from fleet.services.reports.data import Context, full_months_between
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem, money

TITLE = "Inventory"
# Age buckets in whole years since purchase: (label, lower bound inclusive, upper bound exclusive).
AGE_BUCKETS = (
    ("under 1 year", 0, 1),
    ("1-2 years", 1, 2),
    ("2-3 years", 2, 3),
    ("3-5 years", 3, 5),
    ("5 years or more", 5, 10_000),
)
STATUSES = [s.value for s in DeviceStatus]


@dataclass
class Tally:
    devices: int = 0
    owned: int = 0
    leased: int = 0
    in_service: int = 0
    in_repair: int = 0
    cost: Decimal = Decimal(0)
    leased_value: Decimal = Decimal(0)

    def add(self, leased: bool, status: str, cost: Decimal) -> None:
        self.devices += 1
        self.owned += not leased
        self.leased += leased
        self.in_service += status == DeviceStatus.IN_SERVICE
        self.in_repair += status == DeviceStatus.IN_REPAIR
        # Leased devices are never capital spend: their value is kept in its own column.
        if leased:
            self.leased_value += cost
        else:
            self.cost += cost


async def build(ctx: Context) -> Report:
    ctx.step("devices", 0, 2)
    models = await ctx.models()
    devices = await ctx.devices_at_end()
    ctx.step("devices", 1, 2)
    schools = ctx.scope.schools
    by_model: dict[int, Tally] = defaultdict(Tally)
    by_supplier: dict[str, Tally] = defaultdict(Tally)
    by_school: dict[int, Tally] = defaultdict(Tally)
    by_status: Counter[str] = Counter()
    ages: Counter[str] = Counter()
    age_owned: Counter[str] = Counter()
    total = Tally()
    priced_from_model = 0
    for d, status in devices:
        m = models[d.model_id]
        # No recorded cost: the model's price, as the docs say, and the report counts how many.
        cost = d.unit_cost if d.unit_cost is not None else m.unit_price
        priced_from_model += d.unit_cost is None
        leased = d.ownership == Ownership.LEASED
        total.add(leased, status, cost)
        for acc in (by_model[d.model_id], by_supplier[m.supplier], by_school[d.school_id]):
            acc.add(leased, status, cost)
        by_status[status] += 1
        if d.purchase_date is None:
            bucket = "unknown purchase date"
        else:
            years = full_months_between(d.purchase_date, ctx.scope.end) // 12
            bucket = next(label for label, lo, hi in AGE_BUCKETS if lo <= years < hi)
        ages[bucket] += 1
        age_owned[bucket] += not leased
    ctx.step("devices", 2, 2)
    common = (
        Column("devices", "Device count", "int"),
        Column("owned", "Owned", "int"),
        Column("leased", "Leased", "int"),
        Column("in_service", "In service", "int"),
        Column("in_repair", "In repair", "int"),
        Column("cost", "Purchase cost (owned)", "money"),
        Column("leased_value", "Value of leased devices", "money"),
    )

    def tail(acc: Tally) -> tuple[object, ...]:
        return (
            acc.devices,
            acc.owned,
            acc.leased,
            acc.in_service,
            acc.in_repair,
            money(acc.cost),
            money(acc.leased_value),
        )

    total_label = _("Total")

    model_rows = [
        (models[mid].label, models[mid].kind, models[mid].supplier, *tail(acc))
        for mid, acc in sorted(by_model.items(), key=lambda kv: models[kv[0]].label)
    ]
    supplier_rows = [(sup, *tail(acc)) for sup, acc in sorted(by_supplier.items())]
    school_rows = [
        (schools[sid].code, schools[sid].name, *tail(acc))
        for sid, acc in sorted(by_school.items(), key=lambda kv: schools[kv[0]].code)
    ]
    status_rows = [(s, by_status[s]) for s in STATUSES if by_status[s]]
    age_labels = [label for label, _lo, _hi in AGE_BUCKETS] + ["unknown purchase date"]
    age_rows = [
        (label, ages[label], age_owned[label], ages[label] - age_owned[label]) for label in age_labels
    ]
    leased_n = total.leased
    sections = [
        Section(
            "by_model",
            "By model",
            (
                Column("model", "Model"),
                Column("kind", "Kind", "code"),
                Column("supplier", "Supplier"),
                *common,
            ),
            model_rows,
            chart=Chart("model", ("devices",), "Devices per model", horizontal=True),
            totals=(total_label, None, None, *tail(total)),
        ),
        Section(
            "by_supplier",
            "By supplier",
            (Column("supplier", "Supplier"), *common),
            supplier_rows,
            totals=(total_label, *tail(total)),
        ),
        Section(
            "by_status",
            "By lifecycle status",
            (Column("status", "Status", "code"), Column("devices", "Device count", "int")),
            status_rows,
            chart=Chart("status", ("devices",), "Devices per lifecycle status"),
            totals=(total_label, len(devices)),
        ),
        Section(
            "by_school",
            "By school",
            (Column("school_code", "School code"), Column("school", "School"), *common),
            school_rows,
            totals=(total_label, None, *tail(total)),
        ),
        Section(
            "age",
            "Age since purchase",
            (
                Column("age", "Age"),
                Column("devices", "Device count", "int"),
                Column("owned", "Owned", "int"),
                Column("leased", "Leased", "int"),
            ),
            age_rows,
            chart=Chart("age", ("owned", "leased"), "Devices by age since purchase"),
            totals=(total_label, total.devices, total.owned, total.leased),
        ),
    ]
    summary = [
        SummaryItem("devices", "Device count", total.devices, "int"),
        SummaryItem("owned", "Owned", total.owned, "int"),
        SummaryItem("leased", "Leased", leased_n, "int"),
        SummaryItem("in_service", "In service", by_status[DeviceStatus.IN_SERVICE], "int"),
        SummaryItem("in_repair", "In repair", by_status[DeviceStatus.IN_REPAIR], "int"),
        SummaryItem("models", "Models", len(by_model), "int"),
        SummaryItem("suppliers", "Suppliers", len(by_supplier), "int"),
        SummaryItem("purchase_cost", "Purchase cost of owned devices", money(total.cost), "money"),
        SummaryItem(
            "leased_value", "Value of leased devices (not capital spend)", money(total.leased_value), "money"
        ),
        SummaryItem(
            "priced_from_model",
            "Devices priced at their model's price (no recorded cost)",
            priced_from_model,
            "int",
        ),
    ]
    return ctx.report(
        "inventory",
        TITLE,
        summary,
        sections,
        [
            _(
                "Devices and their status as of {end}; age in whole years since purchase.",
                end=ctx.scope.end.isoformat(),
            ),
            _(
                "Purchase cost counts owned devices only; leased devices are shown apart and are never "
                "capital "
                "spend. {n} devices have no recorded cost and are counted at their model's unit price.",
                n=priced_from_model,
            ),
        ],
    )
