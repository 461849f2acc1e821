"""Asset labels: choose devices (a room, a school, a delivery, a search, a list) and print their labels as a
PDF - a QR code with the device's console URL or asset tag, the asset tag and serial number in text, the
school's name - on A4 label sheets or a label roll (`fleet.domain.asset_labels` has the sheet geometry).

The same use case serves `POST /api/v1/labels`, the console's "Print labels" forms and `labfleet labels`.
The page is printed by the reports' PDF engine (`fleet.services.reports.pdf`: headless Chromium, WeasyPrint as
fallback) with the CJK face embedded as a named subset, so Chinese school names print and stay searchable.
QR codes are vector SVG from segno: sharp at any printer resolution and a few kilobytes per sheet.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import segno
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.asset_labels import LAYOUTS, MAX_LABELS, SHEETS, LabelContent, Sheet, qr_payload
from fleet.domain.enums import DeviceStatus
from fleet.domain.permissions import Permission, Principal
from fleet.errors import FeatureUnavailable, InvalidInput, NotFound
from fleet.i18n import _
from fleet.persistence.models import AuditEntry, Device, DeviceModel, DeviceTransition, Room, School
from fleet.persistence.models_mqtt import DeviceState
from fleet.services import audit
from fleet.services.common import check_school, require, scope_schools

CONTENTS = tuple(c.value for c in LabelContent)
# An explicit list names at most one job's worth of devices (see MAX_LABELS).
MAX_LISTED = MAX_LABELS
# The audit action a device import records; its entry id is the delivery's number.
DELIVERY_ACTION = "import.devices"
# The reason import_devices gives the lifecycle row of every device it creates.
IMPORTED = "imported"


@dataclass(frozen=True, slots=True)
class Selection:
    """Which devices get labels; every given filter applies (a room's devices of one delivery, ...)."""

    room_id: int | None = None
    school_id: int | None = None
    delivery_id: int | None = None  # the audit entry of a device import (`labfleet audit`, the console)
    text: str | None = None  # the device search's prefix match on serial, asset tag or model number
    status: str | None = None
    online: bool | None = None
    serials: tuple[str, ...] = ()  # serial numbers or asset tags
    device_ids: tuple[int, ...] = field(default=())

    def is_empty(self) -> bool:
        """Nothing chosen (blank text and blank list entries choose nothing: they must not mean "all")."""
        listed = any(s.strip() for s in self.serials)
        text = bool(self.text and self.text.strip())
        return not (
            self.room_id or self.school_id or self.delivery_id or text or listed or self.device_ids
        ) and (self.status is None and self.online is None)

    def as_audit(self) -> dict[str, Any]:
        """The selection as the audit log keeps it (an explicit list by its size, not its members)."""
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("room", self.room_id),
                ("school", self.school_id),
                ("delivery", self.delivery_id),
                ("text", self.text),
                ("status", self.status),
                ("online", self.online),
            )
            if v is not None
        }
        if self.serials:
            out["serials"] = len(self.serials)
        if self.device_ids:
            out["devices"] = len(self.device_ids)
        return out


@dataclass(frozen=True, slots=True)
class Label:
    device_id: int
    asset_tag: str
    serial_number: str
    school: str
    room: str | None
    payload: str  # what the QR code carries


@dataclass(frozen=True, slots=True)
class LabelFile:
    pdf: bytes
    count: int
    pages: int
    layout: str

    @property
    def filename(self) -> str:
        return f"labels-{self.layout}-{self.count}.pdf"


def parse_layout(layout: str) -> Sheet:
    sheet = SHEETS.get(layout)
    if sheet is None:
        raise InvalidInput(
            _("layout must be one of {layouts}", layouts=", ".join(LAYOUTS)),
            details=[{"field": "layout", "reason": "unknown layout"}],
        )
    return sheet


def parse_content(content: str) -> LabelContent:
    if content not in CONTENTS:
        raise InvalidInput(
            _("content must be one of {contents}", contents=", ".join(CONTENTS)),
            details=[{"field": "content", "reason": "unknown content"}],
        )
    return LabelContent(content)


