"""The device plane over HTTP: claim tokens, enrollment, credentials, device state and presence, alerts,
commands and dead letters."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

import logging
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from fleet.api.deps import Caller, Session, State
from fleet.api.schemas import In, UtcOut
from fleet.domain.permissions import Permission, Principal
from fleet.errors import FleetError, NotFound, PermissionDenied
from fleet.persistence.models import Device, School
from fleet.persistence.models_mqtt import ClaimToken, DeadLetter, DeviceState, PresenceTransition
from fleet.services import audit, commands, enrollment
from fleet.services.common import check_school, require

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1")
ObjId = Annotated[int, Field(ge=1, le=2**31 - 1)]
# Lists here are bounded: at most this many rows per call.
MAX_LIST = 500


class _In(In):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- claim tokens


class ClaimTokenIn(_In):
    max_uses: int = Field(1, ge=1, le=enrollment.MAX_TOKEN_USES)
    ttl_seconds: int = Field(7 * 86400, ge=60, le=int(enrollment.MAX_TOKEN_TTL.total_seconds()))
    allow_unknown: bool = False
    label: str = Field("", max_length=120)


class ClaimTokenOut(BaseModel):
    id: int
    school_id: int
    label: str
    max_uses: int
    uses: int
    allow_unknown: bool
    created_by: str
    created_at: UtcOut
    expires_at: UtcOut
    revoked_at: UtcOut | None
    token: str | None = Field(None, description="shown once, at creation")


def _token_out(row: ClaimToken, token: str | None = None) -> ClaimTokenOut:
    return ClaimTokenOut(
        id=row.id,
        school_id=row.school_id,
        label=row.label,
        max_uses=row.max_uses,
        uses=row.uses,
        allow_unknown=row.allow_unknown,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        token=token,
    )


async def _school_in_scope(session: Any, caller: Principal, school_id: int) -> School:
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound(f"school {school_id} not found")
    check_school(caller, school.id, "school", school_id)
    return school


@router.post("/schools/{obj_id}/claim-tokens", status_code=201, tags=["enrollment"])
async def create_claim_token(
    obj_id: ObjId, body: ClaimTokenIn, caller: Caller, session: Session, state: State
) -> ClaimTokenOut:
    """A claim token for terminals of one school; the token text is returned once."""
    school_id = obj_id
    require(caller, Permission.MANAGE_ENROLLMENT)
    await _school_in_scope(session, caller, school_id)
    now = state.clock.now()
    issued = await enrollment.create_claim_token(
        session,
        school_id=school_id,
        max_uses=body.max_uses,
        ttl=timedelta(seconds=body.ttl_seconds),
        allow_unknown=body.allow_unknown,
        label=body.label,
        actor=caller.actor,
        now=now,
    )
    audit.record(
        session,
        principal=caller,
        at=now,
        action="claim_token.create",
        object_type="claim_token",
        object_id=issued.row.id,
        school_id=school_id,
        after={
            "max_uses": body.max_uses,
            "allow_unknown": body.allow_unknown,
            "expires_at": issued.row.expires_at.isoformat(),
        },
    )
    return _token_out(issued.row, issued.token)


@router.get("/schools/{obj_id}/claim-tokens", tags=["enrollment"])
async def list_claim_tokens(obj_id: ObjId, caller: Caller, session: Session) -> list[ClaimTokenOut]:
    school_id = obj_id
    require(caller, Permission.MANAGE_ENROLLMENT)
    await _school_in_scope(session, caller, school_id)
    rows = (
        (
            await session.execute(
                select(ClaimToken)
                .where(ClaimToken.school_id == school_id)
                .order_by(ClaimToken.id.desc())
                .limit(MAX_LIST)
            )
        )
        .scalars()
        .all()
    )
    return [_token_out(r) for r in rows]


@router.post("/claim-tokens/{obj_id}/revoke", tags=["enrollment"])
async def revoke_claim_token(obj_id: ObjId, caller: Caller, session: Session, state: State) -> ClaimTokenOut:
    token_id = obj_id
    require(caller, Permission.MANAGE_ENROLLMENT)
    row = await session.get(ClaimToken, token_id)
    if row is None:
        raise NotFound(f"claim token {token_id} not found")
    check_school(caller, row.school_id, "claim token", token_id)
    now = state.clock.now()
    row = await enrollment.revoke_claim_token(session, token_id, now=now)
    audit.record(
        session,
        principal=caller,
        at=now,
        action="claim_token.revoke",
        object_type="claim_token",
        object_id=token_id,
        school_id=row.school_id,
    )
    return _token_out(row)


# ---------------------------------------------------------------- enrollment (devices, no API token)


class EnrollIn(_In):
    claim_token: str = Field(min_length=1, max_length=128)
    serial_number: str = Field(min_length=1, max_length=120)
    vendor: str | None = Field(None, max_length=120)
    model_number: str | None = Field(None, max_length=120)


class EnrollOut(BaseModel):
    device_id: int
    identity: str
    username: str
    password: str
    school: str
    protocol: int
    broker_url: str
    topics: dict[str, str]


@router.post(
    "/enroll",
    status_code=201,
    tags=["enrollment"],
    responses={
        429: {"description": "too many failed attempts from this address or for this token; see Retry-After"}
    },
)
async def enroll(body: EnrollIn, session: Session, state: State, request: Request) -> EnrollOut:
    """A terminal trades a claim token and its serial number for MQTT credentials (docs/protocol-mqtt.md
    §3)."""
    from fleet.domain import wire

    metrics = state.metrics
    guard = state.enrollment_guard
    source = request.client.host if request.client else "unknown"
    now = state.clock.now()
    try:
        guard.check(source, body.claim_token)
    except FleetError:
        if metrics is not None:
            metrics.enrollment("rate_limited")
        raise
    try:
        done = await enrollment.enroll(
            session,
            claim_token=body.claim_token,
            serial_number=body.serial_number,
            vendor=body.vendor,
            model_number=body.model_number,
            now=now,
        )
    except FleetError as err:
        guard.failed(source, body.claim_token)
        if metrics is not None:
            metrics.enrollment(
                (err.details or {}).get("reason", "invalid") if isinstance(err.details, dict) else "invalid"
            )
        raise
    device = await session.get(Device, done.device_id)
    audit.record(
        session,
        principal=_enrollment_principal(),
        at=now,
        action="device.enroll",
        object_type="device",
        object_id=done.device_id,
        school_id=device.school_id if device else None,
        summary="registered as received" if done.created else "credentials issued",
    )
    await session.commit()
    if metrics is not None:
        metrics.enrollment("ok")
    await _credentials_changed(state, done.identity)
    t = wire.Topics(state.settings.mqtt.topic_prefix)
    topics = {"base": t.base(done.school_code, done.identity)}
    topics.update({ch.value: t.topic(done.school_code, done.identity, ch) for ch in wire.Channel})
    return EnrollOut(
        device_id=done.device_id,
        identity=done.identity,
        username=done.identity,
        password=done.password,
        school=done.school_code,
        protocol=wire.PROTOCOL_VERSION,
        broker_url=_public_broker_url(state),
        topics=topics,
    )


def _enrollment_principal() -> Principal:
    from fleet.domain.enums import Role

    return Principal(name="enrollment", role=Role.TECHNICIAN, district_wide=False, school_ids=frozenset())


def _public_broker_url(state: Any) -> str:
    cfg = state.settings.mqtt
    if cfg.broker in ("embedded", "mosquitto"):
        return f"mqtt://{cfg.listen_host}:{cfg.listen_port}"
    from urllib.parse import urlsplit

    parts = urlsplit(cfg.url)  # never hand out the service's own credentials from the URL
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 1883}"


async def _credentials_changed(state: Any, username: str, *, revoked: bool = False) -> None:
    plane = state.plane
    if plane is None:
        return
    try:
        await plane.credentials_changed(username, revoked=revoked)
    except Exception:
        log.exception("broker did not take the credential change yet")


# ---------------------------------------------------------------- credentials


class CredentialOut(BaseModel):
    device_id: int
    username: str
    rotated_at: UtcOut | None
    revoked_at: UtcOut | None
    password: str | None = Field(None, description="shown once, after rotation")


async def _device_in_scope(session: Any, caller: Principal, device_id: int) -> Device:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id} not found")
    check_school(caller, device.school_id, "device", device_id)
    return device


@router.post("/devices/{obj_id}/credentials/rotate", tags=["enrollment"])
async def rotate_credentials(obj_id: ObjId, caller: Caller, session: Session, state: State) -> CredentialOut:
    device_id = obj_id
    require(caller, Permission.MANAGE_ENROLLMENT)
    device = await _device_in_scope(session, caller, device_id)
    now = state.clock.now()
    cred, password = await enrollment.rotate(session, device_id, now=now)
    audit.record(
        session,
        principal=caller,
        at=now,
        action="credentials.rotate",
        object_type="device",
        object_id=device_id,
        school_id=device.school_id,
    )
    await session.commit()
    await _credentials_changed(state, cred.username)
    return CredentialOut(
        device_id=device_id,
        username=cred.username,
        rotated_at=cred.rotated_at,
        revoked_at=cred.revoked_at,
        password=password,
    )


@router.post("/devices/{obj_id}/credentials/revoke", tags=["enrollment"])
async def revoke_credentials(obj_id: ObjId, caller: Caller, session: Session, state: State) -> CredentialOut:
    """Revoke a device's credentials; the broker disconnects it within seconds."""
    device_id = obj_id
    require(caller, Permission.MANAGE_ENROLLMENT)
    device = await _device_in_scope(session, caller, device_id)
    now = state.clock.now()
    cred = await enrollment.revoke(session, device_id, now=now)
    audit.record(
        session,
        principal=caller,
        at=now,
        action="credentials.revoke",
        object_type="device",
        object_id=device_id,
        school_id=device.school_id,
    )
    await session.commit()
    await _credentials_changed(state, cred.username, revoked=True)
    return CredentialOut(
        device_id=device_id, username=cred.username, rotated_at=cred.rotated_at, revoked_at=cred.revoked_at
    )


