"""The device directory (MQTT identity -> device, school, room, model) held in memory, and the watch that
reloads it, with the timetables, when the reference data in the database changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from fleet.domain import health as health_rules
from fleet.domain.clock import Clock
from fleet.persistence.ingest_repo import IN_CHUNK, DeviceRef
from fleet.persistence.models import BellPeriod, CalendarDay, Device, DeviceModel, Room, School
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.persistence.models_reference import REFERENCE_ROW, ReferenceGeneration
from fleet.persistence.timetables import Timetables

logger = logging.getLogger(__name__)

# An unknown identity is looked up again at most this often, so a misconfigured or hostile client
# publishing under a made-up name cannot turn every message into a database query.
NEGATIVE_CACHE_S = 30.0
# How often each process reads the reference generation: a device moved to another room counts there within
# this (plus one reload), well inside the 10 s the operators are promised; the read is one primary-key row.
REFERENCE_POLL_S = 3.0
# session.info key: this transaction changed reference data (see track_reference_changes).
REFERENCE_CHANGED = "fleet.reference_changed"


class DeviceDirectory:
    """MQTT identity -> DeviceRef, cached in memory; misses go to the database (negative-cached)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        profile_loader: health_rules.ProfileLoader | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._by_name: dict[str, DeviceRef] = {}
        self._by_id: dict[int, DeviceRef] = {}
        self._misses: dict[str, float] = {}
        self._load_profile = profile_loader
        self._threshold_cache: dict[str | None, health_rules.Thresholds] = {}

    def get(self, username: str) -> DeviceRef | None:
        return self._by_name.get(username)

    def by_id(self, device_id: int) -> DeviceRef | None:
        return self._by_id.get(device_id)

    def all(self) -> list[DeviceRef]:
        return list(self._by_id.values())

    def recently_missed(self, username: str) -> bool:
        at = self._misses.get(username)
        return at is not None and self._clock.monotonic() - at < NEGATIVE_CACHE_S

    def forget(self, username: str) -> None:
        ref = self._by_name.pop(username, None)
        if ref:
            self._by_id.pop(ref.device_id, None)
        self._misses.pop(username, None)

    def _statement(self):  # an 11-column Select; its full type says nothing
        return (
            select(
                DeviceCredential.username,
                Device.id,
                Device.school_id,
                Device.room_id,
                DeviceCredential.school_code,
                DeviceCredential.revoked_at,
                DeviceModel.model_number,
                DeviceModel.kind,
                Room.kind,
                DeviceModel.profile_key,
                School.timezone,
            )
            .join(Device, Device.id == DeviceCredential.device_id)
            .join(DeviceModel, DeviceModel.id == Device.model_id)
            .join(School, School.id == Device.school_id)
            .outerjoin(Room, Room.id == Device.room_id)
        )

    def _ref(self, row: tuple[Any, ...]) -> DeviceRef:  # a row of the select above
        name, dev_id, school_id, room_id, code, revoked, model, kind, room_kind, profile, zone = row
        return DeviceRef(
            dev_id,
            school_id,
            room_id,
            code,
            name,
            revoked is not None,
            model,
            kind,
            room_kind,
            self._thresholds(profile),
            zone,
        )

    async def load(self, usernames: list[str] | None = None) -> None:
        """Load every enrolled device (None: the whole directory is replaced) or the given identities."""
        if usernames is None:
            async with self._sessions() as session:
                rows = (await session.execute(self._statement())).all()
            by_name: dict[str, DeviceRef] = {}
            by_id: dict[int, DeviceRef] = {}
            for row in rows:
                ref = self._ref(tuple(row))
                by_name[ref.username] = ref
                by_id[ref.device_id] = ref
            # One swap: the socket callback sees the old directory or the new one, never half of each.
            self._by_name, self._by_id = by_name, by_id
            return
        found: set[str] = set()
        async with self._sessions() as session:
            for i in range(0, len(usernames), IN_CHUNK):
                q = self._statement().where(DeviceCredential.username.in_(usernames[i : i + IN_CHUNK]))
                for row in (await session.execute(q)).all():
                    ref = self._ref(tuple(row))
                    old = self._by_id.get(ref.device_id)
                    if old is not None and old.username != ref.username:
                        self._by_name.pop(old.username, None)
                    self._by_name[ref.username] = ref
                    self._by_id[ref.device_id] = ref
                    found.add(ref.username)
        now = self._clock.monotonic()
        for name in usernames:
            if name not in found:
                self._misses[name] = now
                self._by_name.pop(name, None)

    def _thresholds(self, profile_key: str | None) -> health_rules.Thresholds:
        # One profile file read per model, not per device: 10,000 devices share a handful of models.
        if profile_key not in self._threshold_cache:
            self._threshold_cache[profile_key] = health_rules.thresholds_for(profile_key, self._load_profile)
        return self._threshold_cache[profile_key]


async def reference_generation(session: AsyncSession) -> int:
    """The counter the triggers of migration 0045 move on every change the directory or timetables hold."""
    gen = await session.scalar(
        select(ReferenceGeneration.generation).where(ReferenceGeneration.id == REFERENCE_ROW)
    )
    return int(gen or 0)


class ReferenceWatch:
    """Reloads a directory and timetables when the reference generation moved since their last load.

    `check()` is the whole mechanism: the serving process calls it right after a request that changed
    reference data commits, and every process runs it every REFERENCE_POLL_S (`run`) for the changes others
    make. The generation is read before the reload, so a change committed during the reload is seen next time.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        directory: DeviceDirectory,
        timetables: Timetables,
        *,
        interval_s: float = REFERENCE_POLL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sessions = sessions
        self.directory = directory
        self.timetables = timetables
        self.interval_s = interval_s
        self._sleep = sleep
        self._seen: int | None = None
        self._lock = asyncio.Lock()
        self.reloads = 0

    async def load(self) -> None:
        """The first load (at start), remembering the generation it reflects."""
        async with self._lock:
            await self._reload(await self._generation())

    async def check(self) -> bool:
        """Reload when the generation moved; True when it did."""
        async with self._lock:
            gen = await self._generation()
            if gen == self._seen:
                return False
            await self._reload(gen)
            return True

    async def _generation(self) -> int:
        async with self._sessions() as s:
            return await reference_generation(s)

    async def _reload(self, gen: int) -> None:
        await self.directory.load()
        await self.timetables.load()
        self._seen = gen
        self.reloads += 1

    async def run(self) -> None:
        """Check every interval until cancelled; log the first failure and the recovery, not every retry."""
        failing = False
        while True:
            await self._sleep(self.interval_s)
            try:
                if await self.check():
                    logger.info("reference data changed: directory and timetables reloaded")
                if failing:
                    logger.info("reference data watch recovered")
                failing = False
            except Exception:
                if not failing:
                    logger.exception("reference data watch failed; keeping the previous copy")
                failing = True


# ORM classes whose changes the directory or the timetables hold (the triggers of migration 0045 watch the
# same tables in the database, for writers outside this process).
_REFERENCE_MODELS = (Device, Room, DeviceModel, School, DeviceCredential, BellPeriod, CalendarDay)


def _mark_reference_change(session: Session, _ctx: object, _instances: object) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _REFERENCE_MODELS):
            session.info[REFERENCE_CHANGED] = True
            return


def track_reference_changes(session: AsyncSession) -> None:
    """Note on the session when a flush touches reference data, so its commit can refresh this process."""
    event.listen(session.sync_session, "before_flush", _mark_reference_change)


def reference_changed(session: AsyncSession) -> bool:
    return bool(session.info.get(REFERENCE_CHANGED))
