"""Protocol v1's closed word lists: channels, event types and command names."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """The last topic level; uplink channels are published by devices, `cmd` by the service."""

    TELEMETRY = "telemetry"
    HEARTBEAT = "heartbeat"
    EVENT = "event"
    ACK = "ack"
    RESULT = "result"
    STATUS = "status"
    CMD = "cmd"
    # Firmware-update progress (section 10): read by the rollout job, not by telemetry ingest.
    UPDATE = "update"


UPLINK_CHANNELS: tuple[Channel, ...] = (
    Channel.TELEMETRY,
    Channel.HEARTBEAT,
    Channel.EVENT,
    Channel.ACK,
    Channel.RESULT,
    Channel.STATUS,
)
# Every channel a device may publish on: the ingest channels plus update progress.
DEVICE_PUBLISH_CHANNELS: tuple[Channel, ...] = (*UPLINK_CHANNELS, Channel.UPDATE)


class EventType(StrEnum):
    BOOT = "boot"
    ERROR = "error"
    LOGIN = "login"
    LOGOUT = "logout"
    APP_START = "app_start"
    APP_STOP = "app_stop"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    # One continuous-use session, when it ends (section 5.3.1): the screen-time report's only source.
    SCREEN_SESSION = "screen_session"


class ScreenEnd(StrEnum):
    """Why a screen_session ended (section 5.3.1)."""

    BREAK = "break"  # the policy's session_minutes: a break enforced
    DAILY_LIMIT = "daily_limit"  # the policy's daily_minutes: locked until the next local day
    IDLE = "idle"  # the user stopped for the rest length
    LOCKED = "locked"  # a lock command, or the user locked it for the rest length
    SHUTDOWN = "shutdown"  # power off, reboot, battery out


class CommandName(StrEnum):
    REBOOT = "reboot"
    LOCK = "lock"
    UNLOCK = "unlock"
    SET_POLICY = "set_policy"
    DIAGNOSTICS = "diagnostics"
    UPDATE = "update"
    # Credential rotation (section 8.1): a new password on the device's cmd topic; the service queues it.
    ROTATE_CREDENTIALS = "rotate_credentials"
