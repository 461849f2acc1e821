"""One CRUD use case for every inventory resource: scope, role, validation hooks and audit in one place."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Permission, Principal
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.services import audit
from fleet.services.common import Page, paginate, require, snapshot


class CrudService:
    """Subclasses name the model, the write permission, the audited fields and the school of an object."""

    model: ClassVar[Any]
    name: ClassVar[str]
    write: ClassVar[Permission]
    fields: ClassVar[tuple[str, ...]]
    # Filters accepted by list(): name -> model column attribute name.
    filters: ClassVar[dict[str, str]] = {}
    has_timestamps: ClassVar[bool] = True

    def __init__(self, session: AsyncSession, principal: Principal, clock: Clock) -> None:
        self.session = session
        self.principal = principal
        self.clock = clock

    # -- hooks ---------------------------------------------------------------------------------------
    def school_id_of(self, obj: Any) -> int | None:
        return getattr(obj, "school_id", None)

    def visible(self, obj: Any) -> bool:
        return self.principal.sees_school(self.school_id_of(obj))

    def scoped(self, stmt: Select[Any]) -> Select[Any]:
        if self.principal.district_wide:
            return stmt
        return stmt.where(self.model.school_id.in_(sorted(self.principal.school_ids) or [-1]))

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        """Check and complete values before create (existing None) or update; raise domain errors."""
        return values

    async def before_delete(self, obj: Any) -> None:
        """Raise Conflict when the object still has dependants."""

    # -- use cases -----------------------------------------------------------------------------------
    async def get(self, obj_id: int) -> Any:
        require(self.principal, Permission.READ_INVENTORY)
        return await self._get_visible(obj_id)

    async def _get_visible(self, obj_id: int) -> Any:
        obj = await self.session.get(self.model, obj_id)
        if obj is None or not self.visible(obj):
            raise NotFound(f"{self.name} {obj_id} not found")
        return obj

    async def list(self, *, cursor: str | None, limit: int, **filters: Any) -> Page[Any]:
        require(self.principal, Permission.READ_INVENTORY)
        stmt = self.scoped(select(self.model))
        for key, value in filters.items():
            if value is not None:
                stmt = stmt.where(getattr(self.model, self.filters[key]) == value)
        return await paginate(self.session, stmt, self.model, cursor, limit)

    async def create(self, values: dict[str, Any]) -> Any:
        require(self.principal, self.write)
        values = await self.validate(dict(values), None)
        now = self.clock.now()
        if self.has_timestamps:
            values.setdefault("created_at", now)
            if hasattr(self.model, "updated_at"):
                values.setdefault("updated_at", now)
        obj = self.model(**values)
        self.session.add(obj)
        await self._flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=now,
            action=f"{self.name}.create",
            object_type=self.name,
            object_id=obj.id,
            school_id=self.school_id_of(obj),
            after=snapshot(obj, self.fields),
        )
        return obj

    async def update(self, obj_id: int, values: dict[str, Any]) -> Any:
        require(self.principal, self.write)
        obj = await self._get_visible(obj_id)
        before = snapshot(obj, self.fields)
        not_null = [k for k, v in values.items() if v is None and not self.model.__table__.c[k].nullable]
        if not_null:
            raise InvalidInput(
                f"{', '.join(not_null)} cannot be null",
                details=[{"field": k, "reason": "cannot be null"} for k in not_null],
            )
        values = await self.validate(dict(values), obj)
        for key, value in values.items():
            setattr(obj, key, value)
        if hasattr(obj, "updated_at"):
            obj.updated_at = self.clock.now()
        await self._flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=self.clock.now(),
            action=f"{self.name}.update",
            object_type=self.name,
            object_id=obj.id,
            school_id=self.school_id_of(obj),
            before=before,
            after=snapshot(obj, self.fields),
        )
        return obj

    async def delete(self, obj_id: int) -> None:
        require(self.principal, self.write)
        obj = await self._get_visible(obj_id)
        await self.before_delete(obj)
        before = snapshot(obj, self.fields)
        await self.session.delete(obj)
        await self._flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=self.clock.now(),
            action=f"{self.name}.delete",
            object_type=self.name,
            object_id=obj_id,
            school_id=self.school_id_of(obj),
            before=before,
        )

    async def _flush(self) -> None:
        try:
            await self.session.flush()
        except IntegrityError as err:
            raise Conflict(f"{self.name} clashes with an existing record (a unique field is taken)") from err

    async def school_in_scope(self, values: dict[str, Any], existing: Any | None) -> int:
        """The school the values place the object in; 404 when it is missing or outside the caller's scope."""
        from fleet.persistence.models import School

        school_id = values.get("school_id", existing.school_id if existing else None)
        school = await self.session.get(School, school_id) if school_id is not None else None
        if school is None or not self.principal.sees_school(school.id):
            raise NotFound(f"school {school_id} not found")
        return int(school.id)

    async def room_in_school(self, values: dict[str, Any], existing: Any | None, school_id: int) -> None:
        """A room named by the values must belong to the object's school."""
        from fleet.persistence.models import Room

        room_id = values.get("room_id", existing.room_id if existing else None)
        if room_id is not None:
            room = await self.session.get(Room, room_id)
            if room is None or room.school_id != school_id:
                raise InvalidInput(
                    f"room {room_id} is not a room of school {school_id}",
                    details=[{"field": "room_id", "reason": "not in this school"}],
                )

    async def exists(self, stmt: Select[Any]) -> bool:
        return (await self.session.execute(stmt.limit(1))).first() is not None
