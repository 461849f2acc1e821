"""budget: spend by funding source, school and year with straight-line depreciation and book value; the AI
share
of the equipment budget against its target; planned replacements for the next year."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fleet.domain.enums import DeviceStatus, Ownership, RoomKind
from fleet.i18n import _
from fleet.i18n.format import money as fmt_money
from fleet.services.reports.data import (
    GONE,
    Context,
    Dev,
    ModelInfo,
    add_months,
    entries_into,
    full_months_between,
)
from fleet.services.reports.model import Chart, Column, Report, Section, SummaryItem, money, ratio

TITLE = "Budget, depreciation and replacements"
ZERO = Decimal(0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Spend:
    devices: int = 0
    spend: Decimal = ZERO
    ai_spend: Decimal = ZERO

    def add(self, cost: Decimal, ai: bool) -> None:
        self.devices += 1
        self.spend += cost
        self.ai_spend += cost if ai else ZERO


@dataclass
class Book:
    devices: int = 0
    cost: Decimal = ZERO
    book: Decimal = ZERO
    written_off: Decimal = ZERO

    def add(self, cost: Decimal, book: Decimal, gone: bool) -> None:
        self.devices += 1
        self.cost += cost
        self.book += book
        self.written_off += cost if gone else ZERO


def cost_of(d: Dev, m: ModelInfo) -> Decimal:
    """What the device cost; the model's price when the delivery did not record it."""
    return d.unit_cost if d.unit_cost is not None else m.unit_price


def book_value(cost: Decimal, months_elapsed: int, life_years: int) -> Decimal:
    """Straight-line: cost x (1 - elapsed whole months / life in months), never below zero, in cents."""
    remaining = max(0, life_years * 12 - months_elapsed)
    return money(cost * remaining / (life_years * 12))


