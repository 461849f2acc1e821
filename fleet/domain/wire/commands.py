"""Commands (service -> device, on the `cmd` topic): the policy arguments, encoding a command, and how a
device reads its cmd topic."""

from __future__ import annotations

import json
from typing import Any

from fleet.domain.wire.fields import _Bad, _correlation, _int, _load
from fleet.domain.wire.limits import (
    BREAK_MINUTES_MAX,
    DAILY_MINUTES_MAX,
    MAX_ALLOWED_APPS,
    MAX_CODE_TEXT,
    MAX_DOWNLINK_BYTES,
    MAX_SHORT_TEXT,
    PROTOCOL_VERSION,
    SESSION_MINUTES_MAX,
    TS_MAX_MS,
    TS_MIN_MS,
)
from fleet.domain.wire.messages import Command, Policy, UnknownCommand
from fleet.domain.wire.refusals import Reason, Rejection
from fleet.domain.wire.vocabulary import CommandName


def parse_policy(args: dict[str, Any]) -> Policy:
    """Validate set_policy arguments (used by the API before a command is queued); raises ValueError."""
    try:
        session = _int(args, "session_minutes", 1, SESSION_MINUTES_MAX)
        daily = _int(args, "daily_minutes", 1, DAILY_MINUTES_MAX)
        brk = _int(args, "break_minutes", 0, BREAK_MINUTES_MAX, required=False)
    except _Bad as err:
        raise ValueError(str(err)) from None
    apps = args.get("allowed_apps", [])
    if (
        type(apps) is not list
        or len(apps) > MAX_ALLOWED_APPS
        or not all(type(a) is str and 0 < len(a) <= MAX_SHORT_TEXT and a.isprintable() for a in apps)
    ):
        raise ValueError(f"allowed_apps must be a list of at most {MAX_ALLOWED_APPS} app ids")
    if session > daily:
        raise ValueError("session_minutes cannot exceed daily_minutes")
    return Policy(session, daily, 10 if brk is None else brk, tuple(apps))


def policy_args(p: Policy) -> dict[str, Any]:
    return {
        "session_minutes": p.session_minutes,
        "daily_minutes": p.daily_minutes,
        "break_minutes": p.break_minutes,
        "allowed_apps": list(p.allowed_apps),
    }


# A device password as the service issues it (fleet.domain.credentials.new_password: 43 URL-safe characters);
# the bound leaves room for a longer one later while keeping a command far below MAX_DOWNLINK_BYTES.
MAX_PASSWORD_CHARS = 128


def rotation_args(password: str, grace_until_ms: int) -> dict[str, Any]:
    """`rotate_credentials` arguments (section 8): the new password, and when the old one stops at the
    latest. Built when the command is sent, never stored: the database keeps only the new password's hash."""
    return {"password": password, "grace_until": grace_until_ms}


def parse_rotation(args: dict[str, Any]) -> tuple[str, int]:
    """A device reads `rotate_credentials` arguments: (new password, grace end in ms); raises ValueError."""
    password = args.get("password")
    if (
        type(password) is not str
        or not 0 < len(password) <= MAX_PASSWORD_CHARS
        or not password.isascii()
        or not password.isprintable()
        or " " in password
    ):
        raise ValueError(f"password must be 1..{MAX_PASSWORD_CHARS} printable ASCII characters")
    try:
        grace_until = _int(args, "grace_until", TS_MIN_MS, TS_MAX_MS)
    except _Bad as err:
        raise ValueError(str(err)) from None
    return password, grace_until


def encode_command(cmd: Command) -> bytes:
    body = {
        "v": PROTOCOL_VERSION,
        "type": "command",
        "id": cmd.id,
        "cmd": cmd.name.value,
        "args": cmd.args,
        "issued_at": cmd.issued_at_ms,
        "expires_at": cmd.expires_at_ms,
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_DOWNLINK_BYTES:
        raise ValueError(f"command is {len(data)} bytes, over {MAX_DOWNLINK_BYTES}")
    return data


def decode_downlink(payload: bytes) -> Command | UnknownCommand | dict[str, Any] | Rejection:
    """What a device does with a cmd-topic message: a Command, an UnknownCommand (to refuse in its ack), an
    error dict, or a Rejection."""
    obj = _load(payload, MAX_DOWNLINK_BYTES)
    if type(obj) is Rejection:
        return obj
    assert isinstance(obj, dict)
    if obj.get("type") == "error":
        return obj
    try:
        if obj.get("type") != "command":
            raise _Bad("type must be command or error")
        cid = _correlation(obj)
        issued = _int(obj, "issued_at", TS_MIN_MS, TS_MAX_MS)
        expires = _int(obj, "expires_at", TS_MIN_MS, TS_MAX_MS)
        args = obj.get("args", {})
        if type(args) is not dict:
            raise _Bad("args must be an object")
        raw = obj.get("cmd")
        if type(raw) is not str or not 0 < len(raw) <= MAX_CODE_TEXT:
            raise _Bad("cmd must be a command name")
        try:
            name = CommandName(raw)
        except ValueError:
            return UnknownCommand(cid, raw, issued, expires)
        return Command(cid, name, issued, expires, args)
    except _Bad as err:
        return Rejection(Reason.SCHEMA, str(err))
