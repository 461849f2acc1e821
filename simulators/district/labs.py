"""Lab devices (robots, microcontroller kits) on real ptys, bridged to the fleet by an edge agent per lab
room.

The simulator owns the hardware side: one SimBench per lab room, a simulated device per robot or kit on its
own pty, listed as a USB device. The agent side (the real edge agent, its serial drivers, its MQTT links and
its kit updater, which carries out rollouts to the kits) comes from a hook the `labfleet simulate` command
supplies, since simulators import nothing from `fleet`. Only the
first `edge.labs` lab rooms of the spec get ptys: each pty device is a task and a serial session on this
machine, so the 50 labs of a full district are bounded to a few (the rest are declared and counted only).

A device's inventory serial is the identity its driver reads back (`robot-<uid>`, `mpy-<hex unique id>`), so
the agent's enrollment matches the provisioned record instead of registering a new one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulators.serial.base import SimDevice
from simulators.serial.bench import SimBench
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.robot import RobotSim

logger = logging.getLogger(__name__)

# Device kinds that run on a pty, and the family of simulated hardware that stands in for them.
PTY_KINDS = ("robot", "mcu_kit")


def hardware_serial(kind: str, base: str) -> str:
    """The identity the driver will read from the simulated device built for (kind, base)."""
    if kind == "robot":
        return f"robot-{base}"
    if kind == "mcu_kit":
        return f"mpy-{_unique_id(base).hex()}"
    return base


def _unique_id(base: str) -> bytes:
    # An ESP32's machine.unique_id() is its 6-byte MAC: derived from the spec name, stable across runs.
    return hashlib.sha256(base.encode()).digest()[:6]


def sim_device(kind: str, base: str, index: int) -> SimDevice:
    """Simulated hardware for one lab device; `index` makes its USB serial unique on this machine."""
    if kind == "robot":
        return RobotSim(uid=base, usb_serial=f"SIMR{index:06d}")
    return MicroPythonSim(unique_id=_unique_id(base), usb_serial=f"SIMK{index:06d}")


class EdgeAgentLike(Protocol):
    """What the simulator reads from a running agent: the kits it bridged (hardware id -> link)."""

    kits: dict[str, Any]


# (school code, room name, bench, agent health interval in real seconds, clock in epoch ms) -> running agent
StartAgent = Callable[
    [str, str, SimBench, float, Callable[[], int]], AbstractAsyncContextManager[EdgeAgentLike]
]


@dataclass
class LabRoom:
    school: str
    room: str
    serials: list[str]
    bench: SimBench
    agent: EdgeAgentLike | None = None


@dataclass
class Labs:
    """The pty-backed lab rooms of one simulation, started and stopped as one."""

    rooms: list[LabRoom] = field(default_factory=list)
    declared: int = 0
    failed: list[str] = field(default_factory=list)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _bridged_at_close: list[str] | None = None

    @property
    def serials(self) -> list[str]:
        return [s for r in self.rooms for s in r.serials]

    async def start(
        self,
        district: Any,
        max_labs: int,
        start_agent: StartAgent | None,
        health_interval_s: float,
        clock_ms: Callable[[], int],
    ) -> None:
        index = 0
        for s in district.schools:
            for r in s.rooms:
                devs = [d for d in r.devices if d.transport == "serial"]
                self.declared += len(devs)
                pty_devs = [d for d in devs if d.kind in PTY_KINDS]
                if not pty_devs or len(self.rooms) >= max_labs or start_agent is None:
                    continue
                bench = SimBench()
                for d in pty_devs:
                    index += 1
                    bench.add(sim_device(d.kind, d.name, index))
                room = LabRoom(s.code, r.name, [d.serial for d in pty_devs], bench)
                self.rooms.append(room)
                try:
                    await self._stack.enter_async_context(bench)
                    room.agent = await self._stack.enter_async_context(
                        start_agent(s.code, r.name, bench, health_interval_s, clock_ms)
                    )
                except Exception as err:  # one lab's broken agent must not stop the district; it is reported
                    logger.exception("lab %s/%s: edge agent did not start", s.code, r.name)
                    self.failed.append(f"{s.code}/{r.name}: {err}")

    def bridged(self) -> list[str]:
        """Identities the agents enrolled and connected (their MQTT usernames); kept from before shutdown."""
        if self._bridged_at_close is not None:
            return self._bridged_at_close
        out: list[str] = []
        for r in self.rooms:
            if r.agent is not None:
                out.extend(
                    str(getattr(link, "identity", hw))
                    for hw, link in r.agent.kits.items()
                    if _connected(link)
                )
        return out

    async def aclose(self) -> None:
        if self._bridged_at_close is None:
            self._bridged_at_close = self.bridged()  # the agents let go of their kits on the way out
        await self._stack.aclose()


def _connected(link: Any) -> bool:
    """Whether the agent's MQTT link for a kit is up (a kit the broker refused is held but not bridged)."""
    client = getattr(link, "client", None)
    is_connected = getattr(client, "is_connected", None)
    return bool(is_connected()) if callable(is_connected) else True