# ---------------------------------------------------------------- state and presence


class DeviceStateOut(BaseModel):
    device_id: int
    online: bool
    online_changed_at: UtcOut | None
    last_seen_at: UtcOut | None
    health: str
    health_reasons: list[str]
    battery_pct: int | None
    charging: bool | None
    temperature_c: float | None
    storage_used_pct: float | None
    firmware_version: str | None
    app: str | None
    rssi_dbm: int | None
    bytes_up_total: int
    bytes_down_total: int
    last_seq: int
    messages_total: int
    duplicates_total: int
    signed_in: bool = Field(description="someone is signed in (only a pseudonym is stored, never shown)")


@router.get("/devices/{obj_id}/state", tags=["devices"])
async def device_state(obj_id: ObjId, caller: Caller, session: Session) -> DeviceStateOut:
    """Latest telemetry, presence and health of one device."""
    device_id = obj_id
    require(caller, Permission.READ_OPERATIONS)
    await _device_in_scope(session, caller, device_id)
    st = await session.get(DeviceState, device_id)
    if st is None:
        return DeviceStateOut(
            device_id=device_id,
            online=False,
            online_changed_at=None,
            last_seen_at=None,
            health="unknown",
            health_reasons=[],
            battery_pct=None,
            charging=None,
            temperature_c=None,
            storage_used_pct=None,
            firmware_version=None,
            app=None,
            rssi_dbm=None,
            bytes_up_total=0,
            bytes_down_total=0,
            last_seq=0,
            messages_total=0,
            duplicates_total=0,
            signed_in=False,
        )
    return DeviceStateOut(
        device_id=device_id,
        online=st.online,
        online_changed_at=st.online_changed_at,
        last_seen_at=st.last_seen_at,
        health=st.health,
        health_reasons=list(st.health_reasons or []),
        battery_pct=st.battery_pct,
        charging=st.charging,
        temperature_c=st.temperature_c,
        storage_used_pct=st.storage_used_pct,
        firmware_version=st.firmware_version,
        app=st.app,
        rssi_dbm=st.rssi_dbm,
        bytes_up_total=st.bytes_up_total,
        bytes_down_total=st.bytes_down_total,
        last_seq=st.last_seq,
        messages_total=st.messages_total,
        duplicates_total=st.duplicates_total,
        signed_in=st.session_pseudonym is not None,
    )


