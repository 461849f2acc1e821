"""Lab edge agents and the kits they bridge, as the fleet sees them (the console's provisioning page).

An edge agent (`labfleet agent`, fleet/runtime/edge_agent.py) has no record of its own: it enrolls each kit
it bridges with a one-use claim token it issues under its own API token, labelled EDGE_AGENT_LABEL and the
kit's port id, and the kit's credential keeps that token. So an agent is the API token (the claim token's
`created_by`) and the school it enrolls kits at, and its kits are the devices whose live credential came from
such a token. An agent is online while any of its kits is: each kit's connection carries its Last Will, so
an agent that stops or dies takes its kits offline with it, and one with no kit plugged in shows offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.credentials import EDGE_AGENT_LABEL
from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models import Device, DeviceModel, Room
from fleet.persistence.models_mqtt import ClaimToken, DeviceCredential, DeviceState
from fleet.services.common import require, scope_schools

# Kits listed at most: a district's 50 labs with a few dozen kits each, with room to spare.
MAX_KITS = 5000


@dataclass(frozen=True, slots=True)
class Kit:
    device_id: int
    serial_number: str
    asset_tag: str | None
    model: str  # vendor and model number
    kind: str
    room: str | None
    online: bool
    firmware: str | None  # as the kit last reported it
    health: str
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class EdgeAgent:
    name: str  # the agent's API token (or user) name
    actor: str  # as the audit log and the claim tokens name it
    school_id: int
    kits: tuple[Kit, ...]

    @property
    def online(self) -> bool:
        return any(k.online for k in self.kits)

    @property
    def kits_online(self) -> int:
        return sum(1 for k in self.kits if k.online)

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(sorted({k.room for k in self.kits if k.room}))

    @property
    def last_seen_at(self) -> datetime | None:
        seen = [k.last_seen_at for k in self.kits if k.last_seen_at is not None]
        return max(seen) if seen else None


def _name(actor: str) -> str:
    """`token:7:lab-3-pc` -> `lab-3-pc` (actors: `token:<id>:<name>`, `user:<id>:<name>`, `<role>:<name>`)."""
    return actor.split(":", 2)[-1]


async def list_agents(
    session: AsyncSession, principal: Principal, *, school_id: int | None = None
) -> list[EdgeAgent]:
    """The edge agents of the principal's schools (or of one), each with its kits, online and firmware."""
    require(principal, Permission.READ_OPERATIONS)
    stmt: Any = (
        select(
            ClaimToken.created_by,
            Device,
            DeviceModel,
            Room.name,
            DeviceState.online,
            DeviceState.firmware_version,
            DeviceState.health,
            DeviceState.last_seen_at,
        )
        .select_from(DeviceCredential)
        .join(ClaimToken, ClaimToken.id == DeviceCredential.claim_token_id)
        .join(Device, Device.id == DeviceCredential.device_id)
        .join(DeviceModel, DeviceModel.id == Device.model_id)
        .outerjoin(Room, Room.id == Device.room_id)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .where(
            ClaimToken.label.startswith(EDGE_AGENT_LABEL, autoescape=True),
            DeviceCredential.revoked_at.is_(None),
        )
    )
    stmt = scope_schools(stmt, principal, Device.school_id)
    if school_id is not None:
        stmt = stmt.where(Device.school_id == school_id)
    rows = (
        await session.execute(
            stmt.order_by(Device.school_id, ClaimToken.created_by, Device.id).limit(MAX_KITS)
        )
    ).all()
    agents: dict[tuple[int, str], list[Kit]] = {}
    for actor, dev, model, room, online, firmware, health, seen in rows:
        agents.setdefault((dev.school_id, actor), []).append(
            Kit(
                device_id=dev.id,
                serial_number=dev.serial_number,
                asset_tag=dev.asset_tag,
                model=f"{model.vendor} {model.model_number}",
                kind=model.kind,
                room=room,
                online=bool(online),
                firmware=firmware,
                health=health or "unknown",
                last_seen_at=seen,
            )
        )
    return [EdgeAgent(_name(actor), actor, school, tuple(kits)) for (school, actor), kits in agents.items()]
