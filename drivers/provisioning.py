"""Provision attached kits in parallel: identify, configure, flash when the version differs.

Independent of the fleet service: the caller decides the plan per device (from the inventory and
firmware profiles) and records the results. Progress is reported per device through a callback,
and a JSON state file lets an interrupted bench run resume where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from drivers.discovery import PortInfo
from drivers.errors import DeviceTimeout, DriverError, LinkError
from drivers.firmata import FirmataBoard
from drivers.micropython import MicroPythonBoard
from drivers.reset_lines import ResetLine
from drivers.robot import RobotDevice
from drivers.types import Device, DeviceIdentity, Family, FirmwareImage, Progress

log = logging.getLogger(__name__)

# Thirty kits on one powered hub is the bench's design point; every device is mostly waiting on
# its own serial line, so they all run at once. The cap guards a mis-sized hub of hundreds.
DEFAULT_CONCURRENCY = 32
# A cable pulled mid-flash or a flaky hub port gets this many tries; the device resumes its
# transfer each time, so a retry costs only the rest of the image.
DEFAULT_ATTEMPTS = 3
# After a link drops, wait this long for the device to reappear (a human replugging a cable).
REPLUG_WAIT = 30.0
REPLUG_POLL = 0.25
# A kit on a silent, noisy or wrong-speed line is given up within a minute, however its driver retries
# (a technician at a bench of thirty waits for the slowest); a kit that reached its flash gets 90 s in all
# (a whole robot image at 115200 baud is ~10 s, a Uno's sketch through Optiboot ~5 s: the rest is retries).
LINE_BUDGET = 60.0
FLASH_BUDGET = 90.0
STATE_VERSION = 1


class Outcome(StrEnum):
    PROVISIONED = "provisioned"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class AttachedDevice:
    """A device on the bench as discovery found it."""

    port: PortInfo
    family: Family
    reset: ResetLine | None = None  # DTR pulse for bootloader access (Firmata kits)

    @property
    def hardware_id(self) -> str:
        return self.port.hardware_id

    @property
    def url(self) -> str:
        return self.port.url


@dataclass(frozen=True, slots=True)
class ProvisionPlan:
    """What a device should end up with."""

    config: Mapping[str, str]
    firmware: FirmwareImage | None = None

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps(dict(sorted(self.config.items()))).encode())
        if self.firmware is not None:
            h.update(self.firmware.version.encode() + self.firmware.sha256.encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DeviceProgress:
    hardware_id: str
    step: str  # open, identify, configure, flash, boot, done, failed, retry
    done: int = 0
    total: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    hardware_id: str
    family: Family
    outcome: Outcome
    device_id: str = ""  # the device's own identity (unique id), when it answered
    model: str = ""
    firmware_before: str = ""
    firmware_after: str = ""
    reason: str = ""
    attempts: int = 0
    seconds: float = 0.0
    details: tuple[tuple[str, str], ...] = field(default=())
    resumed_from: int = 0  # bytes of the image the device already had (an interrupted earlier attempt)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["family"] = self.family.value
        out["outcome"] = self.outcome.value
        out["details"] = dict(self.details)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProvisionResult:
        return cls(
            hardware_id=str(data["hardware_id"]),
            family=Family(data["family"]),
            outcome=Outcome(data["outcome"]),
            device_id=str(data.get("device_id", "")),
            model=str(data.get("model", "")),
            firmware_before=str(data.get("firmware_before", "")),
            firmware_after=str(data.get("firmware_after", "")),
            reason=str(data.get("reason", "")),
            attempts=int(data.get("attempts", 0)),
            seconds=float(data.get("seconds", 0.0)),
            resumed_from=int(data.get("resumed_from", 0)),
            details=tuple((str(k), str(v)) for k, v in dict(data.get("details", {})).items()),
        )


PlanFor = Callable[[AttachedDevice, DeviceIdentity], ProvisionPlan | None]
DeviceOpener = Callable[[AttachedDevice], Awaitable[Device]]
Locator = Callable[[str], Awaitable[AttachedDevice | None]]
ProgressSink = Callable[[DeviceProgress], None]


async def open_device(attached: AttachedDevice) -> Device:
    """Open the right device class for a discovered port."""
    if attached.family is Family.ROBOT:
        return await RobotDevice.open(attached.url)
    if attached.family is Family.MICROPYTHON:
        return await MicroPythonBoard.open(attached.url)
    return await FirmataBoard.open(attached.url, reset=attached.reset, hardware_id=attached.hardware_id)


class StateFile:
    """Finished devices, persisted atomically after each one so an interrupted run can resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == STATE_VERSION:
                    self.entries = dict(data.get("devices", {}))
            except (OSError, ValueError) as err:
                # A torn or foreign file must not stop the bench: start afresh, keep the old file.
                log.warning("ignoring unreadable provisioning state %s: %s", path, err)
                path.replace(path.with_suffix(path.suffix + ".bad"))

    @classmethod
    async def load(cls, path: Path) -> StateFile:
        """Read the state file in a worker thread (the constructor reads synchronously)."""
        return await asyncio.to_thread(cls, path)

    def finished(self, hardware_id: str, fingerprint: str) -> ProvisionResult | None:
        entry = self.entries.get(hardware_id)
        if entry and entry.get("fingerprint") == fingerprint and entry["result"]["outcome"] == "provisioned":
            return ProvisionResult.from_json(entry["result"])
        return None

    async def record(self, result: ProvisionResult, fingerprint: str) -> None:
        async with self._lock:
            self.entries[result.hardware_id] = {"fingerprint": fingerprint, "result": result.to_json()}
            payload = json.dumps(
                {"version": STATE_VERSION, "devices": self.entries}, indent=1, sort_keys=True
            )
            await asyncio.to_thread(_atomic_write, self.path, payload)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Provisioner:
    """Runs one provisioning pass over a set of attached devices."""

    def __init__(
        self,
        *,
        opener: DeviceOpener = open_device,
        state: StateFile | None = None,
        progress: ProgressSink | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        attempts: int = DEFAULT_ATTEMPTS,
        locate: Locator | None = None,
        replug_wait: float = REPLUG_WAIT,
        clock: Callable[[], float] = time.monotonic,
        line_budget: float = LINE_BUDGET,
        flash_budget: float = FLASH_BUDGET,
    ) -> None:
        self._line_budget = line_budget
        self._flash_budget = flash_budget
        self._opener = opener
        self._state = state
        self._progress = progress or (lambda _p: None)
        self._sem = asyncio.Semaphore(concurrency)
        self._attempts = attempts
        self._locate = locate
        self._replug_wait = replug_wait
        self._clock = clock
        # Per kit in progress: when its budget ends (loop time), when its flash budget would, its timeout.
        self._budget_end: dict[str, float] = {}
        self._flash_end: dict[str, float] = {}
        self._scopes: dict[str, asyncio.Timeout] = {}

    async def run(self, devices: Sequence[AttachedDevice], plan_for: PlanFor) -> list[ProvisionResult]:
        results: dict[str, ProvisionResult] = {}

        async def one(dev: AttachedDevice) -> None:
            async with self._sem:
                results[dev.hardware_id] = await self.provision(dev, plan_for)

        async with asyncio.TaskGroup() as group:
            for dev in devices:
                group.create_task(one(dev), name=f"provision:{dev.hardware_id}")
        return [results[d.hardware_id] for d in devices]

    async def provision(self, attached: AttachedDevice, plan_for: PlanFor) -> ProvisionResult:
        """Provision one device; never raises (a failure is a result with a reason)."""
        started = self._clock()
        loop = asyncio.get_running_loop()
        # The budget runs on the loop's clock (asyncio.timeout's); the flash phase extends it (_attempt).
        self._budget_end[attached.hardware_id] = loop.time() + self._line_budget
        self._flash_end[attached.hardware_id] = loop.time() + self._flash_budget
        hw = attached.hardware_id
        failures: list[str] = []  # every attempt's failure: the final reason names them all
        before = ""
        attempt = 0
        try:
            for attempt in range(1, self._attempts + 1):
                if attempt > 1:
                    self._emit(hw, "retry", attempt, self._attempts, detail=failures[-1])
                    located = await self._relocate(attached)
                    if located is None:
                        failures.append(f"attempt {attempt}: device not found again")
                        break
                    attached = located
                remaining = self._budget_end[hw] - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining) as scope:
                        self._scopes[hw] = scope
                        result = await self._attempt(attached, plan_for, attempt, started)
                except TimeoutError:
                    failures.append(f"attempt {attempt}: no progress within the time budget")
                    log.info("%s: attempt %d ran out of time", hw, attempt)
                    break
                except (LinkError, DeviceTimeout) as err:
                    failures.append(f"attempt {attempt}: {type(err).__name__}: {err}")
                    log.info("%s: attempt %d lost the device: %s", hw, attempt, err)
                    continue
                except DriverError as err:
                    failures.append(f"attempt {attempt}: {type(err).__name__}: {err}")
                    break
                except Exception as err:
                    log.exception("%s: unexpected error while provisioning", hw)
                    failures.append(f"attempt {attempt}: internal error: {type(err).__name__}")
                    break
                return result
        finally:
            for table in (self._budget_end, self._flash_end, self._scopes):
                table.pop(hw, None)
        seconds = self._clock() - started
        reason = "; ".join(failures) or "device not found"
        if failures and failures[-1].endswith("within the time budget"):
            reason += f" (gave up after {seconds:.0f} s)"
        result = ProvisionResult(
            hw,
            attached.family,
            Outcome.FAILED,
            firmware_before=before,
            reason=reason,
            attempts=attempt,
            seconds=seconds,
        )
        self._emit(hw, "failed", detail=result.reason)
        return result

    async def _relocate(self, attached: AttachedDevice) -> AttachedDevice | None:
        """Find the device again by hardware id (it may come back on a new /dev path)."""
        if self._locate is None:
            return attached
        # Waiting for a replug counts against the kit's budget too.
        budget_left = self._budget_end.get(attached.hardware_id, 0.0) - asyncio.get_running_loop().time()
        deadline = self._clock() + max(0.0, min(self._replug_wait, budget_left))
        while True:
            found = await self._locate(attached.hardware_id)
            if found is not None:
                return found
            if self._clock() > deadline:
                return None
            await asyncio.sleep(REPLUG_POLL)

    async def _attempt(
        self, attached: AttachedDevice, plan_for: PlanFor, attempt: int, started: float
    ) -> ProvisionResult:
        hw = attached.hardware_id
        self._emit(hw, "open")
        device = await self._opener(attached)
        try:
            self._emit(hw, "identify")
            ident = await device.identify()
            plan = plan_for(attached, ident)

            def result(
                outcome: Outcome, firmware_after: str, reason: str = "", resumed_from: int = 0
            ) -> ProvisionResult:
                return ProvisionResult(
                    hw,
                    attached.family,
                    outcome,
                    device_id=ident.hardware_id,
                    model=ident.model,
                    firmware_before=ident.firmware_version,
                    firmware_after=firmware_after,
                    reason=reason,
                    attempts=attempt,
                    seconds=self._clock() - started,
                    details=ident.details,
                    resumed_from=resumed_from,
                )

            if plan is None:
                self._emit(hw, "done", detail="no plan")
                return result(Outcome.SKIPPED, ident.firmware_version, "no provisioning plan for this device")
            fingerprint = plan.fingerprint()
            if self._state is not None:
                done = self._state.finished(hw, fingerprint)
                if done is not None and ident.firmware_version == done.firmware_after:
                    self._emit(hw, "done", detail="already provisioned")
                    return result(
                        Outcome.PROVISIONED, done.firmware_after, "already provisioned (resumed run)"
                    )
            self._emit(hw, "configure")
            config = await device.apply_config(plan.config)
            if not config.ok:
                return await self._finish(
                    result(Outcome.FAILED, ident.firmware_version, f"configuration: {config.reason}"),
                    fingerprint,
                )
            after = ident.firmware_version
            resumed_from = 0
            if plan.firmware is not None and plan.firmware.version != ident.firmware_version:
                # From here the kit has its flash budget (counted from its start), not the line budget.
                self._budget_end[hw] = self._flash_end[hw]
                scope = self._scopes.get(hw)
                if scope is not None:
                    scope.reschedule(self._flash_end[hw])
                flashed = await device.flash(plan.firmware, lambda p: self._on_flash(hw, p))
                after = flashed.after
                resumed_from = flashed.resumed_from
                if not flashed.ok:
                    return await self._finish(
                        result(Outcome.FAILED, after, f"firmware: {flashed.reason}"), fingerprint
                    )
            provisioned = result(Outcome.PROVISIONED, after, resumed_from=resumed_from)
            self._emit(hw, "done")
            return await self._finish(provisioned, fingerprint)
        finally:
            try:
                await device.aclose()
            except DriverError:
                pass

    async def _finish(self, result: ProvisionResult, fingerprint: str) -> ProvisionResult:
        if result.outcome is Outcome.FAILED:
            self._emit(result.hardware_id, "failed", detail=result.reason)
        if self._state is not None:
            await self._state.record(result, fingerprint)
        return result

    def _on_flash(self, hw: str, p: Progress) -> None:
        self._emit(hw, p.phase, p.done, p.total)

    def _emit(self, hw: str, step: str, done: int = 0, total: int = 0, detail: str = "") -> None:
        try:
            self._progress(DeviceProgress(hw, step, done, total, detail))
        except Exception:
            log.exception("progress callback failed")