async def _delivery_filter(session: AsyncSession, principal: Principal, delivery_id: int) -> Any:
    """The devices a device import created: their first lifecycle row is that import's, at its instant."""
    entry = await session.get(AuditEntry, delivery_id)
    if entry is None or entry.action != DELIVERY_ACTION:
        raise NotFound(f"delivery {delivery_id} not found")
    if entry.school_id is not None:
        check_school(principal, entry.school_id, "delivery", delivery_id)
    imported = select(DeviceTransition.device_id).where(
        DeviceTransition.reason == IMPORTED,
        DeviceTransition.from_status.is_(None),
        DeviceTransition.at == entry.at,
        DeviceTransition.actor == entry.actor,
    )
    return Device.id.in_(imported)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A device import as the label form offers it."""

    id: int
    at: datetime
    created: int
    first_tag: str
    last_tag: str


# The label form offers the newest deliveries; older ones by number (`labfleet labels --delivery`).
RECENT_DELIVERIES = 20
# Entries read to find them for a school-scoped user (the district's imports interleave across schools).
RECENT_SCAN = 500


async def recent_deliveries(session: AsyncSession, principal: Principal) -> list[Delivery]:
    """The newest device imports that touched the caller's schools."""
    require(principal, Permission.MANAGE_DEVICES)
    entries = (
        await session.execute(
            select(AuditEntry)
            .where(AuditEntry.action == DELIVERY_ACTION)
            .order_by(AuditEntry.id.desc())
            .limit(RECENT_SCAN)
        )
    ).scalars()
    out = []
    for e in entries:
        after = e.after or {}
        schools = after.get("schools") or ([e.school_id] if e.school_id is not None else [])
        if principal.district_wide or any(principal.sees_school(s) for s in schools):
            out.append(
                Delivery(
                    e.id,
                    e.at,
                    int(after.get("created", 0)),
                    str(after.get("first_asset_tag", "")),
                    str(after.get("last_asset_tag", "")),
                )
            )
        if len(out) >= RECENT_DELIVERIES:
            break
    return out


async def newest_delivery(session: AsyncSession, principal: Principal) -> int | None:
    """The caller's own newest device import in this transaction or before: the one just committed."""
    await session.flush()
    return (
        await session.execute(
            select(func.max(AuditEntry.id)).where(
                AuditEntry.action == DELIVERY_ACTION, AuditEntry.actor == principal.actor
            )
        )
    ).scalar_one_or_none()