async def build(ctx: Context) -> Report:
    ctx.step("devices", 0, 3)
    cfg = ctx.settings
    models = await ctx.models()
    rooms = await ctx.rooms()
    devices = await ctx.devices_at_end()
    tls = await ctx.timelines()
    ctx.step("devices", 1, 3)
    schools = ctx.scope.schools
    start, end, life = ctx.scope.start, ctx.scope.end, cfg.service_life_years
    ai_kinds = set(cfg.ai_device_kinds)

    def is_ai(d: Dev) -> bool:
        room = rooms.get(d.room_id) if d.room_id is not None else None
        return models[d.model_id].kind in ai_kinds or (room is not None and room.kind == RoomKind.AI_LAB)

    spend_src: dict[str, Spend] = defaultdict(Spend)
    spend_school: dict[int, Spend] = defaultdict(Spend)
    spend_year: dict[int, Spend] = defaultdict(Spend)
    dep_src: dict[str, Book] = defaultdict(Book)
    dep_school: dict[int, Book] = defaultdict(Book)
    leased = 0
    priced_from_model = 0
    replacements = []
    horizon = end + timedelta(days=365)
    for d, status in devices:
        m = models[d.model_id]
        if d.ownership == Ownership.LEASED:
            leased += 1
        elif d.purchase_date is not None and d.purchase_date <= end:
            cost = cost_of(d, m)
            priced_from_model += d.unit_cost is None
            ai = is_ai(d)
            src = d.funding_source or "(unspecified)"
            if start <= d.purchase_date:
                for spend in (spend_src[src], spend_school[d.school_id], spend_year[d.purchase_date.year]):
                    spend.add(cost, ai)
            gone = status in GONE
            book = ZERO if gone else book_value(cost, full_months_between(d.purchase_date, end), life)
            for acc in (dep_src[src], dep_school[d.school_id]):
                acc.add(cost, book, gone)
        if status in GONE or status == DeviceStatus.ORDERED:
            continue
        failures = len(entries_into(tls.get(d.id, []), DeviceStatus.IN_REPAIR, EPOCH, ctx.scope.end_at))
        end_of_life = add_months(d.purchase_date, life * 12) if d.purchase_date else None
        reasons = []
        if end_of_life is not None and end_of_life <= horizon:
            reasons.append(_("past service life") if end_of_life <= end else _("service life ends next year"))
        if failures >= cfg.replace_after_failures:
            reasons.append(_("{n} failures", n=failures))
        if reasons:
            replacements.append(
                (
                    d.asset_tag,
                    m.label,
                    m.supplier,
                    schools[d.school_id].code,
                    status,
                    d.purchase_date,
                    end_of_life,
                    failures,
                    "; ".join(reasons),
                    money(m.unit_price),
                )
            )
    ctx.step("devices", 2, 3)

    budget_given = ctx.query.budget if ctx.query.budget is not None else cfg.equipment_budget
    target = cfg.ai_budget_target_share
    year_rows = []
    years = list(range(start.year, end.year + 1))
    for year in years:
        y = spend_year.get(year, Spend())
        budget = budget_given if budget_given is not None else y.spend
        share = ratio(y.ai_spend, budget)
        # A year without spend has no share to measure: it says so, rather than "target missed".
        met = None if not y.devices else share is not None and share >= target
        year_rows.append(
            (
                year,
                y.devices,
                money(y.spend),
                money(y.ai_spend),
                money(budget),
                share if y.devices else None,
                target,
                met,
                _("no spend") if met is None else _("met") if met else _("not met"),
            )
        )
    total_spend = sum((a.spend for a in spend_year.values()), ZERO)
    total_ai = sum((a.ai_spend for a in spend_year.values()), ZERO)
    # A yearly budget counts once for each calendar year the range touches.
    total_budget = budget_given * len(years) if budget_given is not None else total_spend
    total_share = ratio(total_ai, total_budget) if total_spend else None
    total_label = _("Total")

    def spend_tail(accs: Iterable[Spend]) -> tuple[object, ...]:
        items = list(accs)
        return (
            sum(a.devices for a in items),
            money(sum((a.spend for a in items), ZERO)),
            money(sum((a.ai_spend for a in items), ZERO)),
        )

    def book_sum(accs: Iterable[Book]) -> Book:
        out = Book()
        for a in accs:
            out.devices += a.devices
            out.cost += a.cost
            out.book += a.book
            out.written_off += a.written_off
        return out

    def dep_row(acc: Book) -> tuple[object, ...]:
        return (
            acc.devices,
            money(acc.cost),
            money(acc.cost - acc.book - acc.written_off),
            money(acc.written_off),
            money(acc.book),
        )

    src_rows = [(k, a.devices, money(a.spend), money(a.ai_spend)) for k, a in sorted(spend_src.items())]
    school_rows = [
        (schools[k].code, schools[k].name, a.devices, money(a.spend), money(a.ai_spend))
        for k, a in sorted(spend_school.items(), key=lambda kv: schools[kv[0]].code)
    ]
    dep_src_rows = [(k, *dep_row(a)) for k, a in sorted(dep_src.items())]
    dep_school_rows = [
        (schools[k].code, schools[k].name, *dep_row(a))
        for k, a in sorted(dep_school.items(), key=lambda kv: schools[kv[0]].code)
    ]
    replacements.sort(key=lambda r: (r[1], r[0]))
    repl_model: dict[str, tuple[int, Decimal]] = {}
    for r in replacements:
        count, _price = repl_model.get(r[1], (0, ZERO))
        repl_model[r[1]] = (count + 1, r[9])
    repl_model_rows = [(k, n, price, money(price * n)) for k, (n, price) in sorted(repl_model.items())]
    book_total = money(sum((a.book for a in dep_src.values()), ZERO))
    cost_total = money(sum((a.cost for a in dep_src.values()), ZERO))
    repl_cost = money(sum((r[9] for r in replacements), ZERO))
    ctx.step("devices", 3, 3)
    spend_cols = (
        Column("devices", "Devices bought", "int"),
        Column("spend", "Spend", "money"),
        Column("ai_spend", "Spend on AI devices", "money"),
    )
    dep_cols = (
        Column("devices", "Owned devices", "int"),
        Column("cost", "Purchase cost", "money"),
        Column("depreciation", "Accumulated depreciation", "money"),
        Column("written_off", "Written off (retired or lost)", "money"),
        Column("book_value", "Book value", "money"),
    )
    sections = [
        Section(
            "ai_share",
            "AI share of the equipment budget",
            (
                Column("year", "Year", "year"),
                Column("devices", "Devices bought", "int"),
                Column("spend", "Spend", "money"),
                Column("ai_spend", "Spend on AI devices", "money"),
                Column("budget", "Equipment budget", "money"),
                Column("ai_share", "AI share", "percent"),
                Column("target", "Target share", "percent"),
                Column("met", "Target met", "bool"),
                Column("result", "Result"),
            ),
            year_rows,
            totals=(
                total_label,
                sum(y.devices for y in spend_year.values()),
                money(total_spend),
                money(total_ai),
                money(total_budget),
                total_share,
                target,
                None if total_share is None else total_share >= target,
                _("no spend") if total_share is None else _("met") if total_share >= target else _("not met"),
            ),
            chart=Chart("year", ("spend", "ai_spend"), "Equipment spend and spend on AI devices per year"),
            sheet="AI share",
        ),
        Section(
            "spend_by_source",
            "Spend by funding source",
            (Column("funding_source", "Funding source"), *spend_cols),
            src_rows,
            chart=Chart("funding_source", ("spend",), "Spend by funding source", horizontal=True),
            totals=(total_label, *spend_tail(spend_src.values())),
        ),
        Section(
            "spend_by_school",
            "Spend by school",
            (Column("school_code", "School code"), Column("school", "School"), *spend_cols),
            school_rows,
            totals=(total_label, None, *spend_tail(spend_school.values())),
        ),
        Section(
            "book_by_source",
            "Depreciation and book value by funding source",
            (Column("funding_source", "Funding source"), *dep_cols),
            dep_src_rows,
            totals=(total_label, *dep_row(book_sum(dep_src.values()))),
            sheet="Book value by funding source",
        ),
        Section(
            "book_by_school",
            "Depreciation and book value by school",
            (Column("school_code", "School code"), Column("school", "School"), *dep_cols),
            dep_school_rows,
            totals=(total_label, None, *dep_row(book_sum(dep_school.values()))),
            sheet="Book value by school",
        ),
        Section(
            "replacements",
            "Planned replacements for the next year",
            (
                Column("asset_tag", "Asset tag"),
                Column("model", "Model"),
                Column("supplier", "Supplier"),
                Column("school_code", "School code"),
                Column("status", "Status", "code"),
                Column("purchase_date", "Purchased", "date"),
                Column("end_of_life", "Service life ends", "date"),
                Column("failures", "Failures (lifetime)", "int"),
                Column("reason", "Reason"),
                Column("unit_price", "Current unit price", "money"),
            ),
            replacements,
            sheet="Planned replacements",
            totals=(total_label, None, None, None, None, None, None, None, None, repl_cost),
        ),
        Section(
            "replacements_by_model",
            "Planned replacements per model",
            (
                Column("model", "Model"),
                Column("devices", "Device count", "int"),
                Column("unit_price", "Current unit price", "money"),
                Column("cost", "Replacement cost", "money"),
            ),
            repl_model_rows,
            chart=Chart("model", ("cost",), "Planned replacement cost per model", horizontal=True),
            totals=(total_label, len(replacements), None, repl_cost),
        ),
    ]
    summary = [
        SummaryItem("spend", "Equipment spend in range", money(total_spend), "money"),
        SummaryItem("ai_spend", "Spend on AI devices", money(total_ai), "money"),
        SummaryItem("budget", "Equipment budget for the range", money(total_budget), "money"),
        SummaryItem("ai_share", "AI share", total_share, "percent"),
        SummaryItem("ai_target_share", "AI target share", target, "percent"),
        SummaryItem(
            "ai_target_met", "AI target met", None if total_share is None else total_share >= target, "bool"
        ),
        SummaryItem("cost_owned", "Purchase cost of owned devices", cost_total, "money"),
        SummaryItem("book_value", _("Book value on {end}", end=end.isoformat()), book_total, "money"),
        SummaryItem("leased", "Leased devices (not depreciated)", leased, "int"),
        SummaryItem(
            "priced_from_model",
            "Owned devices priced at their model's price (no recorded cost)",
            priced_from_model,
            "int",
        ),
        SummaryItem("replacements", "Planned replacements next year", len(replacements), "int"),
        SummaryItem("replacement_cost", "Planned replacement cost", repl_cost, "money"),
    ]
    budget_note = (
        _("an equipment budget of {amount} a year", amount=fmt_money(money(budget_given)))
        if budget_given is not None
        else _("the actual equipment spend of each year (no budget set)")
    )
    notes = [
        *(
            [_("No equipment spend in the range: there is no AI share to measure.")]
            if not total_spend
            else []
        ),
        _(
            "{n} owned devices have no recorded cost and are counted at their model's unit price.",
            n=priced_from_model,
        ),
        _(
            "Spend counts owned devices purchased {start}..{end} at their recorded cost (the model's price "
            "if "
            "none).",
            start=start.isoformat(),
            end=end.isoformat(),
        ),
        _(
            "Depreciation: straight-line over {life} years by whole months since purchase; retired and lost "
            "devices are written off. Leased devices are not capital spend.",
            life=life,
        ),
        _(
            "AI devices: kinds {kinds} or placed in an AI lab. The share is measured against {basis}.",
            kinds=", ".join(sorted(ai_kinds)),
            basis=budget_note,
        ),
        _(
            "Replacements: devices whose {life}-year service life ends by {horizon}, or with at least {n} "
            "failures, at their model's current unit price.",
            life=life,
            horizon=horizon.isoformat(),
            n=cfg.replace_after_failures,
        ),
    ]
    return ctx.report("budget", TITLE, summary, sections, notes)
