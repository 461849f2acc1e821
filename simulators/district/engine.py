"""The district simulation: provisioning, enrollment, terminals on a simulated clock, scenarios, accounting.

One asyncio loop drives every terminal (see mqttpool); timers, not tasks, move them through the day.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import math
import os
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil

from fleet.domain import wire
from fleet.runtime.supervise import TaskOwner
from simulators.district.clock import Anchor, SimClock
from simulators.district.fleetlink import Credentials, DeviceState, Enroller, ReadBack
from simulators.district.hooks import Hooks
from simulators.district.labs import Labs
from simulators.district.mqttpool import Pool, raise_fd_limit
from simulators.district.scenarios import apply as apply_scenarios
from simulators.district.spec import District, Room, School, TrafficIn
from simulators.district.stats import Stats
from simulators.district.terminal import Phase, Terminal
from simulators.district.updates import Updates
from simulators.terminal.credentials import CredentialStore

logger = logging.getLogger(__name__)

# Sampling period of the run's time series (connects/s, online, messages/s, CPU): one point a second.
SAMPLE_S = 1.0
# Refused stored credentials are re-enrolled in batches: a connect storm's refusals, gathered this long.
REENROLL_BATCH_S = 0.2
# After the run, wait at most this long for the broker to acknowledge what terminals sent, and for the
# service to ingest it, before counting what is missing as lost.
SETTLE_TIMEOUT_S = 60.0
# Publish->state probes: this many terminals per probe round, one round every PROBE_EVERY_S; enough samples
# for a p99 over a minute, few enough that polling the read-back costs the service nothing measurable.
PROBE_BATCH = 10
PROBE_EVERY_S = 1.0
# A probe that the service has not reflected in this long is recorded as this long (and counted as late).
PROBE_TIMEOUT_S = 10.0
# Poll period of a probe round: 100 ms resolution on a latency target of 1-2 s, at 10 queries a second (each
# query is a few milliseconds of the generator's CPU).
PROBE_POLL_S = 0.1
# seq persistence (protocol 5): on start skip to the next block of 1,000 above the stored high-water mark.
# Presence settles when the service's last online change is no older than the terminal's last connect, less
# this many simulated seconds (the two clocks are one anchor on one machine; this only absorbs rounding).
PRESENCE_SLACK_S = 1.0
SEQ_BLOCK = 1000
# Event-loop lag probe: how late a short sleep wakes tells how far behind its schedule the generator runs
# (a late tick publishes late; a late probe poll measures its own delay as the service's). 50 ms resolves
# lags that matter against a 2 s target, at 20 wake-ups a second.
LAG_PROBE_S = 0.05
# Slot of the telemetry timer wheel (real seconds): ticks due within one slot run in one loop callback. 20 ms
# is 0.4 simulated seconds at x20, far below a 60 s telemetry interval, and 50 callbacks a second instead of
# one timer handle (and a heap push and pop) per message.
TICK_SLOT_S = 0.02


class TickWheel:
    """One timer wheel for every terminal's telemetry tick, instead of a loop timer per terminal.

    Ten thousand terminals each ticking every few real seconds cost a TimerHandle, a heap push and a heap pop
    (about 15 comparisons deep) per message. Here a tick is an append to its slot's list, and one callback per
    slot runs the slot's terminals in order. A terminal's `tick_gen` cancels: a stale entry is skipped.
    """

    def __init__(self, slot_s: float = TICK_SLOT_S, mono: Callable[[], float] = time.monotonic) -> None:
        self.slot_s = slot_s
        self._mono = mono
        self.slots: dict[int, list[tuple[Terminal, int]]] = collections.defaultdict(list)
        self._next = int(mono() / slot_s)  # first slot not yet run
        self._armed: asyncio.TimerHandle | None = None
        self._armed_slot = 0
        self._turning = False
        self.stopped = False

    def schedule(self, t: Terminal, when: float) -> None:
        """Tick `t` once the monotonic clock reaches `when` (in the first slot that begins at or after it)."""
        t.tick_gen += 1
        if not self.slots:  # nothing pending: the wheel starts at the present slot
            self._next = int(self._mono() / self.slot_s)
        slot = max(self._next, math.ceil(when / self.slot_s))  # never early
        self.slots[slot].append((t, t.tick_gen))
        if self.stopped:
            return
        if self._armed is None:
            self._arm(slot)
        elif (
            slot < self._armed_slot and not self._turning
        ):  # due before what the wheel waits for: wake earlier
            self._armed.cancel()
            self._arm(slot)

    @staticmethod
    def cancel(t: Terminal) -> None:
        t.tick_gen += 1

    def _arm(self, slot: int) -> None:
        delay = slot * self.slot_s - self._mono()
        self._armed = asyncio.get_running_loop().call_later(max(0.0, delay), self._turn)
        self._armed_slot = slot

    def run_due(self) -> None:
        """Run every tick whose slot has begun, in slot order."""
        now = int(self._mono() / self.slot_s)
        slots = self.slots
        while self._next <= now:
            due = slots.pop(self._next, None)
            self._next += 1
            if due:
                for t, gen in due:
                    if t.tick_gen == gen:
                        t.tick()

    def _turn(self) -> None:
        # `_armed` stays set while the slots run, so the ticks they reschedule do not arm the wheel again.
        self._turning = True
        try:
            self.run_due()
        finally:
            self._turning = False
            self._armed = None
            if self.slots and not self.stopped:
                self._arm(min(self.slots))

    def stop(self) -> None:
        self.stopped = True
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self.slots.clear()


class Simulation:
    def __init__(
        self,
        district: District,
        *,
        broker: tuple[str, int],
        enroller: Enroller,
        readback: ReadBack | None,
        scenarios: tuple[str, ...],
        duration_s: float,
        speed: float | None = None,
        prefix: str = "labfleet",
        state_file: Path | None = None,
        seed: int = 2027,
        hooks: Hooks | None = None,
        start: datetime | None = None,
        stop_early: bool = True,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.district = district
        self.broker = broker
        # MQTT over TLS: every terminal verifies the broker with this context (the district CA).
        self.tls_context = tls_context
        self.enroller = enroller
        self.readback = readback
        self.scenarios = scenarios
        self.duration_s = duration_s
        self.speed = speed or district.speed
        self.prefix = prefix
        self.topics = wire.Topics(prefix)
        self.state_file = state_file
        self.rng = random.Random(seed)
        self.hooks = hooks or Hooks()
        self.start_local = start or district.start
        self.stop_early = stop_early
        self.clock = SimClock()
        self.stats = Stats()
        self.terminals: list[Terminal] = []
        self.by_serial: dict[str, Terminal] = {}
        self.rooms: dict[str, tuple[School, Room]] = {}
        self.pool: Pool = None  # type: ignore[assignment]  # made first thing in run(), before any reader
        self.connect_queue: collections.deque[Terminal] = collections.deque()
        self._connector_wake = asyncio.Event()
        self.traffic: TrafficIn = district.traffic_for("terminal")
        self._peak = "lesson-peak" in scenarios
        self._peak_interval = float(district.scenario.peak_telemetry_interval_s)
        self._interval = float(self.traffic.telemetry_interval_s)
        self.enroll_results: dict[str, str] = {}
        # Terminals whose stored password the broker refused, enrolled afresh: serial -> "ok" or the reason.
        self.reenroll_results: dict[str, str] = {}
        self._reenroll_queue: list[Terminal] = []
        self._reenroll_task: asyncio.Task[None] | None = None
        self.enroll_seconds = 0.0
        self.baseline: dict[str, DeviceState] = {}
        self.outcome: dict[str, Any] = {}
        self.scenario_notes: dict[str, str] = {}
        self._tasks = TaskOwner(logger)  # a helper task's failure must not lose the report: it is logged
        self._handles: set[asyncio.TimerHandle] = set()
        self.lab_devices = district.count(transport="serial")
        self.labs = Labs()
        self._period_cache: dict[str, tuple[int, Any]] = {}
        self._tz = {s.code: ZoneInfo(s.timezone) for s in district.schools}
        self.flap_room: str | None = None
        self.storm_done_mono: float | None = None
        self.frozen = False
        self.updates = Updates(self)
        self.ticks = TickWheel()

    # ---------------------------------------------------------------- time helpers
    @staticmethod
    def mono() -> float:
        return time.monotonic()

    def _clock_ms(self) -> int:
        return self.clock.now_ms()

    def after_real(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        h = loop.call_later(max(0.0, delay), fn)
        return h

    def tick_after(self, t: Terminal, sim_seconds: float, *, first: bool = False) -> None:
        """Schedule `t`'s next tick `sim_seconds` after its previous one was due (or after now, when `first`).

        Counting from when the tick was due, not from when it ran, keeps the offered rate at the spec's
        however late a busy loop runs the ticks: lateness does not accumulate into a lower rate, it is caught
        up.
        """
        real = sim_seconds / self.speed
        now = time.monotonic()
        due = now + real if first else t.due + real
        if due < now - real:  # more than an interval behind (back from a long stall): restart the cadence
            due = now + real
        t.due = due
        self.ticks.schedule(t, due)

    def after_sim(self, sim_seconds: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.after_real(sim_seconds / self.speed, fn)

    def at_sim(self, when: datetime, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.after_real(self.clock.delay_until(when), fn)

    def local(self, school: str, at: datetime | None = None) -> datetime:
        return (at or self.clock.now()).astimezone(self._tz[school]).replace(tzinfo=None)

    def to_utc(self, school: str, local: datetime) -> datetime:
        return local.replace(tzinfo=self._tz[school]).astimezone(UTC)

    # ---------------------------------------------------------------- behaviour questions terminals ask
    def _periods(self, school_code: str, day: datetime) -> tuple[Any, ...]:
        school = self._school(school_code)
        return self.district.timetables[school.timetable].periods_on(day.weekday())

    def _school(self, code: str) -> School:
        return self.rooms_by_school[code]

    def local_day(self, t: Terminal) -> date:
        """The terminal's local day (its school's time zone): what its daily screen-time limit counts in."""
        return self.local(t.school).date()

    def current_period(self, t: Terminal) -> Any:
        # Asked four times per tick by every terminal; the answer is the school's, and bells ring on whole
        # minutes, so one look-up (a time-zone conversion and a walk over the periods) per school per
        # simulated second serves them all.
        sec = int(self.clock.monotonic())
        hit = self._period_cache.get(t.school)
        if hit is not None and hit[0] == sec:
            return hit[1]
        now = self.local(t.school)
        found = None
        for p in self._periods(t.school, now):
            if p.start <= now.time() < p.end:
                found = p
                break
        self._period_cache[t.school] = (sec, found)
        return found

    def in_lesson(self, t: Terminal) -> bool:
        return self.current_period(t) is not None

    def telemetry_interval(self, t: Terminal, period: Any = None, known: bool = False) -> float:
        """Simulated seconds to the next tick; `period` is the current one when the caller has it
        (`known`)."""
        if self._peak and (period if known else self.current_period(t)) is not None:
            return self._peak_interval
        return self._interval

    def lesson_bytes(self, t: Terminal, interval: float, period: Any = None) -> tuple[int, int]:
        tr = self.traffic
        f = interval / 60 * self.rng.uniform(0.7, 1.3)
        up, down = int(tr.bytes_up_per_lesson_minute * f), int(tr.bytes_down_per_lesson_minute * f)
        if t.exam:
            return up // 5, down // 5
        if period is None:
            period = self.current_period(t)
        key = (t.serial, period.name if period else "")
        if period is not None and key not in self._burst_seen:
            self._burst_seen.add(key)
            p = 1.0 if "lesson-peak" in self.scenarios else tr.burst.probability
            if self.rng.random() < p:
                down += tr.burst.bytes_down
        return up, down

    # ---------------------------------------------------------------- the TerminalHost protocol
    def connect_soon(self, t: Terminal) -> None:
        """Queue `t` for the connector (at most MAX_CONNECTING waiting for CONNACK at once)."""
        self.connect_queue.append(t)
        self._connector_wake.set()

    def cancel_tick(self, t: Terminal) -> None:
        self.ticks.cancel(t)

    def update_command(self, t: Terminal, cmd: wire.Command) -> None:
        self.updates.command(t, cmd)

    def hold(self, handle: asyncio.TimerHandle) -> None:
        """Keep a planned timer (a scenario's, the day plan's): cancelled when the run's time is up."""
        self._handles.add(handle)

    # ---------------------------------------------------------------- setup
    async def enroll_all(self) -> None:
        """Credentials from the state file, or enrollment with a claim token on first use."""
        stored = self._load_state()
        need: dict[str, list[str]] = collections.defaultdict(list)
        creds: dict[str, Credentials] = {}
        for s, _r, d in self.district.devices():
            if d.transport != "mqtt":
                continue
            c = stored.get(d.serial)
            if c is not None:
                creds[d.serial] = Credentials(d.serial, c["password"], s.code)
            else:
                need[s.code].append(d.serial)
        started = time.monotonic()
        # Every school at once, as at a real first bell; the enroller bounds what is in flight overall.
        results = await asyncio.gather(
            *(self.enroller.enroll(code, serials) for code, serials in need.items())
        )
        for got in results:
            for serial, res in got.items():
                if isinstance(res, Credentials):
                    creds[serial] = res
                    self.enroll_results[serial] = "ok"
                else:
                    self.enroll_results[serial] = res
        finish = getattr(self.enroller, "done", None)
        if finish is not None and need:
            await finish()
        self.enroll_seconds = time.monotonic() - started
        self._creds = creds
        self._stored = stored

    def reenroll(self, t: Terminal) -> bool:
        """Stored credentials refused: enroll `t` afresh, once per run (batched per school); False when it was
        already tried, so the terminal backs off as any refused terminal does."""
        if t.serial in self.reenroll_results or self.enroller is None:
            return False
        self.reenroll_results[t.serial] = "pending"
        self._reenroll_queue.append(t)
        if self._reenroll_task is None or self._reenroll_task.done():
            self._reenroll_task = asyncio.get_running_loop().create_task(self._reenroll_batch())
        return True

    async def _reenroll_batch(self) -> None:
        while self._reenroll_queue:  # refusals that arrive while a batch is enrolling go in the next one
            await asyncio.sleep(REENROLL_BATCH_S)  # the refusals of one connect storm arrive together
            batch, self._reenroll_queue = self._reenroll_queue, []
            await self._reenroll(batch)

    async def _reenroll(self, batch: list[Terminal]) -> None:
        by_school: dict[str, list[Terminal]] = collections.defaultdict(list)
        for t in batch:
            by_school[t.school].append(t)
        results = await asyncio.gather(
            *(self.enroller.enroll(code, [t.serial for t in ts]) for code, ts in by_school.items()),
            return_exceptions=True,
        )
        fresh: list[Terminal] = []
        for (_code, ts), got in zip(by_school.items(), results, strict=True):
            for t in ts:
                res = (
                    got.get(t.serial, "no answer")
                    if isinstance(got, dict)
                    else f"{type(got).__name__}: {got}"
                )
                if isinstance(res, Credentials):
                    t.password = t.trying = res.password
                    t.creds = CredentialStore(res.password)
                    self.reenroll_results[t.serial] = "ok"
                    fresh.append(t)
                else:
                    self.reenroll_results[t.serial] = str(res)
        finish = getattr(self.enroller, "done", None)
        if finish is not None and fresh:
            await finish()
        for t in batch:
            t.wake() if t in fresh else t._retry_later()

    def _load_state(self) -> dict[str, dict[str, Any]]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
            return dict(data.get("devices", {}))
        except (OSError, ValueError):
            logger.warning("ignoring unreadable simulator state file %s", self.state_file)
            return {}

    def save_state(self) -> None:
        if self.state_file is None:
            return
        devices = dict(self._stored)
        for t in self.terminals:
            devices[t.serial] = {"password": t.password, "seq": t.seq}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"district": self.district.name, "devices": devices}))
        os.chmod(tmp, 0o600)  # device passwords
        os.replace(tmp, self.state_file)

    def build_terminals(self) -> None:
        self.rooms_by_school = {s.code: s for s in self.district.schools}
        self._burst_seen: set[tuple[str, str]] = set()
        for s, r, d in self.district.devices():
            self.rooms[f"{s.code}/{r.name}"] = (s, r)
            if d.transport != "mqtt" or d.serial not in self._creds:
                continue
            stored = self._stored.get(d.serial, {})
            seq = int(stored.get("seq", 0))
            if seq:
                seq = (seq // SEQ_BLOCK + 1) * SEQ_BLOCK
            t = Terminal(
                self,
                d.serial,
                s.code,
                r.name,
                self._creds[d.serial].password,
                seq,
                random.Random(self.rng.random()),
                self.district.models[d.model].firmware,
            )
            t.attending = t.rng.random() < self.traffic.attendance
            if t.rng.random() < self.traffic.screen_policy_share:
                t.screen.set_policy(self.traffic.screen_policy.model_dump())
            self.terminals.append(t)
            self.by_serial[t.serial] = t

    # ---------------------------------------------------------------- run
    async def run(self) -> dict[str, Any]:
        raise_fd_limit(len(self.district.devices()) + 2048)
        self.stats.started_mono = time.monotonic()
        try:
            return await self._run()
        finally:
            # After a failed run too: no task is left pending, no terminal socket left open.
            await self._tasks.aclose()
            if self.pool is not None:
                await self.pool.close()
            await self.labs.aclose()
            # Hand what the sampler froze back to the cyclic GC, and collect it now, between runs: a second
            # run in the same process (the district benchmark's x1 run) would otherwise keep this run's 10,000
            # clients for good, or pay for collecting them in the middle of its own measurements.
            gc.unfreeze()
            gc.collect()

    async def _run(self) -> dict[str, Any]:
        # Lab rooms first: their agents find, identify and enroll kits while the terminals enroll. Kits read
        # the simulated clock, which runs once it is anchored below (and reads the real time until then).
        edge = self.district.edge
        await self.labs.start(
            self.district,
            edge.labs,
            self.hooks.start_lab_agent,
            max(0.5, edge.health_interval_s / self.speed),
            self._clock_ms,
        )
        await self.enroll_all()
        self.build_terminals()
        if self.readback is not None and self.terminals:
            self.baseline = await self.readback.device_states([t.serial for t in self.terminals])
        sim_start = self.to_utc(self.district.schools[0].code, self.start_local)
        self.clock.set_anchor(Anchor(sim_start, time.monotonic(), self.speed))
        if self.hooks.set_service_clock is not None:
            await self.hooks.set_service_clock(self.clock.anchor)
            self.service_epoch_at_start = sim_start.timestamp()
        else:
            self.service_epoch_at_start = time.time()
        self.pool = Pool(*self.broker, tls_context=self.tls_context)
        self.pool.start()
        self.stats.started_mono = time.monotonic()
        self.stats.mark(f"simulation starts at {self.start_local.isoformat()} local, x{self.speed:g}")
        self.spawn(self._connector(), "sim-connector")
        self.spawn(self._sampler(), "sim-sampler")
        self.spawn(self._lag_probe(), "sim-lag-probe")
        self.spawn(self.updates.run(), "sim-updates")
        if self.readback is not None:
            self.spawn(self._prober(), "sim-prober")
        self.plan_day()
        await apply_scenarios(self)
        try:
            await asyncio.sleep(self.duration_s)
        finally:
            for h in self._handles:
                h.cancel()
        self.stats.mark("duration reached: settling")
        self.ticks.stop()
        self.frozen = True  # no new traffic from here: what was sent is what gets accounted
        await self._tasks.cancel(("sim-prober", "sim-sampler", "sim-lag-probe"))
        await self._settle()
        await self._tasks.aclose()
        await self.shutdown()
        self.save_state()
        return self.outcome

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `coro` as a named task the simulation owns (cancelled and awaited when the run ends)."""
        self._tasks.spawn(coro, name)

    def plan_day(self) -> None:
        """Wake each terminal before its first bell (with jitter) and put it to sleep after school."""
        storm = "bell-storm" in self.scenarios
        window_real = self.district.scenario.storm_window_s
        for t in self.terminals:
            day = self.start_local
            periods = self._periods(t.school, day)
            if not periods:
                continue
            first = datetime.combine(day.date(), periods[0].start)
            last = datetime.combine(day.date(), periods[-1].end)
            if storm:
                # The bell storm: everyone connects within the window after the simulated start (real
                # seconds).
                self.hold(self.after_real(t.rng.uniform(0, window_real), t.wake))
            else:
                wake = first - timedelta(seconds=t.rng.uniform(0, self.traffic.wake_jitter_s))
                self.hold(self.at_sim(self.to_utc(t.school, max(wake, self.start_local)), t.wake))
            sleep_at = last + timedelta(seconds=self.traffic.after_school_s)
            self.hold(self.at_sim(self.to_utc(t.school, sleep_at), t.sleep))

    async def _connector(self) -> None:
        """Start connects from the queue, at most MAX_CONNECTING waiting for CONNACK at once."""
        q = self.connect_queue
        while True:
            if not q:
                self._connector_wake.clear()
                await self._connector_wake.wait()
                continue
            await self.pool.connecting.acquire()
            t = q.popleft()
            try:
                ok = t.phase == Phase.CONNECTING and t.start_connect()
            except Exception:  # one terminal's broken client must not stop everyone's connects
                logger.exception("connect of %s failed", t.serial)
                ok = False
                t.phase = Phase.BACKOFF
                t._retry_later()
            if not ok:
                self.pool.connecting.release()
            if len(q) % 200 == 0:
                await asyncio.sleep(0)

    async def _lag_probe(self) -> None:
        while True:
            due = time.monotonic() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.stats.loop_lag_max = max(self.stats.loop_lag_max, time.monotonic() - due)

    async def _ingested_total(self) -> int | None:
        """The service's accepted-message count (None when the read-back cannot tell)."""
        read = getattr(self.readback, "messages_total", None)
        if read is None:
            return None
        try:
            return int(await read())
        except Exception:  # the read-back is best effort; a failing one only loses this sample
            logger.debug("ingest count read-back failed", exc_info=True)
            return None

    async def _sampler(self) -> None:
        me = psutil.Process()
        procs: dict[str, psutil.Process] = {}
        last_cpu: dict[str, float] = {}
        prev_t = time.monotonic()
        prev = {"connects": 0, "published": 0, "acked": 0}
        me_cpu = sum(me.cpu_times()[:2])
        ingested0 = prev_ingested = await self._ingested_total()
        frozen_at = -1
        while True:
            await asyncio.sleep(SAMPLE_S)
            if self.stats.connects != frozen_at:
                # Clients and terminals are long-lived: move them out of the cyclic GC's reach as they appear.
                # Otherwise every full collection (triggered by per-message allocations) walks all 10,000 paho
                # clients with the loop standing still: 11 of up to 0.28 s in a 60 s rollout-2027 run, more on
                # a loaded machine. Per-message objects are freed by reference counting all the same.
                gc.freeze()
                frozen_at = self.stats.connects
            ingested = await self._ingested_total()
            now = time.monotonic()
            dt = now - prev_t
            prev_t = now
            online = sum(1 for t in self.terminals if t.phase == Phase.ONLINE)
            point: dict[str, float] = {
                "t": round(now - self.stats.started_mono, 2),
                "sim_minute": round(self.clock.monotonic() / 60, 2),
                "online": online,
            }
            for k, before in prev.items():
                v = getattr(self.stats, k)
                point[f"{k}_per_s"] = round((v - before) / dt, 1)
                prev[k] = v
            point["loop_lag_s"] = round(self.stats.loop_lag_max, 3)
            self.stats.loop_lag_max = 0.0
            if ingested is not None and prev_ingested is not None and ingested0 is not None:
                # Accepted by the service vs acknowledged by the broker: what the ingest still holds or
                # queues.
                point["ingested_per_s"] = round((ingested - prev_ingested) / dt, 1)
                point["backlog"] = max(0, self.stats.acked - (ingested - ingested0))
            prev_ingested = ingested
            cpu = sum(me.cpu_times()[:2])
            point["sim_cpu"] = round((cpu - me_cpu) / dt, 3)
            me_cpu = cpu
            point["sim_rss_mb"] = round(me.memory_info().rss / 1e6, 1)
            if self.hooks.service_pids is not None:
                for name, pid in self.hooks.service_pids().items():
                    try:
                        p = procs.get(name)
                        if p is None or p.pid != pid:
                            p = procs[name] = psutil.Process(pid)
                            last_cpu[name] = sum(p.cpu_times()[:2])
                            continue
                        c = sum(p.cpu_times()[:2])
                        point[f"{name}_cpu"] = round((c - last_cpu[name]) / dt, 3)
                        last_cpu[name] = c
                        point[f"{name}_rss_mb"] = round(p.memory_info().rss / 1e6, 1)
                    except psutil.Error:
                        procs.pop(name, None)
            self.stats.series.append(point)

    async def _prober(self) -> None:
        """Publish->state latency: send telemetry from a few online terminals and poll until the service shows
        it."""
        assert self.readback is not None
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            online = [t for t in self.terminals if t.phase == Phase.ONLINE and not t.malformed]
            if not online:
                continue
            batch = self.rng.sample(online, min(PROBE_BATCH, len(online)))
            sent: dict[str, tuple[int, float]] = {}
            for t in batch:
                t.telemetry(0, 0)
                sent[t.serial] = (t.seq, time.monotonic())
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while sent and time.monotonic() < deadline:
                await asyncio.sleep(PROBE_POLL_S)
                try:
                    states = await self.readback.device_states(list(sent))
                except Exception:  # the read-back is best effort; a failing one only loses samples
                    logger.debug("probe read-back failed", exc_info=True)
                    continue
                now = time.monotonic()
                for serial, st in states.items():
                    seq, t0 = sent.get(serial, (0, 0.0))
                    if seq and st.last_seq >= seq:
                        self.stats.probe_latency.append(now - t0)
                        sent.pop(serial)
            self.stats.probe_late += len(sent)
            self.stats.probe_latency.extend([PROBE_TIMEOUT_S] * len(sent))

    async def _settle(self) -> None:
        """Wait until the broker acked what was sent and the service ingested it (bounded), then account."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(not t.pending or t.phase != Phase.ONLINE for t in self.terminals):
                break
            await asyncio.sleep(0.1)
        self.storm_stats()
        if self.readback is None:
            self.outcome["accounting"] = None
            return
        states: dict[str, DeviceState] = {}
        while True:
            states = await self.readback.device_states([t.serial for t in self.terminals])
            if (self._lost(states) == 0 and self._presence_settled(states)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        self.outcome["states"] = states
        if self.labs.serials:
            self.outcome["lab_states"] = await self.readback.device_states(self.labs.serials)
        # Read before the terminals shut down: a clean shutdown mid-lesson is itself an unexpected offline.
        self.outcome["alerts"] = await self.readback.alerts(self.service_epoch_at_start)
        self.outcome["dead_letters"] = await self.readback.dead_letters()

    def _presence_settled(self, states: dict[str, DeviceState]) -> bool:
        """The service's presence has caught up with every online terminal's last connect.

        A terminal that dropped and came back (wifi-flap, a reboot) is online on both sides before and after
        its Last Will is ingested; only the time of the last change tells them apart. Alerts and presence are
        read once this holds, so they do not depend on how busy the machine is. Needs the service on the
        simulated clock (otherwise: True).
        """
        if self.hooks.set_service_clock is None:
            return True
        a = self.clock.anchor
        for t in self.terminals:
            if t.phase != Phase.ONLINE:
                continue
            st = states.get(t.serial)
            if st is None or not st.online or st.online_changed_at is None:
                return False
            connected_epoch = a.sim_start.timestamp() + (t.connected_at - a.mono_start) * a.speed
            if st.online_changed_at < connected_epoch - PRESENCE_SLACK_S:
                return False
        return True

    def _lost(self, states: dict[str, DeviceState]) -> int:
        lost = 0
        for t in self.terminals:
            st = states.get(t.serial)
            base = self.baseline.get(t.serial)
            got = (st.messages if st else 0) - (base.messages if base else 0)
            lost += max(0, t.counters.acked - got)
        return lost

    def storm_stats(self) -> None:
        if self.stats.connect_times:
            self.storm_done_mono = self.stats.started_mono + max(
                self.stats.connect_times[: len(self.terminals)]
            )

    async def shutdown(self) -> None:
        await self.updates.aclose()
        for t in self.terminals:
            if t.phase == Phase.ONLINE:
                t.sleep()
        await asyncio.sleep(0.2)
        if self.pool is not None:
            await self.pool.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]
