"""The screen-time roll-up written by ingest: `ScreenUsed` effects summed per terminal and local day into
usage_screen (migration 0070), the screen-time report's only source.

Sessions end in waves (every terminal of a school at the bell), so a batch can hold thousands: on SQLite the
upsert goes to the driver directly, as the other roll-ups do, storing what SQLAlchemy would store (a day as
`YYYY-MM-DD` text); tests/persistence/test_ingest_parity.py compares both paths.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import case, func
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.device_state import DeviceRef, ScreenUsed
from fleet.domain.wire import ScreenEnd
from fleet.persistence.ingest_rows import dialect_insert
from fleet.persistence.models_mqtt import UsageScreen

_T = UsageScreen.__table__
_KEY = ("device_id", "day")
# Added on a conflict.
_SUMS = ("use_seconds", "sessions", "long_sessions", "breaks", "limit_locks", "unmanaged_sessions")
# Column order of one accumulated row (after the key).
_COLS = (*_KEY, "school_id", "room_id", *_SUMS, "longest_seconds", "session_limit_min", "daily_limit_min")


class ScreenRollup:
    """One batch's screen sessions, summed per (terminal, local day)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        # (device, day) -> [school, room, use s, sessions, long, breaks, locks, no policy, longest, limits x2]
        self.rows: dict[tuple[int, date], list[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self.rows)

    def add(self, ref: DeviceRef, e: ScreenUsed) -> None:
        key = (ref.device_id, e.day)
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = [ref.school_id, ref.room_id or 0, 0, 0, 0, 0, 0, 0, 0, None, None]
        r[2] += e.use_s
        r[3] += 1
        r[4] += int(e.long)
        r[5] += int(e.end == ScreenEnd.BREAK)
        r[6] += int(e.end == ScreenEnd.DAILY_LIMIT)
        r[7] += int(e.session_min is None)
        r[8] = max(r[8], e.use_s)
        # The limits last reported that day (arrival order): a policy changed mid-day counts from then on.
        if e.session_min is not None:
            r[9] = e.session_min
        if e.daily_min is not None:
            r[10] = e.daily_min

    def params(self) -> list[tuple[Any, ...]]:
        return [(dev, day, *r) for (dev, day), r in self.rows.items()]


# SQLite through the driver: scalar max() and coalesce(); the last reported limits win, as below.
_UPSERT_SQLITE = (
    f"INSERT INTO usage_screen ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))}) "
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _SUMS)
    + ", longest_seconds = max(longest_seconds, excluded.longest_seconds)"
    ", session_limit_min = coalesce(excluded.session_limit_min, session_limit_min)"
    ", daily_limit_min = coalesce(excluded.daily_limit_min, daily_limit_min)"
)


async def write_screen(session: AsyncSession, rollup: ScreenRollup, fast: bool) -> None:
    """Add the batch's sessions to usage_screen (insert the terminal-day, or add to it)."""
    params = rollup.params()
    if fast:
        conn = await session.connection()
        await conn.exec_driver_sql(
            _UPSERT_SQLITE, [(dev, day.isoformat(), *rest) for dev, day, *rest in params]
        )
        return
    ins = dialect_insert(session, _T)
    x = ins.excluded
    await session.execute(
        ins.on_conflict_do_update(
            index_elements=list(_KEY),
            set_={
                **{c: _T.c[c] + x[c] for c in _SUMS},
                "longest_seconds": case(
                    (x.longest_seconds > _T.c.longest_seconds, x.longest_seconds),
                    else_=_T.c.longest_seconds,
                ),
                "session_limit_min": func.coalesce(x.session_limit_min, _T.c.session_limit_min),
                "daily_limit_min": func.coalesce(x.daily_limit_min, _T.c.daily_limit_min),
            },
        ),
        [dict(zip(_COLS, p, strict=True)) for p in params],
    )