class PresenceOut(BaseModel):
    at: UtcOut
    online: bool
    expected: bool | None
    cause: str


@router.get("/devices/{obj_id}/presence", tags=["devices"])
async def device_presence(
    obj_id: ObjId, caller: Caller, session: Session, limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100
) -> list[PresenceOut]:
    """Presence transitions, newest first."""
    device_id = obj_id
    require(caller, Permission.READ_OPERATIONS)
    await _device_in_scope(session, caller, device_id)
    rows = (
        (
            await session.execute(
                select(PresenceTransition)
                .where(PresenceTransition.device_id == device_id)
                .order_by(PresenceTransition.at.desc(), PresenceTransition.id.desc())
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    return [PresenceOut(at=r.at, online=r.online, expected=r.expected, cause=r.cause) for r in rows]


# ---------------------------------------------------------------- alerts


class AlertOut(BaseModel):
    id: int
    device_id: int
    school_id: int
    room_id: int | None
    rule: str
    severity: str
    status: str
    detail: str
    occurrences: int
    opened_at: UtcOut
    last_seen_at: UtcOut
    acknowledged_at: UtcOut | None
    acknowledged_by: str | None
    resolved_at: UtcOut | None
    resolved_by: str | None


def _alert_out(a: Any) -> AlertOut:
    return AlertOut(
        id=a.id,
        device_id=a.device_id,
        school_id=a.school_id,
        room_id=a.room_id,
        rule=a.rule,
        severity=a.severity,
        status=a.status,
        detail=a.detail,
        occurrences=a.occurrences,
        opened_at=a.opened_at,
        last_seen_at=a.last_seen_at,
        acknowledged_at=a.acknowledged_at,
        acknowledged_by=a.acknowledged_by,
        resolved_at=a.resolved_at,
        resolved_by=a.resolved_by,
    )


@router.get("/alerts", tags=["alerts"])
async def list_alerts(
    caller: Caller,
    session: Session,
    school: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    room: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: Literal["open", "acknowledged", "resolved", "active"] | None = "active",
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AlertOut]:
    """Alerts of the caller's schools, per school or room; `active` = open or acknowledged."""
    require(caller, Permission.READ_OPERATIONS)
    scope = None if caller.district_wide else sorted(caller.school_ids)
    rows = await commands.list_alerts(
        session, school_ids=scope, school_id=school, room_id=room, status=status, limit=limit, offset=offset
    )
    return [_alert_out(a) for a in rows]


async def _alert_action(alert_id: int, caller: Principal, session: Any, state: Any, action: str) -> AlertOut:
    from fleet.persistence.models_mqtt import Alert

    require(caller, Permission.MANAGE_ALERTS)
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id} not found")
    check_school(caller, alert.school_id, "alert", alert_id)
    now = state.clock.now()
    fn = commands.acknowledge_alert if action == "ack" else commands.resolve_alert
    alert = await fn(session, alert_id, actor=caller.actor, now=now)
    audit.record(
        session,
        principal=caller,
        at=now,
        action=f"alert.{action}",
        object_type="alert",
        object_id=alert_id,
        school_id=alert.school_id,
    )
    return _alert_out(alert)


@router.post("/alerts/{obj_id}/ack", tags=["alerts"])
async def acknowledge_alert(obj_id: ObjId, caller: Caller, session: Session, state: State) -> AlertOut:
    return await _alert_action(obj_id, caller, session, state, "ack")


@router.post("/alerts/{obj_id}/resolve", tags=["alerts"])
async def resolve_alert(obj_id: ObjId, caller: Caller, session: Session, state: State) -> AlertOut:
    return await _alert_action(obj_id, caller, session, state, "resolve")


# ---------------------------------------------------------------- commands


class Target(_In):
    kind: Literal["device", "room", "school"]
    id: ObjId


class CommandIn(_In):
    target: Target
    name: Literal["reboot", "lock", "unlock", "set_policy", "diagnostics"]
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int = Field(
        int(commands.DEFAULT_TTL.total_seconds()), ge=10, le=int(commands.MAX_TTL.total_seconds())
    )
    timeout_seconds: int = Field(commands.DEFAULT_TIMEOUT_S, ge=5, le=commands.MAX_TIMEOUT_S)


class CommandRow(BaseModel):
    correlation_id: str
    device_id: int
    status: str
    created_at: UtcOut
    expires_at: UtcOut
    sent_at: UtcOut | None
    acked_at: UtcOut | None
    ack_reason: str | None
    finished_at: UtcOut | None
    result_code: str | None
    result_detail: dict[str, Any] | None


class BatchOut(BaseModel):
    batch_id: str
    name: str
    target_kind: str
    target_id: int
    total: int
    done: int
    by_status: dict[str, int]
    commands: list[CommandRow]


def _batch_out(p: dict[str, Any]) -> BatchOut:
    rows = [
        CommandRow(
            correlation_id=c.correlation_id,
            device_id=c.device_id,
            status=c.status,
            created_at=c.created_at,
            expires_at=c.expires_at,
            sent_at=c.sent_at,
            acked_at=c.acked_at,
            ack_reason=c.ack_reason,
            finished_at=c.finished_at,
            result_code=c.result_code,
            result_detail=c.result_detail,
        )
        for c in p["commands"][:MAX_LIST]
    ]
    return BatchOut(
        batch_id=p["batch_id"],
        name=p["name"],
        target_kind=p["target_kind"],
        target_id=p["target_id"],
        total=p["total"],
        done=p["done"],
        by_status=p["by_status"],
        commands=rows,
    )


@router.post("/commands", status_code=202, tags=["commands"])
async def send_command(body: CommandIn, caller: Caller, session: Session, state: State) -> BatchOut:
    """Queue a command for a device, a room or a school; offline devices get it when they reconnect."""
    require(caller, Permission.SEND_COMMANDS)
    school_id = await commands.target_school(session, body.target.kind, body.target.id)
    check_school(caller, school_id, body.target.kind, body.target.id)
    now = state.clock.now()
    batch = await commands.create(
        session,
        target_kind=body.target.kind,
        target_id=body.target.id,
        name=body.name,
        args=body.args,
        ttl=timedelta(seconds=body.ttl_seconds),
        timeout_s=body.timeout_seconds,
        actor=caller.actor,
        now=now,
    )
    audit.record(
        session,
        principal=caller,
        at=now,
        action="command.send",
        object_type=body.target.kind,
        object_id=body.target.id,
        school_id=school_id,
        after={"batch_id": batch.batch_id, "name": body.name, "devices": len(batch.commands)},
    )
    await session.commit()
    plane = state.plane
    if plane is not None:
        plane.wake_dispatcher()
    return _batch_out(await commands.progress(session, batch.batch_id))


@router.get("/commands/{obj_id}", tags=["commands"])
async def command_progress(
    obj_id: Annotated[str, Field(max_length=64)], caller: Caller, session: Session
) -> BatchOut:
    batch_id = obj_id
    require(caller, Permission.READ_OPERATIONS)
    school_id = await commands.batch_school(session, batch_id)
    check_school(caller, school_id, "command batch", batch_id)
    return _batch_out(await commands.progress(session, batch_id))


@router.post("/commands/{obj_id}/cancel", tags=["commands"])
async def cancel_commands(
    obj_id: Annotated[str, Field(max_length=64)], caller: Caller, session: Session, state: State
) -> BatchOut:
    batch_id = obj_id
    """Cancel the commands of a batch that were not sent yet."""
    require(caller, Permission.SEND_COMMANDS)
    school_id = await commands.batch_school(session, batch_id)
    check_school(caller, school_id, "command batch", batch_id)
    now = state.clock.now()
    n = await commands.cancel(session, batch_id, now=now)
    audit.record(
        session,
        principal=caller,
        at=now,
        action="command.cancel",
        object_type="command_batch",
        object_id=batch_id,
        school_id=school_id,
        after={"cancelled": n},
    )
    return _batch_out(await commands.progress(session, batch_id))


# ---------------------------------------------------------------- dead letters


class DeadLetterOut(BaseModel):
    id: int
    received_at: UtcOut
    reason: str
    topic: str
    identity: str | None
    payload_size: int
    payload_preview: str | None
    detail: str


@router.get("/dead-letters", tags=["operations"])
async def dead_letters(
    caller: Caller,
    session: Session,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> list[DeadLetterOut]:
    """Refused MQTT messages (newest first). District-wide: a refused message may name no school."""
    require(caller, Permission.READ_AUDIT)
    if not caller.district_wide:
        raise PermissionDenied("dead letters are district-wide; a school-scoped token cannot read them")
    q = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if reason:
        q = q.where(DeadLetter.reason == reason)
    rows = (await session.execute(q)).scalars().all()
    return [
        DeadLetterOut(
            id=r.id,
            received_at=r.received_at,
            reason=r.reason,
            topic=r.topic,
            identity=r.identity,
            payload_size=r.payload_size,
            payload_preview=r.payload[:512].decode("utf-8", "replace") if r.payload else None,
            detail=r.detail,
        )
        for r in rows
    ]
