"""Device state as a pure reducer: (state, messages, device, context) -> (new state, typed effects).

The rules for what a device's messages do to its latest state live here: the sequence window, the presence
state machine, the health re-check, which alerts open or resolve, command replies, login pseudonyms and usage
roll-ups. Nothing here touches SQL or MQTT: `fleet.persistence.ingest_repo` loads the rows, calls `reduce`,
saves the new states and writes the effects.

One device's messages of one batch are reduced together, in arrival order. Health is re-checked once, after
the last of them, as of the latest readings: a reading that comes and goes inside one batch opens no alert.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.domain import health as health_rules
from fleet.domain import seqwindow
from fleet.domain.wire import Ack, Event, EventType, Heartbeat, Result, ScreenEnd, Status, Telemetry, Uplink

# Boot timestamps kept per device for the repeated-reboots rule.
MAX_RECENT_BOOTS = 10
# Roll-up bucket widths. Bandwidth: 5 minutes shows the 08:00 bell peak without 1-minute noise, and keeps
# ~160k rows a day for 550 rooms. Activity: one hour per device keeps 10,000 devices at ~100k rows a school
# day.
BYTES_BUCKET_SECONDS = 300
ACTIVE_BUCKET_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """What ingest knows of a device from its credentials: placement, model and health thresholds."""

    device_id: int
    school_id: int
    room_id: int | None
    school_code: str
    username: str
    revoked: bool
    model: str
    device_kind: str
    room_kind: str | None
    thresholds: health_rules.Thresholds = health_rules.DEFAULT_THRESHOLDS
    # The school's time zone: a screen_session counts in the local day it started (protocol 5.3.1).
    timezone: str = "UTC"


class DeviceState(NamedTuple):
    """The latest known state of one device; field for field the `device_state` row, in column order.

    An immutable NamedTuple rather than a frozen dataclass: ingest builds one per device per batch (two with
    the load), and a 26-field frozen slotted dataclass makes ~26 object.__setattr__ calls to build, measured
    ~8x a NamedTuple; that was a few per cent of the ~70 us a message costs in all. Datetimes are aware UTC.
    """

    device_id: int
    last_seen_at: datetime | None = None
    # Highest seq seen and a bitmask of the 62 below it (fleet.domain.seqwindow).
    last_seq: int = 0
    seq_mask: int = 0
    last_ts_ms: int | None = None
    state_seq: int = 0  # seq of the telemetry the readings below are from
    battery_pct: int | None = None
    charging: bool | None = None
    temperature_c: float | None = None
    storage_used_pct: float | None = None
    firmware_version: str | None = None
    app: str | None = None
    rssi_dbm: int | None = None
    bytes_up_total: int = 0
    bytes_down_total: int = 0
    messages_total: int = 0
    duplicates_total: int = 0
    last_active_minute: int = 0  # epoch minute last counted in the active-minutes roll-up
    online: bool = False
    online_changed_at: datetime | None = None
    health: str = "unknown"
    health_reasons: tuple[str, ...] = ()
    recent_boots: tuple[int, ...] = ()  # device ms timestamps of recent boots, newest last
    last_error_code: str | None = None
    session_pseudonym: str | None = None
    session_started_at: datetime | None = None


# ------------------------------------------------------------------ effects
@dataclass(frozen=True, slots=True)
class PresenceChanged:
    online: bool
    at: datetime
    expected: bool | None  # offline only: the timetable expected it (no lesson); None when coming online
    cause: str  # status, lwt, shutdown, message


@dataclass(frozen=True, slots=True)
class AlertOpened:
    rule: str
    severity: str
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AlertResolved:
    rule: str


@dataclass(frozen=True, slots=True)
class CommandAcked:
    correlation_id: str
    accepted: bool
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class CommandFinished:
    correlation_id: str
    ok: bool
    code: str | None
    detail: dict[str, Any] | None
    at: datetime


@dataclass(frozen=True, slots=True)
class BytesUsed:
    """Bytes a device reported, for the roll-up bucket starting at `bucket_start`."""

    bucket_start: datetime
    up: int
    down: int


@dataclass(frozen=True, slots=True)
class ActiveMinute:
    """One more active minute, for the roll-up bucket starting at `bucket_start`."""

    bucket_start: datetime


@dataclass(frozen=True, slots=True)
class ScreenUsed:
    """One screen_session, for the screen-time roll-up of the school's local day it started in."""

    day: date
    use_s: int
    end: ScreenEnd
    long: bool  # longer than the session limit in force
    session_min: int | None  # the policy in force; None: none
    daily_min: int | None