async def select_labels(
    session: AsyncSession,
    principal: Principal,
    selection: Selection,
    *,
    content: LabelContent = LabelContent.URL,
    base_url: str = "",
) -> list[Label]:
    """The selected devices in scope, by school, room and asset tag (the order they are handed out)."""
    require(principal, Permission.MANAGE_DEVICES)
    if selection.is_empty():
        raise InvalidInput(
            _("Choose the devices to label: a room, a school, a delivery, a search or a list."),
            details=[{"field": "selection", "reason": "nothing selected"}],
        )
    if content is LabelContent.URL and not base_url.startswith(("http://", "https://")):
        raise InvalidInput(
            _("QR codes with the console URL need the console's address (http:// or https://)."),
            details=[{"field": "base_url", "reason": "not an http(s) URL"}],
        )
    stmt: Any = (
        select(Device.id, Device.asset_tag, Device.serial_number, School.name, Room.name)
        .join(School, School.id == Device.school_id)
        .outerjoin(Room, Room.id == Device.room_id)
    )
    stmt = scope_schools(stmt, principal, Device.school_id)
    if selection.room_id is not None:
        room = await session.get(Room, selection.room_id)
        if room is None:
            raise NotFound(f"room {selection.room_id} not found")
        check_school(principal, room.school_id, "room", selection.room_id)
        stmt = stmt.where(Device.room_id == room.id)
    if selection.school_id is not None:
        school = await session.get(School, selection.school_id)
        if school is None:
            raise NotFound(f"school {selection.school_id} not found")
        check_school(principal, school.id, "school", selection.school_id)
        stmt = stmt.where(Device.school_id == school.id)
    if selection.delivery_id is not None:
        stmt = stmt.where(await _delivery_filter(session, principal, selection.delivery_id))
    t = (selection.text or "").strip()[:120]
    if t:  # the device search's match: serial, asset tag or model number, by prefix
        stmt = stmt.where(
            or_(
                Device.serial_number.startswith(t, autoescape=True),
                Device.asset_tag.startswith(t, autoescape=True),
                Device.model_id.in_(
                    select(DeviceModel.id).where(DeviceModel.model_number.startswith(t, autoescape=True))
                ),
            )
        )
    if selection.status is not None:
        if selection.status not in {s.value for s in DeviceStatus}:
            raise InvalidInput(
                _("Unknown status {status}.", status=selection.status[:32]),
                details=[{"field": "status", "reason": "unknown status"}],
            )
        stmt = stmt.where(Device.status == selection.status)
    if selection.online is not None:
        state = select(DeviceState.device_id).where(DeviceState.online.is_(True))
        stmt = stmt.where(Device.id.in_(state) if selection.online else Device.id.not_in(state))
    if selection.device_ids:
        stmt = stmt.where(Device.id.in_(sorted(set(selection.device_ids))))
    listed = sorted({s.strip() for s in selection.serials if s.strip()})
    if len(listed) > MAX_LISTED or len(selection.device_ids) > MAX_LISTED:
        raise InvalidInput(
            _("At most {n} devices can be listed at once.", n=MAX_LISTED),
            details=[{"field": "serials", "reason": "too many"}],
        )
    if listed:
        stmt = stmt.where(or_(Device.serial_number.in_(listed), Device.asset_tag.in_(listed)))
    count = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    if count > MAX_LABELS:
        raise InvalidInput(
            _(
                "{count} devices match; one print job takes at most {n}. Print a school or a room at a time.",
                count=count,
                n=MAX_LABELS,
            ),
            details=[{"field": "selection", "reason": "too many devices"}],
        )
    rows = (await session.execute(stmt.order_by(School.name, Room.name, Device.asset_tag, Device.id))).all()
    if listed:
        known = {r[1] for r in rows} | {r[2] for r in rows}
        unknown = [s for s in listed if s not in known]
        if unknown:  # out of scope reads as unknown, so existence does not leak
            raise InvalidInput(
                _(
                    "No device with these serial numbers or asset tags: {unknown}",
                    unknown=", ".join(unknown[:20]),
                ),
                details=[{"field": "serials", "reason": "unknown", "values": unknown[:100]}],
            )
    if not rows:
        raise InvalidInput(
            _("No devices match this selection."),
            details=[{"field": "selection", "reason": "no devices"}],
        )
    return [
        Label(dev_id, tag, serial, school_name, room_name, qr_payload(content, tag, dev_id, base_url))
        for dev_id, tag, serial, school_name, room_name in rows
    ]


async def print_labels(
    session: AsyncSession,
    principal: Principal,
    now: datetime,
    selection: Selection,
    *,
    layout: str = "3x8",
    content: str = LabelContent.URL.value,
    base_url: str = "",
) -> LabelFile:
    """The selected devices' labels as one PDF; recorded in the audit log (who printed what, how many)."""
    sheet = parse_layout(layout)
    what = parse_content(content)
    labels = await select_labels(session, principal, selection, content=what, base_url=base_url)
    page = labels_html(labels, sheet)
    pdf = await asyncio.to_thread(_print, page)
    school_ids = (
        (selection.school_id,) if selection.school_id is not None else ()
    )  # the common case; a multi-school job is district-level in the log
    audit.record(
        session,
        principal=principal,
        at=now,
        action="labels.print",
        object_type="device",
        object_id=None,
        school_id=school_ids[0] if school_ids else None,
        after={"count": len(labels), "layout": sheet.code, "content": what.value, **selection.as_audit()},
        summary=f"printed {len(labels)} asset labels ({sheet.code})",
    )
    return LabelFile(pdf, len(labels), sheet.pages(len(labels)), sheet.code)


def _print(page: str) -> bytes:
    from fleet.services.reports import pdf
    from fleet.services.reports.render import CJK_FONT_PACKAGE, cjk_font_file

    font = cjk_font_file()
    if font is None and not page.isascii():
        raise FeatureUnavailable(
            _(
                "Labels with Chinese names need a CJK font and none is installed; install the Debian package "
                "{package} (apt-get install {package}).",
                package=CJK_FONT_PACKAGE,
            ),
            details={"install": f"apt-get install {CJK_FONT_PACKAGE}"},
        )
    return pdf.print_pdf(page, font)


FONTS = '"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","WenQuanYi Zen Hei","DejaVu Sans",sans-serif'


