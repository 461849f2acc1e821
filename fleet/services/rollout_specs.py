"""What a new rollout is: its spec, the checks a spec passes (field by field, for the API's details and the
console's form), the draft it becomes, the preview of its groups before anything is written, and what a
principal may choose from when writing one. `fleet.services.rollouts.RolloutService` uses these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_profiles import load_profile_key
from fleet.domain.permissions import Permission, Principal
from fleet.domain.rollouts import GroupPlan, RolloutStatus, Window
from fleet.errors import InvalidInput, NotFound
from fleet.persistence.models import DeviceModel, Room, School
from fleet.persistence.models_rollouts import FirmwareArtifact, Rollout
from fleet.services.common import require, scope_schools
from fleet.services.rollout_policy import DEFAULT_POLICY
from fleet.services.rollout_targets import planned_groups

# Devices listed per group in a preview: enough to recognise the canary; the counts say the rest.
PREVIEW_SAMPLE = 10
# A rollout's bandwidth cap per school: below 128 kbit/s a 50 MB terminal image takes about an hour per
# device (a typo, not a policy); above 10 Gbit/s no school uplink is limited by it.
MIN_BYTES_PER_SECOND = 16_000
MAX_BYTES_PER_SECOND = 1_250_000_000
# Rooms offered in the form's room list: a district's 500 classrooms and 50 labs, with room to spare.
MAX_ROOM_CHOICES = 2000


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    name: str
    model_id: int
    target_version: str
    school_ids: tuple[int, ...] = ()
    room_ids: tuple[int, ...] = ()
    from_versions: tuple[str, ...] = ()
    plan: GroupPlan = field(default_factory=GroupPlan)
    success_threshold: float = 0.9
    error_threshold: float = 0.2
    max_attempts: int = 3
    download_window: Window = Window.OUTSIDE_LESSONS
    install_window: Window = Window.OUTSIDE_LESSONS
    install_seconds: int = 600
    # The most the rollout's downloads may use at one school, bytes per second (the school's own budget
    # applies too); None: the school's budget alone.
    max_bytes_per_second: int | None = None
    start: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """A spec's checked model, firmware image, schools and rooms."""

    model: DeviceModel
    artifact: FirmwareArtifact
    schools: tuple[int, ...]
    rooms: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PreviewDevice:
    id: int
    serial_number: str
    asset_tag: str | None
    version: str | None  # as last reported


@dataclass(frozen=True, slots=True)
class PreviewGroup:
    name: str
    kind: str  # canary | school | percent
    school_id: int | None
    percent: float | None
    total: int
    devices: tuple[PreviewDevice, ...]  # the first PREVIEW_SAMPLE


@dataclass(frozen=True, slots=True)
class RolloutPreview:
    model: DeviceModel
    artifact: FirmwareArtifact
    school_ids: tuple[int, ...]
    room_ids: tuple[int, ...]
    groups: tuple[PreviewGroup, ...]
    total: int


@dataclass(frozen=True, slots=True)
class RolloutChoices:
    """What a principal may target: models with imported firmware versions, and its schools and rooms."""

    models: list[DeviceModel]
    versions: dict[int, list[str]]  # model id -> versions with an imported image, newest first
    schools: list[School]
    rooms: list[Room]


def invalid(field_name: str, reason: str, message: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field_name, "reason": reason}])


