"""Districts, schools, rooms, device models and devices."""

from __future__ import annotations

from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, delete, select

from fleet.domain import timebounds
from fleet.domain.enums import DeviceStatus, RoomKind
from fleet.domain.lifecycle import INITIAL_STATUSES, check_transition
from fleet.domain.permissions import Permission
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.persistence.models import (
    BellPeriod,
    CalendarDay,
    Device,
    DeviceModel,
    DeviceTransition,
    District,
    Room,
    School,
)
from fleet.services import audit
from fleet.services.common import Page, paginate, require, snapshot
from fleet.services.crud import CrudService


class DistrictService(CrudService):
    model = District
    name = "district"
    write = Permission.MANAGE_SCHOOLS
    fields = ("name",)

    def school_id_of(self, obj: Any) -> int | None:
        return None

    def visible(self, obj: Any) -> bool:
        return self.principal.district_wide or bool(self._district_ids & {obj.id})

    @property
    def _district_ids(self) -> set[int]:
        return getattr(self, "_cached_districts", set())

    async def _load_scope(self) -> None:
        if not self.principal.district_wide and not hasattr(self, "_cached_districts"):
            rows = await self.session.execute(
                select(School.district_id).where(School.id.in_(sorted(self.principal.school_ids) or [-1]))
            )
            self._cached_districts = {r[0] for r in rows}

    def scoped(self, stmt: Select[Any]) -> Select[Any]:
        if self.principal.district_wide:
            return stmt
        return stmt.where(District.id.in_(sorted(self._district_ids) or [-1]))

    async def _get_visible(self, obj_id: int) -> Any:
        await self._load_scope()
        return await super()._get_visible(obj_id)

    async def list(self, *, cursor: str | None, limit: int, **filters: Any) -> Page[Any]:
        await self._load_scope()
        return await super().list(cursor=cursor, limit=limit, **filters)

    async def before_delete(self, obj: Any) -> None:
        if await self.exists(select(School.id).where(School.district_id == obj.id)):
            raise Conflict(f"district {obj.id} still has schools; move or delete them first")


class SchoolService(CrudService):
    model = School
    name = "school"
    write = Permission.MANAGE_SCHOOLS
    fields = ("district_id", "code", "name", "uplink_mbps", "timezone")
    filters: ClassVar[dict[str, str]] = {"district": "district_id"}

    def school_id_of(self, obj: Any) -> int | None:
        school_id: int | None = obj.id
        return school_id

    def scoped(self, stmt: Select[Any]) -> Select[Any]:
        if self.principal.district_wide:
            return stmt
        return stmt.where(School.id.in_(sorted(self.principal.school_ids) or [-1]))

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        if "district_id" in values and await self.session.get(District, values["district_id"]) is None:
            raise InvalidInput(
                f"district {values['district_id']} does not exist",
                details=[{"field": "district_id", "reason": "no such district"}],
            )
        if existing is None and not values.get("timezone"):
            values["timezone"] = "UTC"
        if "timezone" in values and values["timezone"] is not None:
            try:
                ZoneInfo(values["timezone"])
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise InvalidInput(
                    f"unknown time zone {values['timezone']!r}",
                    details=[{"field": "timezone", "reason": "not an IANA zone"}],
                ) from err
        code = values.get("code")
        if (
            code is not None
            and (existing is None or code != existing.code)
            and await self.exists(select(School.id).where(School.code == code))
        ):
            raise Conflict(f"school code {code!r} is already used")
        return values

    async def before_delete(self, obj: Any) -> None:
        for model, what in ((Room, "rooms"), (Device, "devices")):
            if await self.exists(select(model.id).where(model.school_id == obj.id)):
                raise Conflict(f"school {obj.id} still has {what}; move or delete them first")
        for timetable in (BellPeriod, CalendarDay):
            await self.session.execute(delete(timetable).where(timetable.school_id == obj.id))