def _qr_svg(payload: str) -> str:
    # Error level M (15%): survives a scuffed corner; two modules of quiet zone plus the label's padding.
    return str(segno.make_qr(payload, error="m").svg_inline(border=2, omitsize=True, svgclass="qr"))


# Fitting a code on one line: a Latin character of the sans faces is at most ~0.62 em wide (digits,
# capitals), and 1 pt is 0.3528 mm. Below 4.5 pt a printed code is no longer readable at arm's length.
EM_PER_CHAR = 0.62
MM_PER_PT = 25.4 / 72
MIN_PT = 4.5


def fit_pt(text: str, width_mm: float, pt: float) -> tuple[float, bool]:
    """The largest size up to `pt` at which `text` fits on one line `width_mm` wide, and whether it does;
    a code too long even at MIN_PT is printed at MIN_PT and wraps (all of it beats a clipped end)."""
    need = max(len(text), 1) * EM_PER_CHAR * MM_PER_PT
    size = min(pt, width_mm / need)
    return (round(size, 1), True) if size >= MIN_PT else (MIN_PT, False)


def _code(text: str, width_mm: float, pt: float, cls: str, tag: str = "span") -> str:
    size, one_line = fit_pt(text, width_mm, pt)
    code = " code" if one_line else ""
    return f'<{tag} class="{cls}{code}" style="font-size:{size}pt">{html.escape(text)}</{tag}>'


def _label(item: Label, sheet: Sheet, x: float, y: float, serial_caption: str) -> str:
    e = html.escape
    width = sheet.label_w - 2 * sheet.padding - (sheet.label_h - 2 * sheet.padding) - 1.0  # beside the code
    room = f'<div class="l">{e(item.room)}</div>' if item.room else ""
    # Asset tag and serial do not break inside when they fit: a code split over two lines is misread. The
    # caption goes on the serial's line when both fit, else the serial moves to the next line whole.
    return (
        f'<div class="label" style="left:{x:.2f}mm;top:{y:.2f}mm">'
        f"{_qr_svg(item.payload)}"
        f'<div class="text">{_code(item.asset_tag, width, sheet.text_pt, "tag", "div")}'
        f'<div class="l">{e(serial_caption)} '
        f"{_code(item.serial_number, width, sheet.text_pt * 0.8, 'sn')}</div>"
        f'<div class="l school">{e(item.school)}</div>{room}</div></div>'
    )


def labels_html(labels: Sequence[Label], sheet: Sheet) -> str:
    """The print page: one absolutely placed box per label, in millimetres, page by page."""
    qr = sheet.label_h - 2 * sheet.padding
    css = (
        f"@page{{size:{sheet.page_w}mm {sheet.page_h}mm;margin:0}}"
        f"html,body{{margin:0;padding:0;font-family:{FONTS};color:#000}}"
        f".page{{position:relative;width:{sheet.page_w}mm;height:{sheet.page_h}mm;overflow:hidden;"
        "page-break-after:always;break-after:page}"
        ".page:last-child{page-break-after:auto;break-after:auto}"
        f".label{{position:absolute;width:{sheet.label_w}mm;height:{sheet.label_h}mm;box-sizing:border-box;"
        f"padding:{sheet.padding}mm;display:flex;gap:1mm;overflow:hidden}}"
        f".qr{{flex:none;width:{qr:.2f}mm;height:{qr:.2f}mm}}"
        ".text{flex:1;min-width:0;display:flex;flex-direction:column;justify-content:center;"
        "overflow-wrap:anywhere;line-height:1.15}"
        ".tag{font-weight:bold}"
        ".code{white-space:nowrap}"
        f".l{{font-size:{sheet.text_pt * 0.8:.1f}pt}}"
        ".school{margin-top:0.6mm}"
    )
    serial_caption = _("S/N")  # the serial number's caption on a label: short, the label is 34 mm high
    pages: list[list[str]] = [[] for _i in range(sheet.pages(len(labels)))]
    for i, item in enumerate(labels):
        page, x, y = sheet.position(i)
        pages[page].append(_label(item, sheet, x, y, serial_caption))
    body = "".join(f'<div class="page">{"".join(p)}</div>' for p in pages)
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>labels</title>'
        f"<style>{css}</style></head><body>{body}</body></html>"
    )