def _fraction(name: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise invalid(name, "out_of_range", f"{name} must be between 0 and 1")


async def resolve(session: AsyncSession, principal: Principal, spec: RolloutSpec, profile_dir: str) -> Target:
    """Check a spec field by field: its numbers, its model, profile, version and image, and the schools and
    rooms it targets (within the principal's schools). Out of scope reads as not found."""
    if not spec.name.strip() or len(spec.name) > 200:
        raise invalid("name", "required", "name must be 1..200 characters")
    _fraction("success_threshold", spec.success_threshold)
    _fraction("error_threshold", spec.error_threshold)
    if not 1 <= spec.max_attempts <= 10:
        raise invalid("max_attempts", "out_of_range", "max_attempts must be 1..10")
    if not 60 <= spec.install_seconds <= 4 * 3600:
        raise invalid("install_seconds", "out_of_range", "install_seconds must be 60..14400")
    cap = spec.max_bytes_per_second
    if cap is not None and not MIN_BYTES_PER_SECOND <= cap <= MAX_BYTES_PER_SECOND:
        raise invalid(
            "max_bytes_per_second",
            "out_of_range",
            f"max_bytes_per_second must be {MIN_BYTES_PER_SECOND}..{MAX_BYTES_PER_SECOND}",
        )
    model = await session.get(DeviceModel, spec.model_id)
    if model is None:
        raise NotFound(
            f"device model {spec.model_id} not found", details=[{"field": "model_id", "reason": "not_found"}]
        )
    if not model.profile_key:
        raise invalid("model_id", "no_profile", f"device model {spec.model_id} has no firmware profile")
    try:
        profile = load_profile_key(model.profile_key, profile_dir)
    except Exception as err:  # a profile error names its file and key path
        raise invalid("model_id", "bad_profile", f"profile {model.profile_key}: {err}") from err
    try:
        profile.version(spec.target_version)
    except KeyError as err:
        known = ", ".join(v.version for v in profile.versions)
        raise invalid(
            "target_version",
            "unknown_version",
            f"version {spec.target_version} is not in profile {model.profile_key} (it lists {known})",
        ) from err
    art = (
        await session.execute(
            select(FirmwareArtifact).where(
                FirmwareArtifact.profile_key == model.profile_key,
                FirmwareArtifact.version == spec.target_version,
            )
        )
    ).scalar_one_or_none()
    if art is None:
        raise invalid(
            "target_version",
            "no_artifact",
            f"no artifact for {model.profile_key} {spec.target_version}; "
            "run `labfleet artifacts import` first",
        )
    schools = tuple(sorted(set(spec.school_ids)))
    unknown_school = NotFound("school not found", details=[{"field": "school_ids", "reason": "not_found"}])
    if not principal.district_wide:
        if not schools:
            schools = tuple(sorted(principal.school_ids))
        if not set(schools) <= principal.school_ids:
            raise unknown_school
    for sid in schools:
        if await session.get(School, sid) is None:
            raise unknown_school
    for rid in spec.room_ids:
        room = await session.get(Room, rid)
        if (
            room is None
            or not principal.sees_school(room.school_id)
            or (schools and room.school_id not in schools)
        ):
            raise NotFound(f"room {rid} not found", details=[{"field": "room_ids", "reason": "not_found"}])
    return Target(model, art, schools, tuple(sorted(set(spec.room_ids))))


def draft(spec: RolloutSpec, t: Target, actor: str, now: datetime) -> Rollout:
    """The rollout a checked spec describes, in draft, not yet in any session."""
    policy: dict[str, Any] = dict(
        DEFAULT_POLICY,
        download_window=spec.download_window.value,
        install_window=spec.install_window.value,
        install_seconds=spec.install_seconds,
    )
    if spec.max_bytes_per_second is not None:
        policy["max_bytes_per_second"] = spec.max_bytes_per_second
    plan = {
        "canary_size": spec.plan.canary_size,
        "canary_percent": spec.plan.canary_percent,
        "strategy": spec.plan.strategy.value,
        "percents": list(spec.plan.percents),
    }
    return Rollout(
        name=spec.name,
        model_id=t.model.id,
        profile_key=t.model.profile_key,
        target_version=spec.target_version,
        artifact_sha256=t.artifact.sha256,
        school_ids=list(t.schools),
        room_ids=list(t.rooms),
        from_versions=sorted(set(spec.from_versions)),
        group_plan=plan,
        success_threshold=spec.success_threshold,
        error_threshold=spec.error_threshold,
        max_attempts=spec.max_attempts,
        policy=policy,
        state=RolloutStatus.DRAFT.value,
        current_group=0,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )


async def preview(
    session: AsyncSession, r: Rollout, t: Target, sample: int = PREVIEW_SAMPLE
) -> RolloutPreview:
    """The groups a draft would start with, from the devices matching now (the start's own planning)."""
    groups, by_id = await planned_groups(session, r)
    out = []
    for name, g in groups:
        shown = [by_id[i] for i in g.device_ids[:sample]]
        out.append(
            PreviewGroup(
                name=name,
                kind=g.kind,
                school_id=g.school_id,
                percent=g.percent,
                total=len(g.device_ids),
                devices=tuple(PreviewDevice(d.id, d.serial_number, d.asset_tag, v) for d, v in shown),
            )
        )
    return RolloutPreview(t.model, t.artifact, t.schools, t.rooms, tuple(out), sum(g.total for g in out))


async def choices(session: AsyncSession, principal: Principal) -> RolloutChoices:
    """Models that have a firmware image imported, their versions, and the principal's schools and rooms."""
    require(principal, Permission.MANAGE_ROLLOUTS)
    arts = (
        await session.execute(
            select(FirmwareArtifact.profile_key, FirmwareArtifact.version).order_by(
                FirmwareArtifact.created_at.desc(), FirmwareArtifact.id.desc()
            )
        )
    ).all()
    by_profile: dict[str, list[str]] = {}
    for key, version in arts:
        if version not in by_profile.setdefault(key, []):
            by_profile[key].append(version)
    models = [
        m
        for m in (
            await session.execute(
                select(DeviceModel)
                .where(DeviceModel.profile_key.in_(sorted(by_profile) or [""]))
                .order_by(DeviceModel.vendor, DeviceModel.model_number)
            )
        ).scalars()
    ]
    schools = list(
        (
            await session.execute(scope_schools(select(School), principal, School.id).order_by(School.name))
        ).scalars()
    )
    rooms = list(
        (
            await session.execute(
                scope_schools(select(Room), principal, Room.school_id)
                .order_by(Room.school_id, Room.name)
                .limit(MAX_ROOM_CHOICES)
            )
        ).scalars()
    )
    return RolloutChoices(
        models=models,
        versions={m.id: by_profile.get(m.profile_key or "", []) for m in models},
        schools=schools,
        rooms=rooms,
    )
