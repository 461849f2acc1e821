"""A terminal's screen-time keeping (protocol 5.3.1 and the `set_policy` command, 6.1), as firmware does it.

Pure and clock-driven: the terminal calls `step` once per tick with the simulated time, the local day, the
tick's length and whether a pupil is using the screen; it answers whether the screen may be used and which
sessions ended (each becomes one `screen_session` event). Nothing here reads a clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

# Without a policy a pause this long ends a session (protocol 5.3.1: the policy's break, else 10 minutes).
DEFAULT_REST_S = 600


@dataclass(frozen=True, slots=True)
class Ended:
    """One finished session, as the `screen_session` event reports it."""

    start_ms: int
    use_s: int
    end: str  # break, daily_limit, idle, locked, shutdown
    session_min: int | None
    daily_min: int | None


class ScreenTime:
    """Sessions, breaks and the daily limit of one terminal."""

    __slots__ = (
        "break_min",
        "break_until_ms",
        "daily_min",
        "day",
        "day_locked",
        "day_use_s",
        "enforce",
        "pause_s",
        "session_min",
        "start_ms",
        "use_s",
    )

    def __init__(self, policy: dict[str, Any] | None = None, *, enforce: bool = True) -> None:
        self.session_min: int | None = None
        self.daily_min: int | None = None
        self.break_min = DEFAULT_REST_S // 60
        # False: the policy is reported but not kept (a teacher keeps unlocking the terminal past it).
        self.enforce = enforce
        self.start_ms: int | None = None  # the open session's first use; None: no session open
        self.use_s = 0.0
        self.pause_s = 0.0
        self.day: date | None = None
        self.day_use_s = 0.0
        self.day_locked = False
        self.break_until_ms = 0
        if policy:
            self.set_policy(policy)

    def set_policy(self, args: dict[str, Any]) -> None:
        """A `set_policy` command's arguments (already validated by the service)."""
        self.session_min = int(args["session_minutes"])
        self.daily_min = int(args["daily_minutes"])
        self.break_min = int(args.get("break_minutes", 10))

    def _end(self, end: str) -> Ended | None:
        if self.start_ms is None:
            return None
        used = round(self.use_s)
        ended = Ended(self.start_ms, used, end, self.session_min, self.daily_min) if used >= 1 else None
        self.start_ms, self.use_s, self.pause_s = None, 0.0, 0.0
        return ended

    def step(
        self, now_ms: int, day: date, seconds: float, using: bool, *, locked: bool = False
    ) -> tuple[bool, list[Ended]]:
        """`seconds` of the pupil wanting to use the terminal (`using`) or not, ending at `now_ms`, in local
        `day`; `locked` by a `lock` command. Returns whether the screen was in use and the sessions that
        ended."""
        out: list[Ended] = []
        if day != self.day:  # a new local day: the daily count and the daily lock start over
            self.day, self.day_use_s, self.day_locked = day, 0.0, False
        # The tick covers the `seconds` before now_ms: it rests when it began inside the break.
        resting = self.enforce and (self.day_locked or now_ms - seconds * 1000 < self.break_until_ms)
        if not using or locked or resting:
            if self.start_ms is not None:
                self.pause_s += seconds
                # A pause as long as the rest ends the session (any pause, with a 0-minute break).
                if self.pause_s >= 60 * self.break_min:
                    ended = self._end("locked" if locked else "idle")
                    if ended:
                        out.append(ended)
            return False, out
        if self.start_ms is None:
            self.start_ms = now_ms - int(seconds * 1000)
        self.pause_s = 0.0
        use = seconds
        end: str | None = None
        if self.enforce and self.daily_min is not None:
            left = 60 * self.daily_min - self.day_use_s
            if use >= left:
                use, end = max(0.0, left), "daily_limit"
        if self.enforce and self.session_min is not None and end is None:
            left = 60 * self.session_min - self.use_s
            if use >= left:
                use, end = max(0.0, left), "break"
        self.use_s += use
        self.day_use_s += use
        if end is not None:
            ended = self._end(end)
            if ended:
                out.append(ended)
            if end == "daily_limit":
                self.day_locked = True
            else:
                self.break_until_ms = now_ms + 60_000 * self.break_min
        return True, out

    def shutdown(self) -> Ended | None:
        """Power off or reboot: the open session ends (sent after the next boot when the link is gone)."""
        return self._end("shutdown")
