"""The schools, rooms and models a filter bar or form offers, read through the inventory services (their scope
and permission), page by page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.console.app import Page
from fleet.persistence.models import DeviceModel, Room, School
from fleet.services.common import MAX_PAGE_SIZE
from fleet.services.crud import CrudService
from fleet.services.inventory import DeviceModelService, RoomService, SchoolService

# Pages read at most per list: 2,000 rooms cover a district's 500 classrooms and 50 labs with room to spare.
MAX_PAGES = 4


@dataclass(frozen=True, slots=True)
class Choices:
    schools: list[School]
    rooms: list[Room]
    models: list[DeviceModel]

    def __getitem__(self, key: str) -> list[Any]:  # templates read opts["schools"] as well as opts.schools
        return list(getattr(self, key))


async def _all(svc: CrudService) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await svc.list(cursor=cursor, limit=MAX_PAGE_SIZE)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return items


async def choices(page: Page, *, rooms: bool = True, models: bool = True) -> Choices:
    args = (page.db, page.principal, page.state.clock)
    schools = sorted(await _all(SchoolService(*args)), key=lambda s: s.name)
    return Choices(
        schools=schools,
        rooms=sorted(await _all(RoomService(*args)), key=lambda r: (r.school_id, r.name)) if rooms else [],
        models=sorted(await _all(DeviceModelService(*args)), key=lambda m: (m.vendor, m.model_number))
        if models
        else [],
    )
