"""The typed messages of protocol v1: what devices send (uplink) and what the service sends (commands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.domain.wire.vocabulary import Channel, CommandName, EventType, ScreenEnd


@dataclass(frozen=True, slots=True)
class ScreenSession:
    """One continuous-use session of a screen_session event (section 5.3.1)."""

    start_ms: int
    use_s: int
    end: ScreenEnd
    session_min: int | None = None  # the policy in force; None: no policy
    daily_min: int | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    seq: int
    ts_ms: int
    battery_pct: int | None = None
    temperature_c: float | None = None
    storage_used_pct: float | None = None
    firmware: str | None = None
    app: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    rssi_dbm: int | None = None
    charging: bool | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    seq: int
    ts_ms: int
    rssi_dbm: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts_ms: int
    type: EventType
    code: str | None = None
    # Only for login/logout: the raw user reference. The ingest seam replaces it by an HMAC pseudonym before
    # anything is stored or logged; repr=False keeps it out of any accidental log line.
    user: str | None = field(default=None, repr=False)
    # Only for screen_session.
    screen: ScreenSession | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    id: str
    ts_ms: int
    accepted: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    ts_ms: int
    ok: bool
    code: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Status:
    online: bool
    ts_ms: int | None = None
    reason: str | None = None


Uplink = Telemetry | Heartbeat | Event | Ack | Result | Status

_CHANNEL_OF: dict[type, Channel] = {
    Telemetry: Channel.TELEMETRY,
    Heartbeat: Channel.HEARTBEAT,
    Event: Channel.EVENT,
    Ack: Channel.ACK,
    Result: Channel.RESULT,
    Status: Channel.STATUS,
}


def channel_of(value: Uplink) -> Channel:
    """The uplink channel a message is published on."""
    return _CHANNEL_OF[type(value)]


@dataclass(frozen=True, slots=True)
class Policy:
    """Screen-time policy for myopia prevention, plus the allowed-apps list."""

    session_minutes: int
    daily_minutes: int
    break_minutes: int = 10
    allowed_apps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A well-formed command whose name this protocol version does not know: the device acks it refused."""

    id: str
    name: str
    issued_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    name: CommandName
    issued_at_ms: int
    expires_at_ms: int
    args: dict[str, Any] = field(default_factory=dict)
