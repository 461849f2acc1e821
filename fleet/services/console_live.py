"""The cockpit's live picture of the district: computed once per interval for every viewer and handed to each
viewer filtered to its schools.

Everything is read from the database and the reference data, never from the serving process's ingest, so the
figures are right whichever process ingests (`labfleet serve`, or `labfleet ingest` workers beside it):
- online devices per room: re-read at most every REFRESH_S (the 2-second budget from an MQTT event to the
  screen);
- every SLOW_S: schools, rooms and enrolled devices placed per room; lessons now (bell periods and calendars,
  reloaded when the reference generation of migration 0045 moves, whoever writes); uplink use (5-minute byte
  buckets); open alerts; the newest stored message.

Fifty viewers therefore cost one online query per REFRESH_S and one slow pass per SLOW_S, not fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.clock import Clock, as_utc
from fleet.domain.peaks import utilisation_pct
from fleet.domain.permissions import Permission, Principal
from fleet.errors import NotFound
from fleet.persistence.directory import reference_generation
from fleet.persistence.models import Device, DeviceModel, Room, School
from fleet.persistence.models_mqtt import (
    BYTES_BUCKET_SECONDS,
    Alert,
    DeviceCredential,
    DeviceState,
    UsageBytes,
)
from fleet.persistence.timetables import Timetables
from fleet.services.common import MAX_INT_KEY, check_school, require

# The 2-second budget from an MQTT event to the screen: ingest commits within ~50 ms of the event; while
# someone watches, the online counts are re-read every REFRESH_S and each refresh wakes every viewer's stream
# at once (a viewer with nothing new asks again after PUSH_S, which is what triggers the refresh); so an event
# shows within about REFRESH_S + one pass (~0.6 s), leaving room for a busy machine.
REFRESH_S = 0.5
PUSH_S = 0.5
# Uplink use comes from 5-minute buckets, alerts and lessons move by the minute: every 5 s is live enough,
# and keeps the heavier reads (bytes, alerts, lessons of every room) to one pass per 5 s for all viewers.
SLOW_S = 5.0
# Below this many seconds into the current 5-minute bucket, the rate also counts the previous bucket: a rate
# over a few seconds of a fresh bucket is noise (the same rule as `labfleet top`).
MIN_LIVE_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class RoomNow:
    id: int
    school_id: int
    name: str
    kind: str
    placed: int  # enrolled devices placed in the room: the most that can be expected online
    online: int
    expected: int  # placed while the room has a lesson, else 0
    in_lesson: bool
    period: str | None
    bytes_per_second: float


@dataclass(frozen=True, slots=True)
class SchoolNow:
    id: int
    code: str
    name: str
    timezone: str
    uplink_mbps: int
    enrolled: int
    online: int
    expected: int
    current_period: str | None  # the school's bell (None between periods and outside school hours)
    lessons_in_progress: int
    bytes_per_second: float
    uplink_utilisation_pct: float
    alerts_open: dict[str, int]


@dataclass(frozen=True, slots=True)
class LiveNow:
    """The live picture as one viewer may see it; `version` moves whenever the picture is recomputed."""

    version: int
    generated_at: datetime
    schools: tuple[SchoolNow, ...]
    rooms: tuple[RoomNow, ...]
    last_message_at: datetime | None  # the newest message stored by any ingest process

    def school(self, school_id: int) -> SchoolNow | None:
        return next((s for s in self.schools if s.id == school_id), None)

    def rooms_of(self, school_id: int) -> tuple[RoomNow, ...]:
        return tuple(r for r in self.rooms if r.school_id == school_id)


def scope_key(principal: Principal) -> str:
    """Viewers with the same key see the same picture: the whole district, or one set of schools."""
    if principal.district_wide:
        return "district"
    return "schools:" + ",".join(map(str, sorted(principal.school_ids)))


@dataclass(frozen=True, slots=True)
class _Reference:
    generation: int
    schools: tuple[tuple[int, str, str, str, int], ...]  # id, code, name, timezone, uplink Mbit/s
    rooms: tuple[tuple[int, int, str, str], ...]  # id, school id, name, kind
    placed: dict[int, int]  # room id -> enrolled devices placed there
    enrolled: dict[int, int]  # school id -> enrolled devices


@dataclass(frozen=True, slots=True)
class _Slow:
    at: datetime
    lessons: dict[int, tuple[bool, str | None]]  # room id -> (in lesson, period)
    bells: dict[int, str | None]  # school id -> current period of its bell
    school_bytes: dict[int, tuple[int, int]]  # school id -> (up, down) over the window
    room_bytes: dict[int, int]  # room id -> up + down over the window
    window_s: float
    alerts: dict[int, dict[str, int]]
    last_message_at: datetime | None


class LiveHub:
    """The one live picture of the district in this process, shared by every cockpit viewer."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._mono = clock.monotonic
        self._lock = asyncio.Lock()
        self._timetables = Timetables(sessions)
        self._ref: _Reference | None = None
        self._slow: _Slow | None = None
        self._slow_at = -1e9
        self._fast_at = -1e9
        self._online: dict[tuple[int, int], int] = {}  # (school id, room id or 0) -> online devices
        self._district: LiveNow | None = None
        self._views: dict[str, LiveNow] = {}
        self._changed = asyncio.Event()
        self.version = 0
        self.computations = 0  # full passes over the district (what viewers share)

    async def now(self, principal: Principal) -> LiveNow:
        """The live picture of the caller's schools; recomputed when older than REFRESH_S."""
        require(principal, Permission.READ_OPERATIONS)
        if self._district is None or self._mono() - self._fast_at >= REFRESH_S:
            async with self._lock:
                if self._district is None or self._mono() - self._fast_at >= REFRESH_S:
                    # Shielded: a viewer who leaves must not cancel the read every other viewer waits for.
                    await asyncio.shield(asyncio.ensure_future(self._refresh()))
        assert self._district is not None
        key = scope_key(principal)
        view = self._views.get(key)
        if view is None or view.version != self._district.version:
            view = self._views[key] = self._scoped(self._district, principal)
        return view

    async def next(self, principal: Principal, after: int) -> LiveNow:
        """The picture after version `after`: at once when there is one, else when the next refresh lands
        (whichever viewer triggers it wakes every waiting viewer), or the same picture after PUSH_S."""
        view = await self.now(principal)
        if view.version != after:
            return view
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), PUSH_S)
        return await self.now(principal)

    async def school(self, principal: Principal, school_id: int) -> tuple[LiveNow, SchoolNow]:
        """One school's picture; another school's answers NotFound, as a missing one does."""
        check_school(principal, school_id, "school", school_id)
        view = await self.now(principal)
        if view.school(school_id) is None:
            view = await self.reload(principal)  # a school added since the last reference reload
        school = view.school(school_id)
        if school is None:
            raise NotFound(f"school {school_id} not found")
        return view, school

    async def reload(self, principal: Principal) -> LiveNow:
        """Recompute now, reference included (it reloads only when its generation moved)."""
        async with self._lock:
            self._slow_at = self._fast_at = -1e9
        return await self.now(principal)

    @staticmethod
    def _scoped(district: LiveNow, principal: Principal) -> LiveNow:
        if principal.district_wide:
            return district
        return replace(
            district,
            schools=tuple(s for s in district.schools if principal.sees_school(s.id)),
            rooms=tuple(r for r in district.rooms if principal.sees_school(r.school_id)),
        )

    async def _refresh(self) -> None:
        mono = self._mono()
        async with self._sessions() as db:
            if self._slow is None or mono - self._slow_at >= SLOW_S:
                await self._reload_reference(db)
                self._slow = await self._read_slow(db)
                self._slow_at = mono
            self._online = await _online_by_room(db)
        self._fast_at = mono
        self.version += 1
        self.computations += 1
        # The viewers' cache holds one picture per scope; the old pictures go with the old version.
        self._views = {}
        self._district = self._compose()
        # Wake every viewer waiting in next(): the new picture goes out now, not at each one's next poll.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _reload_reference(self, db: AsyncSession) -> None:
        # Schools, rooms and enrolments are re-read every slow pass: the reference generation does not move on
        # a new room, a renamed school or a new enrolment (nothing in memory elsewhere needs those at once).
        # Bell periods and calendars move it on every change, so the timetables reload only then.
        gen = await reference_generation(db)
        if self._ref is None or self._ref.generation != gen:
            await self._timetables.load()
        schools = tuple(
            (int(i), c, n, tz, int(m))
            for i, c, n, tz, m in (
                await db.execute(
                    select(School.id, School.code, School.name, School.timezone, School.uplink_mbps).order_by(
                        School.code
                    )
                )
            ).all()
        )
        rooms = tuple(
            (int(i), int(s), n, k)
            for i, s, n, k in (
                await db.execute(select(Room.id, Room.school_id, Room.name, Room.kind).order_by(Room.name))
            ).all()
        )
        placed: dict[int, int] = {}
        enrolled: dict[int, int] = defaultdict(int)
        for sid, rid, n in (
            await db.execute(
                select(Device.school_id, Device.room_id, func.count())
                .join(DeviceCredential, DeviceCredential.device_id == Device.id)
                .where(DeviceCredential.revoked_at.is_(None))
                .group_by(Device.school_id, Device.room_id)
            )
        ).all():
            enrolled[int(sid)] += int(n)
            if rid is not None:
                placed[int(rid)] = int(n)
        self._ref = _Reference(gen, schools, rooms, placed, dict(enrolled))

    async def _read_slow(self, db: AsyncSession) -> _Slow:
        assert self._ref is not None
        now = self._clock.now()
        lessons = {rid: self._timetables.lesson(sid, rid, now) for rid, sid, _, _ in self._ref.rooms}
        bells = {sid: self._timetables.lesson(sid, None, now)[1] for sid, *_ in self._ref.schools}
        epoch = int(now.timestamp())
        current = datetime.fromtimestamp(epoch - epoch % BYTES_BUCKET_SECONDS, UTC)
        elapsed = max(1.0, (now - current).total_seconds())
        since = current if elapsed >= MIN_LIVE_WINDOW_S else current - timedelta(seconds=BYTES_BUCKET_SECONDS)
        school_bytes: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        room_bytes: dict[int, int] = defaultdict(int)
        for sid, rid, up, down in (
            await db.execute(
                select(
                    UsageBytes.school_id,
                    UsageBytes.room_id,
                    func.sum(UsageBytes.bytes_up),
                    func.sum(UsageBytes.bytes_down),
                )
                .where(UsageBytes.bucket_start >= since)
                .group_by(UsageBytes.school_id, UsageBytes.room_id)
            )
        ).all():
            cell = school_bytes[int(sid)]
            cell[0] += int(up or 0)
            cell[1] += int(down or 0)
            room_bytes[int(rid)] += int(up or 0) + int(down or 0)
        alerts: dict[int, dict[str, int]] = defaultdict(dict)
        for sid, sev, n in (
            await db.execute(
                select(Alert.school_id, Alert.severity, func.count())
                .where(Alert.status != "resolved")
                .group_by(Alert.school_id, Alert.severity)
            )
        ).all():
            alerts[int(sid)][str(sev)] = int(n)
        last = await db.scalar(select(func.max(DeviceState.last_seen_at)))
        return _Slow(
            at=now,
            lessons=lessons,
            bells=bells,
            school_bytes={k: (v[0], v[1]) for k, v in school_bytes.items()},
            room_bytes=dict(room_bytes),
            window_s=(now - since).total_seconds(),
            alerts={k: dict(sorted(v.items())) for k, v in alerts.items()},
            last_message_at=as_utc(last) if last is not None else None,
        )

    def _compose(self) -> LiveNow:
        ref, slow = self._ref, self._slow
        assert ref is not None and slow is not None
        window = max(1.0, slow.window_s)
        rooms = []
        online_school: dict[int, int] = defaultdict(int)
        for (sid, _rid), n in self._online.items():
            online_school[sid] += n
        expected_school: dict[int, int] = defaultdict(int)
        lessons_school: dict[int, int] = defaultdict(int)
        for rid, sid, name, kind in ref.rooms:
            in_lesson, period = slow.lessons.get(rid, (False, None))
            placed = ref.placed.get(rid, 0)
            expected = placed if in_lesson else 0
            expected_school[sid] += expected
            lessons_school[sid] += in_lesson
            rooms.append(
                RoomNow(
                    id=rid,
                    school_id=sid,
                    name=name,
                    kind=kind,
                    placed=placed,
                    online=self._online.get((sid, rid), 0),
                    expected=expected,
                    in_lesson=in_lesson,
                    period=period,
                    bytes_per_second=round(slow.room_bytes.get(rid, 0) / window, 1),
                )
            )
        schools = []
        for sid, code, name, tz, mbps in ref.schools:
            up, down = slow.school_bytes.get(sid, (0, 0))
            schools.append(
                SchoolNow(
                    id=sid,
                    code=code,
                    name=name,
                    timezone=tz,
                    uplink_mbps=mbps,
                    enrolled=ref.enrolled.get(sid, 0),
                    online=online_school.get(sid, 0),
                    expected=expected_school.get(sid, 0),
                    current_period=slow.bells.get(sid),
                    lessons_in_progress=lessons_school.get(sid, 0),
                    bytes_per_second=round((up + down) / window, 1),
                    uplink_utilisation_pct=round(utilisation_pct(max(up, down) / window, mbps) or 0.0, 2),
                    alerts_open=slow.alerts.get(sid, {}),
                )
            )
        return LiveNow(
            version=self.version,
            generated_at=self._clock.now(),
            schools=tuple(schools),
            rooms=tuple(rooms),
            last_message_at=slow.last_message_at,
        )


