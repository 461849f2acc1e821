"""`labfleet provision`: the provisioning bench on a lab PC.

Provisions every attached kit (or the named ports) in parallel with drivers/provisioning.py, shows a
progress bar per kit and a final table, and records each result in the inventory and audit log as it
finishes (so an interrupted run loses nothing it already did). `--bench N` runs against N simulated
kits on real ptys, for trying the bench without hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from drivers.discovery import PortInfo, classify, list_ports
from drivers.provisioning import (
    AttachedDevice,
    DeviceProgress,
    Outcome,
    Provisioner,
    ProvisionPlan,
    ProvisionResult,
    StateFile,
)
from drivers.types import DeviceIdentity, Family, FirmwareImage
from firmware_profiles import (
    DEFAULT_PROFILE_DIR,
    FirmwareProfile,
    ProfileError,
    artifact_path,
    load_profile_key,
)
from fleet.domain import credentials
from fleet.domain.clock import Clock, SystemClock
from fleet.domain.enums import DeviceStatus, Role
from fleet.domain.permissions import Principal
from fleet.errors import FleetError, InvalidInput, NotFound
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.persistence.models import Device, DeviceModel, Room, School
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.services import audit
from fleet.services.inventory import DeviceService
from fleet.settings import Settings

log = logging.getLogger(__name__)

PROVISIONER = Principal(name="cli:provision", role=Role.ADMIN, district_wide=True, school_ids=frozenset())
# Config keys that carry secrets: left out of the resume fingerprint (a fresh password is minted each
# run) and never printed.
SECRET_KEYS = frozenset({"mqtt_password"})
# Firmata keeps no settings in flash; the profile's telemetry interval becomes its analog sampling
# interval, capped at the protocol's 14-bit maximum.
FIRMATA_MAX_INTERVAL_MS = 0x3FFF
# Families the simulated bench builds (the bench wires the Firmata simulator's DTR reset in-process).
BENCH_FAMILIES = tuple(Family)


@dataclass(frozen=True, slots=True)
class _Plan(ProvisionPlan):
    """A plan whose resume fingerprint ignores secrets (they are new on every run)."""

    def fingerprint(self) -> str:
        public = {k: v for k, v in self.config.items() if k not in SECRET_KEYS}
        return ProvisionPlan(public, self.firmware).fingerprint()


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Per driver family: the device model and its firmware profile and target image."""

    model_id: int
    model_number: str
    vendor: str
    profile: FirmwareProfile
    target: FirmwareImage | None


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the final table."""

    port: str
    result: ProvisionResult
    asset_tag: str = ""
    recorded: str = ""


@dataclass
class BenchRun:
    school: School
    room: Room | None
    catalogue: dict[Family, Catalogue]
    passwords: dict[str, str] = field(default_factory=dict)  # hardware id -> minted MQTT password


def _image(profile: FirmwareProfile, profile_dir: Path, family: Family) -> FirmwareImage | None:
    target = next((v for v in profile.versions if v.version == profile.target_version), None)
    if target is None:
        return None
    data = artifact_path(profile_dir, target.artifact).read_bytes()
    if family is Family.MICROPYTHON:
        return FirmwareImage.bundle(target.version, {"main.py": data})
    image = FirmwareImage.from_bytes(target.version, data)
    if image.sha256 != target.sha256:
        raise InvalidInput(f"artifact {target.artifact} does not match its profile's sha256")
    return image


async def load_catalogue(session: AsyncSession, profile_dir: Path) -> dict[Family, Catalogue]:
    """Device models whose firmware profile has a serial driver, by family."""
    out: dict[Family, Catalogue] = {}
    rows = (
        (
            await session.execute(
                select(DeviceModel).where(DeviceModel.profile_key.is_not(None)).order_by(DeviceModel.id)
            )
        )
        .scalars()
        .all()
    )
    for model in rows:
        try:
            profile = await asyncio.to_thread(load_profile_key, model.profile_key or "", profile_dir)
        except ProfileError as err:
            log.warning("model %s: profile %s unusable: %s", model.id, model.profile_key, err)
            continue
        try:
            family = Family(profile.driver)
        except ValueError:
            continue  # a terminal or sensor: not a serial kit
        if family not in out:
            image = await asyncio.to_thread(_image, profile, profile_dir, family)
            out[family] = Catalogue(model.id, model.model_number, model.vendor, profile, image)
    return out


async def resolve_place(session: AsyncSession, school: str, room: str | None) -> tuple[School, Room | None]:
    """A school by code or id and a room by name or id inside it."""
    q = select(School).where(School.code == school)
    if school.isdigit():
        q = select(School).where((School.code == school) | (School.id == int(school)))
    found = (await session.execute(q)).scalars().first()
    if found is None:
        raise NotFound(f"school {school!r} not found (give its code or id)")
    if room is None:
        return found, None
    rq = select(Room).where(Room.school_id == found.id, Room.name == room)
    if room.isdigit():
        rq = select(Room).where(Room.school_id == found.id, (Room.name == room) | (Room.id == int(room)))
    place = (await session.execute(rq)).scalars().first()
    if place is None:
        raise NotFound(f"room {room!r} not found in school {found.code}")
    return found, place


def make_planner(
    run: BenchRun, mqtt_host: str
) -> Callable[[AttachedDevice, DeviceIdentity], ProvisionPlan | None]:
    def plan_for(dev: AttachedDevice, ident: DeviceIdentity) -> ProvisionPlan | None:
        entry = run.catalogue.get(dev.family)
        if entry is None:
            return None
        interval = entry.profile.settings.telemetry_interval_seconds
        if dev.family is Family.FIRMATA:
            ms = min(int(interval * 1000), FIRMATA_MAX_INTERVAL_MS)
            return _Plan({"sampling_interval_ms": str(ms)}, entry.target)
        password = run.passwords.setdefault(ident.hardware_id, credentials.new_password())
        config = {
            "school": run.school.code,
            "room": run.room.name if run.room else "",
            "mqtt_host": mqtt_host,
            "mqtt_username": ident.hardware_id,
            "mqtt_password": password,
            "telemetry_interval_seconds": str(interval),
        }
        return _Plan(config, entry.target)

    return plan_for


async def record(
    session: AsyncSession, clock: Clock, run: BenchRun, dev: AttachedDevice, result: ProvisionResult
) -> str:
    """Match the kit to its inventory record (or register it as received), move it to provisioned on
    success, store its MQTT credential and write the audit entry. Returns the asset tag."""
    serials = [s for s in (result.device_id, dev.port.serial_number) if s]
    device = None
    if serials:
        device = (
            (
                await session.execute(
                    select(Device).where(Device.serial_number.in_(serials)).order_by(Device.id)
                )
            )
            .scalars()
            .first()
        )
    entry = run.catalogue.get(dev.family)
    service = DeviceService(session, PROVISIONER, clock)
    if device is None and entry is not None and result.device_id:
        device = await service.create(
            {
                "serial_number": result.device_id,
                "model_id": entry.model_id,
                "school_id": run.school.id,
                "room_id": run.room.id if run.room else None,
                "asset_tag": f"KIT-{result.device_id.replace(':', '-')}"[:64],
                "status": DeviceStatus.RECEIVED,
            }
        )
        audit.record(
            session,
            principal=PROVISIONER,
            at=clock.now(),
            action="device.registered",
            object_type="device",
            object_id=device.id,
            school_id=device.school_id,
            after={"serial_number": result.device_id, "hardware_id": dev.hardware_id},
            summary="unknown kit registered as received at the provisioning bench",
        )
    after = {
        "outcome": result.outcome.value,
        "firmware_before": result.firmware_before,
        "firmware_after": result.firmware_after,
        "hardware_id": dev.hardware_id,
        "reason": result.reason,
    }
    if device is None:
        audit.record(
            session,
            principal=PROVISIONER,
            at=clock.now(),
            action=f"kit.provision_{result.outcome}",
            object_type="kit",
            object_id=dev.hardware_id[:64],
            school_id=run.school.id,
            after=after,
            summary=result.reason or None,
        )
        return ""
    fresh = result.outcome is Outcome.PROVISIONED and not result.reason.startswith("already provisioned")
    if result.outcome is Outcome.PROVISIONED:
        if device.status == DeviceStatus.ORDERED:
            await service.transition(device.id, DeviceStatus.RECEIVED, "arrived at the provisioning bench")
        if device.status == DeviceStatus.RECEIVED:
            await service.transition(device.id, DeviceStatus.PROVISIONED, "provisioned at the bench")
        password = run.passwords.get(result.device_id)
        if fresh and password is not None:
            await _store_credential(session, clock, device, result.device_id, run.school.code, password)
    audit.record(
        session,
        principal=PROVISIONER,
        at=clock.now(),
        action=f"device.provision_{result.outcome}",
        object_type="device",
        object_id=device.id,
        school_id=device.school_id,
        after=after,
        summary=result.reason or None,
    )
    return device.asset_tag


async def _store_credential(
    session: AsyncSession, clock: Clock, device: Device, username: str, school_code: str, password: str
) -> None:
    """The password written to the kit becomes its MQTT credential (only the hash is kept)."""
    now = clock.now()
    hashed = await asyncio.to_thread(credentials.hash_password, password)
    cred = (
        await session.execute(select(DeviceCredential).where(DeviceCredential.device_id == device.id))
    ).scalar_one_or_none()
    if cred is None:
        session.add(
            DeviceCredential(
                device_id=device.id,
                username=username[:64],
                school_code=school_code,
                password_hash=hashed,
                created_at=now,
            )
        )
    else:
        cred.username, cred.school_code, cred.password_hash = username[:64], school_code, hashed
        cred.rotated_at, cred.revoked_at = now, None
    await session.flush()


def parse_kit(spec: str) -> tuple[Family, str]:
    """`FAMILY=PORT` (firmata=/dev/ttyUSB0): a kit on a port discovery cannot classify."""
    family, sep, path = spec.partition("=")
    if not sep or not path:
        raise InvalidInput(f"--kit {spec!r}: give FAMILY=PORT, e.g. firmata=/dev/ttyUSB0")
    try:
        return Family(family.strip().lower()), path.strip()
    except ValueError:
        names = ", ".join(f.value for f in Family)
        raise InvalidInput(f"--kit {spec!r}: unknown family {family!r} (one of {names})") from None


@contextlib.asynccontextmanager
async def attached_devices(
    ports: Sequence[str], all_ports: bool, bench: int, seed: int, kits: Sequence[tuple[Family, str]] = ()
) -> AsyncIterator[tuple[list[AttachedDevice], Any]]:
    """The kits to provision and a locator for replugs: simulated (`bench` > 0) or the real USB ports,
    plus the ports named with their family (`kits`), which discovery does not list or cannot classify."""
    named = [AttachedDevice(PortInfo(path), family) for family, path in kits]
    if bench > 0:
        from simulators.serial.bench import SimBench, make_devices

        async with SimBench() as sim:
            for device in make_devices(bench, families=BENCH_FAMILIES, seed=seed):
                sim.add(device)
            await sim.start()
            yield sim.attached(), sim.locate
        return
    found = await asyncio.to_thread(list_ports) if all_ports or ports else []
    attached = []
    for port in found:
        kit = classify(port)
        if kit is None or any(n.port.device == port.device for n in named):
            continue
        if all_ports or port.device in ports or port.hardware_id in ports:
            attached.append(AttachedDevice(port, kit.family))
    attached += named

    async def locate(hardware_id: str) -> AttachedDevice | None:
        for dev in named:
            if dev.hardware_id == hardware_id:
                return dev if await asyncio.to_thread(Path(dev.port.device).exists) else None
        for port in await asyncio.to_thread(list_ports):
            kit = classify(port)
            if port.hardware_id == hardware_id and kit is not None:
                return AttachedDevice(port, kit.family)
        return None

    yield attached, locate


async def provision_bench(
    cfg: Settings,
    *,
    school: str,
    room: str | None,
    ports: Sequence[str],
    all_ports: bool,
    state_file: Path | None,
    bench: int,
    seed: int,
    console: Console,
    profile_dir: Path = DEFAULT_PROFILE_DIR,
    clock: Clock | None = None,
    kits: Sequence[tuple[Family, str]] = (),
) -> list[Row]:
    """Run one bench pass and record every result; returns the table rows."""
    clock = clock or SystemClock()
    engine = create_engine(cfg.database_url)
    factory: async_sessionmaker[AsyncSession] = session_factory(engine)
    try:
        async with unit_of_work(factory) as session:
            place, lab = await resolve_place(session, school, room)
            catalogue = await load_catalogue(session, profile_dir)
            session.expunge_all()
        run = BenchRun(place, lab, catalogue)
        if not catalogue:
            raise NotFound("no device model in the catalogue has a serial-kit firmware profile")
        state = await StateFile.load(state_file) if state_file else None
        db_lock = asyncio.Lock()  # one writer at a time: SQLite has one, and results are small
        async with attached_devices(ports, all_ports, bench, seed, kits) as (devices, locate):
            if not devices:
                console.print("No kits attached (use --all, --ports, or --bench N to try simulated kits).")
                return []
            rows: dict[str, Row] = {}
            with Progress(
                TextColumn("{task.fields[port]:<16}"),
                TextColumn("{task.fields[step]:<10}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as bars:
                tasks: dict[str, TaskID] = {
                    d.hardware_id: bars.add_task("", total=1, port=d.port.device, step="waiting")
                    for d in devices
                }

                def on_progress(p: DeviceProgress) -> None:
                    task = tasks.get(p.hardware_id)
                    if task is None:
                        return
                    if p.step == "retry":  # shown as it happens: which attempt, out of how many
                        bars.update(task, step=f"retry {p.done}/{p.total}")
                    elif p.total:
                        bars.update(task, completed=p.done, total=p.total, step=p.step)
                    elif p.step == "done":
                        bars.update(task, completed=bars.tasks[task].total or 1, step="done")
                    else:
                        bars.update(task, step=p.step)

                provisioner = Provisioner(state=state, progress=on_progress, locate=locate)
                planner = make_planner(run, cfg.mqtt.url)

                async def one(dev: AttachedDevice) -> None:
                    result = await provisioner.provision(dev, planner)
                    async with db_lock:
                        try:
                            async with unit_of_work(factory) as session:
                                tag = await record(session, clock, run, dev, result)
                            recorded = "recorded"
                        except FleetError as err:
                            tag, recorded = "", f"not recorded: {err.message}"
                    rows[dev.hardware_id] = Row(dev.port.device, result, tag, recorded)

                async with asyncio.TaskGroup() as group:
                    for dev in devices:
                        group.create_task(one(dev), name=f"provision:{dev.hardware_id}")
            return [rows[d.hardware_id] for d in devices]
    finally:
        await engine.dispose()


def result_table(rows: Sequence[Row]) -> Table:
    # The identity and the asset tag are what a technician copies onto the kit's label: they share one column,
    # one above the other, that always gets their full width (a Uno's identity is its 20-digit USB serial).
    # The result, the firmware change and the reason share another; the /dev path folds into what is left of
    # an 80-column terminal.
    kits = [(row.result.device_id or row.result.hardware_id, row.asset_tag or "-") for row in rows]
    firmware = [f"{row.result.firmware_before or '?'} -> {row.result.firmware_after or '?'}" for row in rows]
    table = Table(
        Column("device", overflow="fold"),
        Column(
            "identity / asset tag", no_wrap=True, min_width=max((len(x) for k in kits for x in k), default=20)
        ),
        Column("result / firmware", overflow="fold", min_width=max(map(len, [*firmware, "provisioned"]))),
        title="Provisioning bench",
    )
    for row, (identity, tag), change in zip(rows, kits, firmware, strict=True):
        r = row.result
        colour = {"provisioned": "green", "failed": "red", "skipped": "yellow"}[r.outcome.value]
        reason = "; ".join(x for x in (r.reason, "" if row.recorded == "recorded" else row.recorded) if x)
        table.add_row(
            row.port,
            f"{identity}\n{tag}",
            f"[{colour}]{r.outcome}[/]\n{change}" + (f"\n{reason}" if reason else ""),
        )
    return table


def provision(
    ports: Annotated[
        list[str] | None, typer.Option("--ports", help="ports (/dev path or hardware id)")
    ] = None,
    all_ports: Annotated[bool, typer.Option("--all", help="every attached kit")] = False,
    school: Annotated[str, typer.Option(help="school code or id the kits belong to")] = "",
    room: Annotated[str | None, typer.Option(help="room name or id")] = None,
    state_file: Annotated[
        Path | None, typer.Option(help="resume file (kits done in an earlier run are skipped)")
    ] = None,
    bench: Annotated[int, typer.Option(help="run against N simulated kits instead of USB ports")] = 0,
    seed: Annotated[int, typer.Option(help="identity seed of the simulated kits")] = 0,
    kit: Annotated[
        list[str] | None,
        typer.Option(
            "--kit",
            help="FAMILY=PORT for a kit discovery does not recognise (a clone's generic USB adapter, "
            "an emulated board), e.g. firmata=/dev/ttyUSB0",
        ),
    ] = None,
    profiles: Annotated[
        Path | None, typer.Option(help="firmware profiles folder (default: the profiles LabFleet ships)")
    ] = None,
) -> None:
    """Provision attached kits in parallel: credentials and school settings, firmware when it differs."""
    console = Console()
    if not school:
        console.print("[red]Error:[/red] --school is required")
        raise typer.Exit(2)
    try:
        named = [parse_kit(spec) for spec in kit or []]
    except InvalidInput as err:
        console.print(f"[red]Error:[/red] {err.message}")
        raise typer.Exit(2) from None
    if bench <= 0 and not all_ports and not ports and not named:
        console.print(
            "[red]Error:[/red] name --ports or --kit, or give --all (or --bench N for simulated kits)"
        )
        raise typer.Exit(2)
    cfg = Settings()
    upgrade_sync(cfg.database_url)
    try:
        rows = asyncio.run(
            provision_bench(
                cfg,
                school=school,
                room=room,
                ports=ports or [],
                all_ports=all_ports,
                state_file=state_file,
                bench=bench,
                seed=seed,
                console=console,
                kits=named,
                profile_dir=profiles or DEFAULT_PROFILE_DIR,
            )
        )
    except FleetError as err:
        console.print(f"[red]Error:[/red] {err.message}")
        raise typer.Exit(1) from None
    if not rows:
        raise typer.Exit(1)
    console.print(result_table(rows))
    ok = sum(r.result.outcome is Outcome.PROVISIONED and r.recorded == "recorded" for r in rows)
    console.print(f"{ok}/{len(rows)} provisioned and recorded")
    if ok != len(rows):
        raise typer.Exit(1)


__all__ = ["parse_kit", "provision", "provision_bench", "result_table"]
