"""kit identities without ':' (robot:<uid> -> robot-<uid>, mpy:<hex> -> mpy-<hex>, usb:v:p:s -> usb-v-p-s)

A kit's identity is its serial number in the inventory, its MQTT username and client id, and its topic level.
mosquitto's password file is `username:hash`, split at the first ':', so kits enrolled under the old forms
could never log in to a managed mosquitto. The drivers now read the new forms back; this renames what is
stored under the old ones: the device's serial number, its `ENR-<serial>` asset tag (given at enrollment), its
broker credential, and its dead letters. Only devices of serial-transport models (the edge agent's kits) are
touched, in both directions, so a terminal whose serial happens to look alike is left alone. A rename whose
target is already taken is skipped (and stays refused at login, as before).

Revision ID: 0040
Revises: 0030
Create Date: 2026-11-23
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0040"
down_revision = "0030"
branch_labels = None
depends_on = None

# The suffixes hold no ':' themselves (identity characters minus ':'), so each rename is reversed exactly.
_TAIL = r"[A-Za-z0-9._-]+"
_OLD = [
    (re.compile(rf"^(robot|mpy):({_TAIL})$"), lambda m: f"{m[1]}-{m[2]}"),
    (re.compile(rf"^usb:([0-9a-f]{{4}}):([0-9a-f]{{4}}):({_TAIL})$"), lambda m: f"usb-{m[1]}-{m[2]}-{m[3]}"),
    (
        re.compile(rf"^usb-port:([0-9a-f]{{4}}):([0-9a-f]{{4}}):({_TAIL})$"),
        lambda m: f"usbport-{m[1]}-{m[2]}-{m[3]}",
    ),
]
_NEW = [
    (re.compile(rf"^(robot|mpy)-({_TAIL})$"), lambda m: f"{m[1]}:{m[2]}"),
    (re.compile(rf"^usb-([0-9a-f]{{4}})-([0-9a-f]{{4}})-({_TAIL})$"), lambda m: f"usb:{m[1]}:{m[2]}:{m[3]}"),
    (
        re.compile(rf"^usbport-([0-9a-f]{{4}})-([0-9a-f]{{4}})-({_TAIL})$"),
        lambda m: f"usb-port:{m[1]}:{m[2]}:{m[3]}",
    ),
]

_devices = sa.table(
    "devices",
    sa.column("id", sa.Integer),
    sa.column("vendor", sa.String),
    sa.column("serial_number", sa.String),
    sa.column("asset_tag", sa.String),
    sa.column("model_id", sa.Integer),
)
_models = sa.table("device_models", sa.column("id", sa.Integer), sa.column("transport", sa.String))
_creds = sa.table("device_credentials", sa.column("device_id", sa.Integer), sa.column("username", sa.String))
_dead = sa.table("dead_letters", sa.column("identity", sa.String))

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _renamed(serial: str, rules: list[Rule]) -> str | None:
    for pattern, make in rules:
        m = pattern.match(serial)
        if m is not None:
            return make(m)
    return None


def _rename(rules: list[Rule]) -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_devices.c.id, _devices.c.vendor, _devices.c.serial_number, _devices.c.asset_tag)
        .join(_models, _models.c.id == _devices.c.model_id)
        .where(_models.c.transport == "serial")
    ).all()
    taken = {(v, s) for v, s in conn.execute(sa.select(_devices.c.vendor, _devices.c.serial_number)).all()}
    users = {u for (u,) in conn.execute(sa.select(_creds.c.username)).all()}
    tags = {t for (t,) in conn.execute(sa.select(_devices.c.asset_tag)).all()}
    for device_id, vendor, old, tag in rows:
        new = _renamed(old, rules)
        if new is None or (vendor, new) in taken or new in users:
            continue
        values = {"serial_number": new}
        if tag == f"ENR-{old}"[:64] and f"ENR-{new}"[:64] not in tags:
            values["asset_tag"] = f"ENR-{new}"[:64]
        conn.execute(sa.update(_devices).where(_devices.c.id == device_id).values(**values))
        conn.execute(
            sa.update(_creds)
            .where(_creds.c.device_id == device_id, _creds.c.username == old)
            .values(username=new)
        )
        conn.execute(sa.update(_dead).where(_dead.c.identity == old).values(identity=new))
        taken.add((vendor, new))
        tags.add(values.get("asset_tag", tag))
        users.add(new)


def upgrade() -> None:
    _rename(_OLD)


def downgrade() -> None:
    _rename(_NEW)