async def _online_by_room(db: AsyncSession) -> dict[tuple[int, int], int]:
    """Online devices per (school, room); devices not placed in a room count under room 0."""
    rows = await db.execute(
        select(Device.school_id, Device.room_id, func.count())
        .join(DeviceState, DeviceState.device_id == Device.id)
        .where(DeviceState.online.is_(True))
        .group_by(Device.school_id, Device.room_id)
    )
    return {(int(sid), int(rid or 0)): int(n) for sid, rid, n in rows.all()}


@dataclass(frozen=True, slots=True)
class RoomDevice:
    id: int
    asset_tag: str
    serial_number: str
    model: str
    status: str
    online: bool
    health: str
    last_seen_at: datetime | None
    battery_pct: int | None
    firmware_version: str | None


@dataclass(frozen=True, slots=True)
class RoomDetail:
    room: RoomNow
    school: SchoolNow
    devices: tuple[RoomDevice, ...]


# A room holds a class set (18-45 devices); the cap keeps a mis-placed bulk import from making a huge page.
ROOM_DEVICES_MAX = 500


async def room_detail(hub: LiveHub, session: AsyncSession, principal: Principal, room_id: int) -> RoomDetail:
    """One room now and its devices; another school's room answers NotFound, as a missing one does."""
    require(principal, Permission.READ_OPERATIONS)
    if not 0 < room_id <= MAX_INT_KEY:  # beyond the column's range: no such room (and no driver error)
        raise NotFound(f"room {room_id} not found")
    school_id = await session.scalar(select(Room.school_id).where(Room.id == room_id))
    if school_id is None:
        raise NotFound(f"room {room_id} not found")
    view, school = await hub.school(principal, int(school_id))
    room = next((r for r in view.rooms if r.id == room_id), None)
    if room is None:  # created after the last reference reload (at most SLOW_S ago)
        view = await hub.reload(principal)
        room = next((r for r in view.rooms if r.id == room_id), None)
    if room is None:
        raise NotFound(f"room {room_id} not found")
    rows = await session.execute(
        select(
            Device.id,
            Device.asset_tag,
            Device.serial_number,
            Device.vendor,
            DeviceModel.model_number,
            Device.status,
            DeviceState.online,
            DeviceState.health,
            DeviceState.last_seen_at,
            DeviceState.battery_pct,
            DeviceState.firmware_version,
        )
        .join(DeviceModel, DeviceModel.id == Device.model_id)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .where(Device.room_id == room_id)
        .order_by(Device.asset_tag)
        .limit(ROOM_DEVICES_MAX)
    )
    devices = tuple(
        RoomDevice(
            id=int(i),
            asset_tag=tag,
            serial_number=serial,
            model=f"{vendor} {number}",
            status=str(status),
            online=bool(online),
            health=str(health or "unknown"),
            last_seen_at=as_utc(seen) if seen is not None else None,
            battery_pct=battery,
            firmware_version=fw,
        )
        for i, tag, serial, vendor, number, status, online, health, seen, battery, fw in rows.all()
    )
    return RoomDetail(room=room, school=school, devices=devices)
