"""Scenarios: each one changes the day of some terminals, or the world around them. They combine freely.

bell-storm and lesson-peak shape the load (engine.plan_day and the traffic questions read them); the fault
scenarios below schedule their faults on the simulated clock, relative to the first bell.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Protocol

from simulators.district.clock import SimClock
from simulators.district.hooks import Hooks
from simulators.district.spec import District, Room, School, TrafficIn
from simulators.district.stats import Stats
from simulators.district.terminal import Phase, Terminal


class ScenarioHost(Protocol):
    """What the scenarios read and schedule on the simulation (engine.Simulation is the one host)."""

    district: District
    scenarios: tuple[str, ...]
    hooks: Hooks
    start_local: datetime
    terminals: list[Terminal]
    rooms: dict[str, tuple[School, Room]]
    traffic: TrafficIn
    clock: SimClock
    stats: Stats
    outcome: dict[str, Any]
    scenario_notes: dict[str, str]
    flap_room: str | None

    def to_utc(self, school: str, local: datetime) -> datetime: ...

    def at_sim(self, when: datetime, fn: Callable[[], None]) -> Any: ...

    def after_real(self, delay: float, fn: Callable[[], None]) -> Any: ...

    def hold(self, handle: Any) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None: ...

    def mono(self) -> float: ...


logger = logging.getLogger(__name__)

# exam-day: one exam app, sessions no longer than a lesson, a break between, a short day.
# wifi-flap waits at most this long (real seconds) for the whole room to be online before dropping it,
# checking this often: a storm finishes well inside it, and the scenario's effect then covers every terminal
# of the room.
FLAP_WAIT_S = 30.0
FLAP_POLL_S = 0.1
EXAM_POLICY = {"session_minutes": 45, "daily_minutes": 240, "break_minutes": 10, "allowed_apps": ["edu.exam"]}


def _first_bell_utc(sim: ScenarioHost) -> datetime:
    bell = sim.district.first_bell()
    return sim.to_utc(sim.district.schools[0].code, max(bell, sim.start_local))


def _share(sim: ScenarioHost, share: float, salt: str) -> list[Terminal]:
    """A deterministic share of the terminals (at least one when the share is positive)."""
    if share <= 0 or not sim.terminals:
        return []
    n = max(1, round(len(sim.terminals) * share))
    import random

    return random.Random(f"{salt}:{len(sim.terminals)}").sample(sim.terminals, n)


async def apply(sim: ScenarioHost) -> None:
    p = sim.district.scenario
    bell = _first_bell_utc(sim)
    names = sim.scenarios
    if "exam-day" in names:
        day = sim.start_local.date().isoformat()
        if sim.hooks.add_exam_day is not None:
            for s in sim.district.schools:
                await sim.hooks.add_exam_day(s.code, day)
            sim.scenario_notes["exam-day"] = f"exam day {day} in the service's calendar for every school"
        else:
            sim.scenario_notes["exam-day"] = (
                "terminals in exam mode; the service calendar was not changed (no API)"
            )
        for t in sim.terminals:
            t.exam = True  # exam app only, no content bursts, no updates
        if sim.hooks.send_command is not None:
            # Stricter policy for the day, sent as a technician would: the terminals must obey it.
            for s in sim.district.schools:
                await sim.hooks.send_command(s.code, "set_policy", EXAM_POLICY)
            sim.scenario_notes["exam-day"] += (
                "; exam policy (exam app only, 45-minute sessions) sent to every school"
            )
    if "malformed" in names:
        chosen = _share(sim, p.malformed_share, "malformed")
        for t in chosen:
            t.malformed = True
        sim.scenario_notes["malformed"] = (
            f"{len(chosen)} terminals also send garbage every telemetry interval"
        )
    if "battery-drain" in names:
        chosen = _share(sim, p.battery_drain_share, "battery")
        for t in chosen:
            t.drain = p.battery_drain_pct_per_hour / max(0.1, sim.traffic.battery_drain_pct_per_hour)
            t.battery = min(t.battery, 40.0)
        sim.outcome["battery_drain"] = sorted(t.serial for t in chosen)
        sim.scenario_notes["battery-drain"] = (
            f"{len(chosen)} terminals drain at {p.battery_drain_pct_per_hour:g} %/h"
        )
    if "screen-overuse" in names:
        chosen = _share(sim, p.screen_overuse_share, "screen")
        for t in chosen:
            t.screen.enforce = False
        sim.outcome["screen_overuse"] = sorted(t.serial for t in chosen)
        sim.scenario_notes["screen-overuse"] = (
            f"{len(chosen)} terminals have their breaks and daily lock lifted by hand"
        )
    if "bad-firmware" in names:
        if "exam-day" in names:
            sim.scenario_notes["bad-firmware"] = "held back: no updates on an exam day"
        else:
            chosen = _share(sim, p.bad_firmware_share, "firmware")

            def install() -> None:
                for t in chosen:
                    t.firmware = p.bad_firmware_version
                    t.bad_fw = True
                    t.boots = 0
                    if t.phase == Phase.ONLINE:
                        t.reboot_soon()  # an update ends in a reboot into the new image
                sim.stats.mark(f"bad-firmware: {len(chosen)} terminals boot {p.bad_firmware_version}")

            sim.hold(sim.at_sim(bell + timedelta(seconds=p.bad_firmware_at_s), install))
            sim.outcome["bad_firmware"] = sorted(t.serial for t in chosen)
            sim.scenario_notes["bad-firmware"] = (
                f"{len(chosen)} terminals updated to {p.bad_firmware_version} crash and reboot"
            )
    if "wifi-flap" in names:
        room = p.flap_room or next(k for k, (_s, r) in sim.rooms.items() if r.kind == "smart_classroom")
        if room not in sim.rooms:
            raise ValueError(f"wifi-flap: no room {room!r} (use SCHOOL/Room name)")
        sim.flap_room = room
        members = [t for t in sim.terminals if t.room_key == room]
        down_real = sim.clock.real(p.flap_down_s)

        give_up = [0.0]

        def flap() -> None:
            # The whole room loses Wi-Fi: when some of it is still connecting (a slow storm on a loaded
            # machine), wait for it, so the effect is the same every run; bounded, after which the online part
            # drops.
            waiting = [t for t in members if t.phase != Phase.ONLINE]
            now = sim.mono()
            if not give_up[0]:
                give_up[0] = now + FLAP_WAIT_S
            if waiting and now < give_up[0]:
                sim.hold(sim.after_real(FLAP_POLL_S, flap))
                return
            sim.stats.mark(
                f"wifi-flap: {room} goes dark for {p.flap_down_s:g} s"
                + (f" ({len(waiting)} never connected)" if waiting else "")
            )
            for t in members:
                if t.phase == Phase.ONLINE:
                    t.flap(down_real)

        sim.hold(sim.at_sim(bell + timedelta(seconds=p.flap_at_s), flap))
        sim.outcome["flap_room"] = room
        sim.scenario_notes["wifi-flap"] = f"{room} ({len(members)} terminals) drops for {p.flap_down_s:g} s"
    if "broker-restart" in names:
        if sim.hooks.restart_broker is None:
            sim.scenario_notes["broker-restart"] = "skipped: this broker is not controlled by the simulator"
        else:
            restart = sim.hooks.restart_broker

            def go() -> None:
                sim.stats.mark("broker-restart: restarting the broker")

                async def run() -> None:
                    await restart()
                    sim.stats.mark("broker-restart: broker is back")

                sim.spawn(run(), "sim-broker-restart")

            sim.hold(sim.at_sim(bell + timedelta(seconds=p.restart_at_s), go))
            sim.scenario_notes["broker-restart"] = (
                f"broker restarts {p.restart_at_s:g} s after the first bell"
            )
    if "bell-storm" in names:
        sim.scenario_notes["bell-storm"] = (
            f"{len(sim.terminals)} terminals connect within {p.storm_window_s:g} s (real)"
        )
    if "lesson-peak" in names:
        sim.scenario_notes["lesson-peak"] = (
            f"every terminal in class, a content pack at each lesson start, "
            f"telemetry every {p.peak_telemetry_interval_s} s"
        )
