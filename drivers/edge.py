"""The fleet-independent core of the edge agent: watch the USB bench, hold one connection per kit,
report presence and health, run commands, and hand kits to the provisioner.

The fleet side (MQTT topics, HTTP registration, audit) plugs in through `EdgeEvents` callbacks
and `EdgeSupervisor.command`; nothing here imports `fleet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from drivers.discovery import PortEvent, PortEventKind, PortInfo, PortWatcher, classify
from drivers.errors import DriverError, LinkError
from drivers.provisioning import (
    AttachedDevice,
    DeviceOpener,
    Outcome,
    PlanFor,
    ProgressSink,
    Provisioner,
    ProvisionPlan,
    ProvisionResult,
    StateFile,
    open_device,
)
from drivers.reset_lines import ResetLine
from drivers.types import (
    NO_PROGRESS,
    ConfigResult,
    Device,
    DeviceIdentity,
    Family,
    FirmwareImage,
    FlashResult,
    Health,
    ProgressCallback,
)

log = logging.getLogger(__name__)

# Health is sampled this often per kit: presence within a minute is what the lab dashboard shows,
# and a Firmata health read costs ~100 ms of the kit's line.
HEALTH_INTERVAL = 30.0
# A command waits at most this long for the kit's connection lock (a flash can hold it for minutes,
# so a reboot arriving then fails fast instead of piling up).
COMMAND_LOCK_TIMEOUT = 5.0


class Command(StrEnum):
    IDENTIFY = "identify"
    HEALTH = "health"
    REBOOT = "reboot"
    APPLY_CONFIG = "apply_config"
    READ_CONFIG = "read_config"
    FLASH = "flash"


class EdgeEvents(Protocol):
    """What the supervisor tells its owner (the agent bridges these to MQTT)."""

    async def online(self, port: PortInfo, identity: DeviceIdentity) -> None: ...

    async def offline(self, hardware_id: str, reason: str) -> None: ...

    async def health(self, hardware_id: str, health: Health) -> None: ...


@dataclass
class _Held:
    attached: AttachedDevice
    device: Device
    identity: DeviceIdentity
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CommandError(DriverError):
    """A command could not run (unknown device, busy, bad arguments)."""


ResetFor = Callable[[PortInfo], ResetLine | None]


class EdgeSupervisor:
    """Owns the port watcher and one open connection per attached, identified kit."""

    def __init__(
        self,
        watcher: PortWatcher,
        events: EdgeEvents,
        *,
        opener: DeviceOpener = open_device,
        reset_for: ResetFor | None = None,
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        self.watcher = watcher
        self.events = events
        self._opener = opener
        self._reset_for = reset_for or (lambda _p: None)
        self.health_interval = health_interval
        self.devices: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused: set[str] = set()
        # Settings a kit loses on every reset (Firmata keeps none; opening a Uno's port resets it), by
        # hardware id: applied again each time the kit is opened.
        self.volatile_config: dict[str, dict[str, str]] = {}

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch and sample until cancelled; the caller's TaskGroup owns this coroutine."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_loop(), name="edge-watch")
            group.create_task(self._health_loop(), name="edge-health")

    async def aclose(self) -> None:
        for hw in list(self.devices):
            await self._drop(hw, "agent stopping")

    async def _watch_loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.watcher.interval)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self.sample_once()

    # ---- presence -------------------------------------------------------------------------

    async def poll_once(self) -> list[PortEvent]:
        """One discovery pass: connect new kits, drop vanished ones."""
        events = await self.watcher.poll_once()
        for event in events:
            hw = event.port.hardware_id
            if hw in self._paused:
                continue
            if event.kind is PortEventKind.DETACHED:
                await self._drop(hw, "unplugged")
            elif event.kit is not None:
                if event.kind is PortEventKind.MOVED:
                    await self._drop(hw, "moved to another port")
                await self._connect(AttachedDevice(event.port, event.kit.family, self._reset_for(event.port)))
        return events

    async def _connect(self, attached: AttachedDevice) -> None:
        hw = attached.hardware_id
        try:
            device = await self._opener(attached)
        except DriverError as err:
            log.warning("%s: cannot open %s: %s", hw, attached.port.device, err)
            return
        try:
            identity = await device.identify()
        except DriverError as err:
            log.warning("%s: does not identify: %s", hw, err)
            await _close_quietly(device)
            return
        config = self.volatile_config.get(hw)
        if config:
            try:
                restored = await device.apply_config(config)
            except DriverError as err:
                restored = ConfigResult(False, (), str(err))
            if restored.ok:
                log.info("%s: configuration applied again after the reset on open", hw)
            else:
                log.warning("%s: configuration not restored after the reset: %s", hw, restored.reason)
        self.devices[hw] = _Held(attached, device, identity)
        log.info("%s online: %s %s", hw, identity.model, identity.firmware_version)
        await self.events.online(attached.port, identity)

    async def _drop(self, hw: str, reason: str) -> None:
        held = self.devices.pop(hw, None)
        if held is None:
            return
        await _close_quietly(held.device)
        log.info("%s offline: %s", hw, reason)
        await self.events.offline(hw, reason)

    async def sample_once(self) -> None:
        """Read health from every idle kit; a kit that stopped answering is dropped as offline."""
        for hw, held in list(self.devices.items()):
            if held.lock.locked():
                continue  # busy flashing or running a command: skip this round
            async with held.lock:
                try:
                    health = await held.device.read_health()
                except LinkError as err:
                    await self._drop(hw, f"link lost: {err}")
                    continue
                except DriverError as err:
                    log.warning("%s: health read failed: %s", hw, err)
                    continue
            await self.events.health(hw, health)

    # ---- commands -------------------------------------------------------------------------

    async def command(
        self,
        hardware_id: str,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        images: Callable[[str], Awaitable[FirmwareImage]] | None = None,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> dict[str, Any]:
        """Run a fleet command on a kit; returns a JSON-able result or raises CommandError/DriverError.

        `progress` sees a flash's phases ("flash" bytes, then "boot"), so a caller can report rebooting.
        """
        held = self.devices.get(hardware_id)
        if held is None:
            raise CommandError(f"{hardware_id} is not attached to this agent")
        try:
            cmd = Command(name)
        except ValueError:
            raise CommandError(f"unknown command {name!r}") from None
        args = dict(args or {})
        try:
            await asyncio.wait_for(held.lock.acquire(), COMMAND_LOCK_TIMEOUT)
        except TimeoutError:
            raise CommandError(f"{hardware_id} is busy") from None
        try:
            try:
                return await self._run(held, cmd, args, images, progress)
            except LinkError as err:
                await self._drop(hardware_id, f"link lost: {err}")
                raise
        finally:
            held.lock.release()

    async def _run(
        self,
        held: _Held,
        cmd: Command,
        args: dict[str, Any],
        images: Callable[[str], Awaitable[FirmwareImage]] | None,
        progress: ProgressCallback = NO_PROGRESS,
    ) -> dict[str, Any]:
        dev = held.device
        if cmd is Command.IDENTIFY:
            held.identity = await dev.identify()
            return {
                "hardware_id": held.identity.hardware_id,
                "model": held.identity.model,
                "firmware_version": held.identity.firmware_version,
                "details": dict(held.identity.details),
            }
        if cmd is Command.HEALTH:
            h = await dev.read_health()
            return {"status": h.status.value, "readings": dict(h.readings), "problems": list(h.problems)}
        if cmd is Command.REBOOT:
            await dev.reboot()
            return {"rebooted": True}
        if cmd is Command.READ_CONFIG:
            reader = getattr(dev, "read_config", None)
            # None: the kit keeps no settings of its own (Firmata).
            return {"config": None if reader is None else dict(await reader())}
        if cmd is Command.APPLY_CONFIG:
            config = args.get("config")
            if not isinstance(config, dict):
                raise CommandError("apply_config needs a 'config' object")
            wanted = {str(k): str(v) for k, v in config.items()}
            result: ConfigResult = await dev.apply_config(wanted)
            if result.ok and held.attached.family is Family.FIRMATA:
                self.volatile_config.setdefault(held.attached.hardware_id, {}).update(wanted)
            return {"ok": result.ok, "keys": list(result.keys), "reason": result.reason}
        version = args.get("version")
        if images is None or not isinstance(version, str):
            raise CommandError("flash needs a 'version' and an image source")
        flashed: FlashResult = await dev.flash(await images(version), progress)
        held.identity = await dev.identify()
        return {"ok": flashed.ok, "before": flashed.before, "after": flashed.after, "reason": flashed.reason}

    # ---- provisioning ---------------------------------------------------------------------

    def attached(self) -> list[AttachedDevice]:
        return [h.attached for h in self.devices.values()]

    async def locate(self, hardware_id: str) -> AttachedDevice | None:
        """Where a kit is now, by hardware id (after a replug it may be on a new path)."""
        port = await self.watcher.lookup(hardware_id)
        if port is None:
            return None
        kit = classify(port)
        return None if kit is None else AttachedDevice(port, kit.family, self._reset_for(port))

    async def provision(
        self,
        plan_for: PlanFor,
        *,
        only: Sequence[str] | None = None,
        state: StateFile | None = None,
        progress: ProgressSink | None = None,
        **kwargs: Any,
    ) -> list[ProvisionResult]:
        """Provision attached kits (or the named ones): their held connections are released for the
        duration (a port has one owner) and re-established afterwards."""
        targets = [h.attached for hw, h in self.devices.items() if only is None or hw in only]
        for a in targets:
            self._paused.add(a.hardware_id)
            held = self.devices.pop(a.hardware_id)
            await _close_quietly(held.device)
        try:
            provisioner = Provisioner(
                opener=self._opener, state=state, progress=progress, locate=self.locate, **kwargs
            )
            plans: dict[str, ProvisionPlan] = {}

            def remember(dev: AttachedDevice, ident: DeviceIdentity) -> ProvisionPlan | None:
                plan = plan_for(dev, ident)
                if plan is not None and dev.family is Family.FIRMATA:
                    plans[dev.hardware_id] = plan
                return plan

            results = await provisioner.run(targets, remember)
            for r in results:
                if r.outcome is Outcome.PROVISIONED and r.hardware_id in plans:
                    self.volatile_config[r.hardware_id] = dict(plans[r.hardware_id].config)
        finally:
            for a in targets:
                self._paused.discard(a.hardware_id)
                located = await self.locate(a.hardware_id)
                if located is not None:
                    await self._connect(located)
                else:
                    await self.events.offline(a.hardware_id, "not found after provisioning")
        return results


async def _close_quietly(device: Device) -> None:
    with contextlib.suppress(DriverError, OSError):
        await device.aclose()
