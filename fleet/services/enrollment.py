"""Enrollment: a terminal trades a claim token and its serial for device credentials (`register`), and the
primitives under claim tokens, rotation and revocation (fleet.services.claim_tokens, .credentials).

Services flush; the caller's unit of work commits. Errors carry `details["reason"]`, the enrollment
result label for metrics (bad_token, expired_token, exhausted_token, unknown_serial, wrong_school, invalid).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import credentials, wire
from fleet.domain.clock import Clock, as_utc
from fleet.domain.enums import DeviceStatus, Role
from fleet.domain.permissions import Principal
from fleet.errors import Conflict, FleetError, InvalidInput, NotFound, Unauthenticated
from fleet.persistence.db import after_commit
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, School
from fleet.persistence.models_mqtt import ClaimToken, DeviceCredential
from fleet.services import audit
from fleet.services.ports import DevicePlanePort

# A claim token is for one delivery or one bench session; a week covers a delivery's unpacking.
MAX_TOKEN_TTL = timedelta(days=30)
# One token may enroll a whole school's terminals (500 classrooms x ~20), not the district's.
MAX_TOKEN_USES = 5000


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # shown once
    row: ClaimToken


@dataclass(frozen=True, slots=True)
class Enrolled:
    device_id: int
    identity: str
    password: str  # shown once
    school_code: str
    created: bool  # registered as `received` by this enrollment


async def create_claim_token(
    session: AsyncSession,
    *,
    school_id: int,
    max_uses: int,
    ttl: timedelta,
    allow_unknown: bool,
    label: str,
    actor: str,
    now: datetime,
) -> IssuedToken:
    if not 1 <= max_uses <= MAX_TOKEN_USES:
        raise InvalidInput(f"max_uses must be 1..{MAX_TOKEN_USES}", details={"field": "max_uses"})
    if not timedelta(minutes=1) <= ttl <= MAX_TOKEN_TTL:
        raise InvalidInput("ttl must be between 1 minute and 30 days", details={"field": "ttl"})
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("school not found")
    if not wire.is_identity(school.code):
        raise InvalidInput("the school's code cannot be used in MQTT topics", details={"field": "school"})
    token, prefix, secret_hash = credentials.new_claim_token()
    row = ClaimToken(
        school_id=school_id,
        prefix=prefix,
        secret_hash=secret_hash,
        label=label[:120],
        max_uses=max_uses,
        uses=0,
        allow_unknown=allow_unknown,
        created_by=actor,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    await session.flush()
    return IssuedToken(token, row)


async def revoke_claim_token(session: AsyncSession, token_id: int, *, now: datetime) -> ClaimToken:
    row = await session.get(ClaimToken, token_id)
    if row is None:
        raise NotFound("claim token not found")
    if row.revoked_at is None:
        row.revoked_at = now
    await session.flush()
    return row


async def _token(session: AsyncSession, token: str, now: datetime) -> ClaimToken:
    parts = credentials.split_claim_token(token)
    row = None
    if parts is not None:
        row = (
            await session.execute(select(ClaimToken).where(ClaimToken.prefix == parts[0]))
        ).scalar_one_or_none()
    if (
        row is None
        or parts is None
        or not credentials.check_secret(parts[1], row.secret_hash)
        or row.revoked_at is not None
    ):
        raise Unauthenticated("claim token not valid", details={"reason": "bad_token"})
    if as_utc(row.expires_at) <= now:
        raise Unauthenticated("claim token expired", details={"reason": "expired_token"})
    if row.uses >= row.max_uses:
        raise Unauthenticated("claim token has no uses left", details={"reason": "exhausted_token"})
    return row


async def enroll(
    session: AsyncSession,
    *,
    claim_token: str,
    serial_number: str,
    vendor: str | None,
    model_number: str | None,
    now: datetime,
) -> Enrolled:
    """Trade a claim token and a serial number for device credentials."""
    try:
        wire.check_device_identity(serial_number)
    except wire.InvalidIdentity as err:
        # The serial becomes the MQTT username and client id: no + # / $ : or spaces.
        raise InvalidInput(
            f"serial number cannot be an MQTT identity: {err}",
            details={"field": "serial_number", "reason": "invalid_identity"},
        ) from err
    token = await _token(session, claim_token, now)
    school = await session.get(School, token.school_id)
    assert school is not None
    q = select(Device).where(Device.serial_number == serial_number)
    if vendor:
        q = q.where(Device.vendor == vendor)
    matches = (await session.execute(q)).scalars().all()
    if len(matches) > 1:
        raise Conflict("serial number is ambiguous; give the vendor", details={"reason": "invalid"})
    created = False
    if matches:
        device = matches[0]
        if device.school_id != token.school_id:
            raise Conflict("device belongs to another school", details={"reason": "wrong_school"})
        if device.status in (DeviceStatus.RETIRED, DeviceStatus.LOST):
            raise Conflict(f"device is {device.status}", details={"reason": "invalid"})
    else:
        if not token.allow_unknown:
            raise NotFound("serial number not in the inventory", details={"reason": "unknown_serial"})
        if not vendor or not model_number:
            raise InvalidInput(
                "vendor and model_number are needed to register an unknown device",
                details={"field": "model_number", "reason": "invalid"},
            )
        model = (
            await session.execute(
                select(DeviceModel).where(
                    DeviceModel.vendor == vendor, DeviceModel.model_number == model_number
                )
            )
        ).scalar_one_or_none()
        if model is None:
            raise NotFound("device model not found", details={"reason": "unknown_serial"})
        device = Device(
            vendor=vendor,
            serial_number=serial_number,
            asset_tag=f"ENR-{serial_number}"[:64],
            model_id=model.id,
            school_id=token.school_id,
            room_id=None,
            status=DeviceStatus.RECEIVED.value,
            created_at=now,
            updated_at=now,
        )
        session.add(device)
        await session.flush()
        session.add(
            DeviceTransition(
                device_id=device.id,
                from_status=None,
                to_status=DeviceStatus.RECEIVED.value,
                actor="enrollment",
                reason="registered at enrollment",
                at=now,
            )
        )
        created = True
    clash = (
        await session.execute(
            select(DeviceCredential).where(
                DeviceCredential.username == serial_number, DeviceCredential.device_id != device.id
            )
        )
    ).scalar_one_or_none()
    if clash is not None:
        raise Conflict("another device already uses this identity", details={"reason": "invalid"})
    # Count the use atomically: two terminals racing for the last use cannot both get it.
    used = await session.execute(
        update(ClaimToken)
        .where(ClaimToken.id == token.id, ClaimToken.uses < ClaimToken.max_uses)
        .values(uses=ClaimToken.uses + 1)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE answers a CursorResult
        raise Unauthenticated("claim token has no uses left", details={"reason": "exhausted_token"})
    password = credentials.new_password()
    cred = (
        await session.execute(select(DeviceCredential).where(DeviceCredential.device_id == device.id))
    ).scalar_one_or_none()
    if cred is None:
        cred = DeviceCredential(
            device_id=device.id,
            username=serial_number,
            school_code=school.code,
            password_hash=credentials.hash_password(password),
            claim_token_id=token.id,
            created_at=now,
        )
        session.add(cred)
    else:
        cred.username = serial_number
        cred.school_code = school.code
        cred.password_hash = credentials.hash_password(password)
        cred.claim_token_id = token.id
        cred.rotated_at = now
        cred.revoked_at = None
        clear_rotation(cred)
    await session.flush()
    return Enrolled(device.id, serial_number, password, school.code, created)


async def rotate(session: AsyncSession, device_id: int, *, now: datetime) -> tuple[DeviceCredential, str]:
    cred = await _credential(session, device_id)
    if cred.revoked_at is not None:
        raise Conflict("credentials are revoked; enroll again with a claim token")
    password = credentials.new_password()
    cred.password_hash = credentials.hash_password(password)
    cred.rotated_at = now
    clear_rotation(cred)
    await session.flush()
    return cred, password


def clear_rotation(cred: DeviceCredential) -> None:
    """A password set here replaces a rotation over MQTT under way: the password that rotation sent must not
    open a session beside it (its command, if not sent yet, is withdrawn by the dispatcher)."""
    cred.pending_hash = None
    cred.pending_until = None
    cred.rotation_command_id = None
    cred.rotation_grace_s = None


async def revoke(session: AsyncSession, device_id: int, *, now: datetime) -> DeviceCredential:
    cred = await _credential(session, device_id)
    if cred.revoked_at is None:
        cred.revoked_at = now
    await session.flush()
    return cred


async def _credential(session: AsyncSession, device_id: int) -> DeviceCredential:
    cred = (
        await session.execute(select(DeviceCredential).where(DeviceCredential.device_id == device_id))
    ).scalar_one_or_none()
    if cred is None:
        raise NotFound("device has no credentials")
    return cred


# ---------------------------------------------------------------- enrollment use case (devices, no API token)


class AttemptGuard(Protocol):
    """Failed-attempt limits per client address and per claim token (fleet.api.ratelimit.EnrollmentGuard)."""

    def check(self, source: str, token: str) -> None: ...

    def failed(self, source: str, token: str) -> None: ...


class EnrollmentMetrics(Protocol):
    def enrollment(self, result: str) -> None: ...


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    claim_token: str
    serial_number: str
    vendor: str | None
    model_number: str | None
    source: str  # the client's address, for the failed-attempt limit


# Who the audit log names for an enrollment: the device itself holds no API token.
ENROLLMENT_PRINCIPAL = Principal(
    name="enrollment", role=Role.TECHNICIAN, district_wide=False, school_ids=frozenset()
)


async def register(
    session: AsyncSession,
    clock: Clock,
    request: EnrollRequest,
    *,
    guard: AttemptGuard | None = None,
    metrics: EnrollmentMetrics | None = None,
    plane: DevicePlanePort | None = None,
) -> Enrolled:
    """A terminal trades a claim token and its serial number for MQTT credentials (docs/protocol-mqtt.md §3).

    Refused past the failed-attempt limits (RateLimited); every refusal is counted by reason. Once committed,
    the broker takes the new credentials."""
    now = clock.now()
    try:
        if guard is not None:
            guard.check(request.source, request.claim_token)
    except FleetError:
        if metrics is not None:
            metrics.enrollment("rate_limited")
        raise
    try:
        done = await enroll(
            session,
            claim_token=request.claim_token,
            serial_number=request.serial_number,
            vendor=request.vendor,
            model_number=request.model_number,
            now=now,
        )
    except FleetError as err:
        if guard is not None:
            guard.failed(request.source, request.claim_token)
        if metrics is not None:
            reason = err.details.get("reason", "invalid") if isinstance(err.details, dict) else "invalid"
            metrics.enrollment(reason)
        raise
    device = await session.get(Device, done.device_id)
    audit.record(
        session,
        principal=ENROLLMENT_PRINCIPAL,
        at=now,
        action="device.enroll",
        object_type="device",
        object_id=done.device_id,
        school_id=device.school_id if device else None,
        summary="registered as received" if done.created else "credentials issued",
    )

    async def committed() -> None:
        if metrics is not None:
            metrics.enrollment("ok")
        if plane is not None:
            await plane.credentials_changed(done.identity)

    after_commit(session, committed)
    return done