class RoomService(CrudService):
    model = Room
    name = "room"
    write = Permission.MANAGE_ROOMS
    fields = ("school_id", "name", "kind", "tier", "capacity")
    filters: ClassVar[dict[str, str]] = {"school": "school_id", "kind": "kind", "tier": "tier"}

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        school_id = await self.school_in_scope(values, existing)
        kind = values.get("kind", existing.kind if existing else None)
        tier = values.get("tier", existing.tier if existing else None)
        if kind == RoomKind.AI_LAB and tier is None:
            raise InvalidInput(
                "an ai_lab needs a tier (basic_experience, subject_integration or advanced_research)",
                details=[{"field": "tier", "reason": "required for ai_lab"}],
            )
        if kind != RoomKind.AI_LAB and tier is not None:
            raise InvalidInput(
                "only an ai_lab has a tier", details=[{"field": "tier", "reason": "only for ai_lab"}]
            )
        name = values.get("name", existing.name if existing else None)
        if (
            existing is None or name != existing.name or school_id != existing.school_id
        ) and await self.exists(select(Room.id).where(Room.school_id == school_id, Room.name == name)):
            raise Conflict(f"school {school_id} already has a room named {name!r}")
        return values

    async def before_delete(self, obj: Any) -> None:
        if await self.exists(select(Device.id).where(Device.room_id == obj.id)):
            raise Conflict(f"room {obj.id} still has devices; move them first")
        await self.session.execute(delete(BellPeriod).where(BellPeriod.room_id == obj.id))


class DeviceModelService(CrudService):
    model = DeviceModel
    name = "device_model"
    write = Permission.MANAGE_MODELS
    fields = (
        "vendor",
        "model_number",
        "kind",
        "transport",
        "unit_price",
        "warranty_months",
        "supplier",
        "profile_key",
    )
    filters: ClassVar[dict[str, str]] = {
        "kind": "kind",
        "vendor": "vendor",
        "supplier": "supplier",
        "transport": "transport",
    }

    def visible(self, obj: Any) -> bool:
        return True  # the catalogue is district-wide reference data

    def scoped(self, stmt: Select[Any]) -> Select[Any]:
        return stmt

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        vendor = values.get("vendor", existing.vendor if existing else None)
        number = values.get("model_number", existing.model_number if existing else None)
        if existing is None or (vendor, number) != (existing.vendor, existing.model_number):
            if await self.exists(
                select(DeviceModel.id).where(DeviceModel.vendor == vendor, DeviceModel.model_number == number)
            ):
                raise Conflict(f"model {vendor} {number} already exists")
            if (
                existing is not None
                and vendor != existing.vendor
                and await self.exists(select(Device.id).where(Device.model_id == existing.id))
            ):
                raise Conflict("cannot change the vendor of a model that has devices")
        return values

    async def before_delete(self, obj: Any) -> None:
        if await self.exists(select(Device.id).where(Device.model_id == obj.id)):
            raise Conflict(f"device model {obj.id} has devices; it cannot be deleted")


DEVICE_FIELDS = (
    "vendor",
    "serial_number",
    "asset_tag",
    "model_id",
    "school_id",
    "room_id",
    "status",
    "order_number",
    "purchase_date",
    "unit_cost",
    "funding_source",
    "ownership",
)
# Devices that never left stock may be deleted (a mistaken entry); others are retired, keeping history.
DELETABLE_STATUSES = frozenset({DeviceStatus.ORDERED, DeviceStatus.RECEIVED})