@dataclass(frozen=True, slots=True)
class HealthChanged:
    health: str


@dataclass(frozen=True, slots=True)
class SessionChanged:
    pseudonym: str | None  # None: signed out


@dataclass(frozen=True, slots=True)
class FirmwareReported:
    version: str


Effect = (
    PresenceChanged
    | AlertOpened
    | AlertResolved
    | CommandAcked
    | CommandFinished
    | BytesUsed
    | ActiveMinute
    | ScreenUsed
    | HealthChanged
    | SessionChanged
    | FirmwareReported
)

ExpectedOffline = Callable[[DeviceRef, datetime], bool]


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need besides the state and the messages: the batch's time and the injected lookups."""

    now: datetime
    pseudonym_key: str
    # Whether the timetable expects this device offline at that time (no lesson in its room).
    expected_offline: ExpectedOffline
    now_ms: int = field(init=False)  # `now` in epoch ms, for the boot window

    def __post_init__(self) -> None:
        object.__setattr__(self, "now_ms", int(self.now.timestamp() * 1000))


def pseudonym(key: str, user: str) -> str:
    """The keyed pseudonym that replaces a login reference (HMAC-SHA256, 128 bits hex)."""
    return hmac.new(key.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(epoch_ms: int, timezone: str) -> date:
    """The local day of a device timestamp in the school's time zone (UTC when the zone is unknown)."""
    try:
        zone = _zone(timezone)
    except (ZoneInfoNotFoundError, ValueError):  # schools are validated on write; never fail ingest on one
        zone = _zone("UTC")
    return datetime.fromtimestamp(epoch_ms / 1000, zone).date()


@lru_cache(maxsize=256)
def _utc(epoch_s: int) -> datetime:
    # Bucket starts repeat for every message of a bucket: one datetime per bucket, not one per message.
    return datetime.fromtimestamp(epoch_s, UTC)


def apply(
    state: DeviceState, value: Uplink, received_at: datetime, device: DeviceRef, ctx: Context
) -> tuple[DeviceState, list[Effect]]:
    """One message: `reduce` of a batch of one."""
    return reduce(state, ((value, received_at),), device, ctx)


def reduce(
    state: DeviceState,
    messages: Sequence[tuple[Uplink, datetime]],
    device: DeviceRef,
    ctx: Context,
) -> tuple[DeviceState, list[Effect]]:
    """The state after `messages` (value, receive time; in arrival order) and what they caused, in order."""
    effects: list[Effect] = []
    (
        device_id,
        last_seen_at,
        last_seq,
        seq_mask,
        last_ts_ms,
        state_seq,
        battery_pct,
        charging,
        temperature_c,
        storage_used_pct,
        firmware_version,
        app,
        rssi_dbm,
        bytes_up_total,
        bytes_down_total,
        messages_total,
        duplicates_total,
        last_active_minute,
        online,
        online_changed_at,
        health,
        health_reasons,
        recent_boots,
        last_error_code,
        session_pseudonym,
        session_started_at,
    ) = state
    health_touched = False
    before_inputs = (
        battery_pct,
        charging,
        temperature_c,
        storage_used_pct,
        last_error_code,
        len(recent_boots),
    )
    # Bytes of consecutive messages in one bucket add up into one effect.
    bytes_bucket = -1
    bytes_up = bytes_down = 0

    for v, at in messages:
        if isinstance(v, (Telemetry, Heartbeat, Event)):
            is_new, last_seq, seq_mask = seqwindow.accept(last_seq, seq_mask, v.seq)
            if not is_new:
                duplicates_total += 1
                continue
            messages_total += 1
            if last_ts_ms is None or v.ts_ms > last_ts_ms:
                last_ts_ms = v.ts_ms
            epoch = int(at.timestamp())
            if isinstance(v, Telemetry):
                if v.bytes_up or v.bytes_down:
                    bytes_up_total += v.bytes_up
                    bytes_down_total += v.bytes_down
                    bucket = epoch - epoch % BYTES_BUCKET_SECONDS
                    if bucket != bytes_bucket:
                        if bytes_bucket >= 0:
                            effects.append(BytesUsed(_utc(bytes_bucket), bytes_up, bytes_down))
                        bytes_bucket, bytes_up, bytes_down = bucket, 0, 0
                    bytes_up += v.bytes_up
                    bytes_down += v.bytes_down
                # Readings only move forward: an older telemetry arriving late (another worker, a
                # redelivery) still counts its bytes but never overwrites newer readings.
                if v.seq > state_seq:
                    state_seq = v.seq
                    battery_pct = v.battery_pct
                    charging = v.charging
                    temperature_c = v.temperature_c
                    storage_used_pct = v.storage_used_pct
                    if v.firmware is not None:
                        firmware_version = v.firmware
                        effects.append(FirmwareReported(v.firmware))
                    app = v.app
                    if v.rssi_dbm is not None:
                        rssi_dbm = v.rssi_dbm
                    health_touched = True
            elif isinstance(v, Heartbeat):
                if v.rssi_dbm is not None:
                    rssi_dbm = v.rssi_dbm
            else:
                health_touched = True
                t = v.type
                if t == EventType.BOOT:
                    recent_boots = (*recent_boots, v.ts_ms)[-MAX_RECENT_BOOTS:]
                    # A reboot clears a reported error (the error-code rule reflects the current boot only)
                    # and ends the session.
                    last_error_code = None
                    session_pseudonym = None
                    session_started_at = None
                elif t == EventType.ERROR:
                    last_error_code = v.code
                elif t == EventType.LOGIN and v.user is not None:
                    session_pseudonym = pseudonym(ctx.pseudonym_key, v.user)
                    session_started_at = at
                    effects.append(SessionChanged(session_pseudonym))
                elif t == EventType.LOGOUT:
                    session_pseudonym = None
                    session_started_at = None
                    effects.append(SessionChanged(None))
                elif t == EventType.SCREEN_SESSION and v.screen is not None:
                    s = v.screen
                    effects.append(
                        ScreenUsed(
                            local_day(s.start_ms, device.timezone),
                            s.use_s,
                            s.end,
                            s.session_min is not None and s.use_s > 60 * s.session_min,
                            s.session_min,
                            s.daily_min,
                        )
                    )
            minute = epoch // 60
            if minute > last_active_minute:
                last_active_minute = minute
                effects.append(ActiveMinute(_utc(epoch - epoch % ACTIVE_BUCKET_SECONDS)))
        elif isinstance(v, Ack):
            effects.append(CommandAcked(v.id, v.accepted, v.reason, at))
        elif isinstance(v, Result):
            effects.append(CommandFinished(v.id, v.ok, v.code, v.detail, at))

        if isinstance(v, Status) and not v.online:
            if online or online_changed_at is None:
                online = False
                online_changed_at = at
                expected = ctx.expected_offline(device, at)
                cause = "lwt" if v.reason == "lwt" else ("shutdown" if v.reason == "shutdown" else "status")
                effects.append(PresenceChanged(False, at, expected, cause))
                if not expected:
                    effects.append(
                        AlertOpened("unexpected_offline", "warning", f"offline ({cause}) during a lesson", at)
                    )
        else:
            # Any other message is a sign of life; last_seen only moves forward.
            if last_seen_at is None or at > last_seen_at:
                last_seen_at = at
            if not online:
                online = True
                online_changed_at = at
                effects.append(
                    PresenceChanged(True, at, None, "status" if isinstance(v, Status) else "message")
                )
                effects.append(AlertResolved("unexpected_offline"))

    if bytes_bucket >= 0:
        effects.append(BytesUsed(_utc(bytes_bucket), bytes_up, bytes_down))

    if health_touched and (
        health == "unknown"
        or (battery_pct, charging, temperature_c, storage_used_pct, last_error_code, len(recent_boots))
        != before_inputs
    ):
        # Re-evaluated only when a rule input changed: most telemetry repeats the last reading.
        findings = health_rules.evaluate(
            device.thresholds,
            battery=battery_pct,
            charging=charging,
            temperature=temperature_c,
            storage=storage_used_pct,
            error_code=last_error_code,
            boots_ms=recent_boots,
            now_ms=ctx.now_ms,
        )
        before = set(health_reasons)
        after = {f.rule for f in findings}
        for f in findings:
            if f.rule not in before:
                effects.append(AlertOpened(f.rule, f.severity, f.detail, ctx.now))
        for rule in before - after:
            effects.append(AlertResolved(rule))
        health_reasons = tuple(sorted(after))
        new_health = health_rules.state_of(findings)
        if new_health != health:
            health = new_health
            effects.append(HealthChanged(new_health))

    return DeviceState(
        device_id,
        last_seen_at,
        last_seq,
        seq_mask,
        last_ts_ms,
        state_seq,
        battery_pct,
        charging,
        temperature_c,
        storage_used_pct,
        firmware_version,
        app,
        rssi_dbm,
        bytes_up_total,
        bytes_down_total,
        messages_total,
        duplicates_total,
        last_active_minute,
        online,
        online_changed_at,
        health,
        health_reasons,
        recent_boots,
        last_error_code,
        session_pseudonym,
        session_started_at,
    ), effects