class DeviceService(CrudService):
    model = Device
    name = "device"
    write = Permission.MANAGE_DEVICES
    fields = DEVICE_FIELDS
    filters: ClassVar[dict[str, str]] = {
        "school": "school_id",
        "room": "room_id",
        "model": "model_id",
        "status": "status",
    }

    async def list(
        self,
        *,
        cursor: str | None,
        limit: int,
        kind: str | None = None,
        **filters: Any,
    ) -> Page[Any]:
        require(self.principal, Permission.READ_INVENTORY)
        stmt = self.scoped(select(Device))
        if kind is not None:
            stmt = stmt.join(DeviceModel, DeviceModel.id == Device.model_id).where(DeviceModel.kind == kind)
        for key, value in filters.items():
            if value is not None:
                stmt = stmt.where(getattr(Device, self.filters[key]) == value)
        return await paginate(self.session, stmt, Device, cursor, limit)

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        school_id = await self.school_in_scope(values, existing)
        await self.room_in_school(values, existing, school_id)
        model_id = values.get("model_id", existing.model_id if existing else None)
        model = await self.session.get(DeviceModel, model_id)
        if model is None:
            raise InvalidInput(
                f"device model {model_id} does not exist",
                details=[{"field": "model_id", "reason": "no such model"}],
            )
        values["vendor"] = model.vendor
        if values.get("purchase_date") is not None:
            try:
                timebounds.purchase_date(values["purchase_date"], self.clock.now().date())
            except timebounds.TimeRangeError as err:
                raise InvalidInput(
                    str(err), details=[{"field": "purchase_date", "reason": str(err)}]
                ) from err
        if existing is None:
            status = values.setdefault("status", DeviceStatus.RECEIVED)
            if status not in INITIAL_STATUSES:
                raise InvalidInput(
                    f"a new device cannot start as {status}",
                    details=[{"field": "status", "reason": "not an initial status"}],
                )
        serial = values.get("serial_number", existing.serial_number if existing else None)
        if (
            existing is None or (model.vendor, serial) != (existing.vendor, existing.serial_number)
        ) and await self.exists(
            select(Device.id).where(Device.vendor == model.vendor, Device.serial_number == serial)
        ):
            raise Conflict(f"{model.vendor} serial number {serial!r} is already registered")
        tag = values.get("asset_tag")
        if (
            tag is not None
            and (existing is None or tag != existing.asset_tag)
            and await self.exists(select(Device.id).where(Device.asset_tag == tag))
        ):
            raise Conflict(f"asset tag {tag!r} is already used")
        return values

    async def create(self, values: dict[str, Any]) -> Any:
        device = await super().create(values)
        self.session.add(
            DeviceTransition(
                device_id=device.id,
                from_status=None,
                to_status=device.status,
                actor=self.principal.actor,
                reason="created",
                at=self.clock.now(),
            )
        )
        return device

    async def before_delete(self, obj: Any) -> None:
        if obj.status not in DELETABLE_STATUSES:
            raise Conflict(f"device {obj.id} is {obj.status}; retire it instead of deleting it")
        await self.session.execute(delete(DeviceTransition).where(DeviceTransition.device_id == obj.id))

    async def transition(self, device_id: int, target: DeviceStatus, reason: str | None) -> Device:
        require(self.principal, Permission.MANAGE_DEVICES)
        device: Device = await self._get_visible(device_id)
        current = DeviceStatus(device.status)
        check_transition(current, target)
        now = self.clock.now()
        device.status = target
        device.updated_at = now
        self.session.add(
            DeviceTransition(
                device_id=device.id,
                from_status=current,
                to_status=target,
                actor=self.principal.actor,
                reason=reason,
                at=now,
            )
        )
        await self.session.flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=now,
            action="device.transition",
            object_type="device",
            object_id=device.id,
            school_id=device.school_id,
            before={"status": str(current)},
            after={"status": str(target)},
            summary=reason,
        )
        return device

    async def move(self, device_id: int, room_id: int, reason: str) -> Device:
        """Place a device in a room (of its school or another one the caller sees), with the reason."""
        require(self.principal, Permission.MANAGE_DEVICES)
        device: Device = await self._get_visible(device_id)
        room = await self.session.get(Room, room_id)
        if room is None or not self.principal.sees_school(room.school_id):
            raise NotFound(f"room {room_id} not found")
        before = snapshot(device, ("school_id", "room_id"))
        values = await self.validate({"school_id": room.school_id, "room_id": room.id}, device)
        for key, value in values.items():
            setattr(device, key, value)
        now = self.clock.now()
        device.updated_at = now
        await self._flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=now,
            action="device.move",
            object_type="device",
            object_id=device.id,
            school_id=device.school_id,
            before=before,
            after=snapshot(device, ("school_id", "room_id")),
            summary=reason,
        )
        return device

    async def history(self, device_id: int, *, cursor: str | None, limit: int) -> Page[Any]:
        require(self.principal, Permission.READ_INVENTORY)
        await self._get_visible(device_id)
        stmt = select(DeviceTransition).where(DeviceTransition.device_id == device_id)
        return await paginate(self.session, stmt, DeviceTransition, cursor, limit)


__all__ = [
    "DeviceModelService",
    "DeviceService",
    "DistrictService",
    "RoomService",
    "SchoolService",
    "snapshot",
]
