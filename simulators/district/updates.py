"""Firmware updates for the district's terminals: the `update` command (protocol section 10) on the simulated
clock.

Each terminal that receives an `update` gets the update state machine of simulators/terminal/update.py
(download over HTTP with Range resume, sha256 check, install, reboot, roll back when the image does not boot);
one task advances every active machine to the simulated now and publishes its progress on the terminal's
`update` channel. A terminal that boots the new image reports the version in its telemetry from then on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import httpx

from fleet.domain import wire  # protocol modules only, as simulators/terminal/update.py
from fleet.domain.update_wire import Progress, UpdateProgress, encode_progress
from fleet.runtime.supervise import TaskOwner
from simulators.district.clock import SimClock
from simulators.district.stats import Stats
from simulators.district.terminal import Terminal
from simulators.terminal.update import SimState, SimTerminal

logger = logging.getLogger(__name__)


class UpdatesHost(Protocol):
    """What the update ticker reads on the simulation (engine.Simulation is the one host)."""

    clock: SimClock
    stats: Stats
    by_serial: dict[str, Terminal]
    frozen: bool


# Active updates advance this often (real seconds): at x60 that is every 15 simulated seconds, fine-grained
# against a 4-minute install and a download sized by its commanded rate.
TICK_S = 0.25
# One image download must not hang the ticker; images are small and the service is on loopback.
HTTP_TIMEOUT_S = 30.0
# A terminal is offline this long (simulated seconds) while it reboots into a new image.
REBOOT_DARK_S = 30.0


class Updates:
    """Owns one state machine per updating terminal, the shared HTTP client, and the ticker task."""

    def __init__(self, sim: UpdatesHost) -> None:
        self.sim = sim
        self.machines: dict[str, SimTerminal] = {}
        self.http: httpx.AsyncClient | None = None
        self.fail_boot: set[str] = set()  # serials whose next image will not boot (bad-firmware)
        self.reports: dict[str, int] = {}  # progress state -> reports sent, for the load report
        self._tasks = TaskOwner(logger)

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        return self.http

    def machine(self, t: Terminal) -> SimTerminal:
        m = self.machines.get(t.serial)
        if m is None:
            m = self.machines[t.serial] = SimTerminal(
                0, t.serial, t.firmware, self._client(), fail_boot=t.serial in self.fail_boot
            )
        return m

    def command(self, t: Terminal, cmd: wire.Command) -> None:
        """An `update` command arrived on the terminal's cmd topic (called from its socket callback)."""
        self._tasks.spawn(self._handle(t, cmd), f"sim-update-{t.serial}")

    async def _handle(self, t: Terminal, cmd: wire.Command) -> None:
        m = self.machine(t)
        m.version = t.firmware  # what runs now (a bad-firmware boot may have changed it)
        for p in await m.handle(cmd, self.sim.clock.now()):
            self._report(t, p)

    async def run(self) -> None:
        """Advance every active machine to the simulated now, report, and apply reboots and new versions."""
        while True:
            await asyncio.sleep(TICK_S)
            if self.sim.frozen:
                continue
            now = self.sim.clock.now()
            for serial, m in list(self.machines.items()):
                if m.state in (SimState.IDLE, SimState.STAGED):
                    continue
                t = self.sim.by_serial[serial]
                try:
                    reports = await m.tick(now)
                except Exception:  # one terminal's broken update must not stop the others'
                    logger.exception("update of %s failed", serial)
                    continue
                for p in reports:
                    self._report(t, p)

    def _report(self, t: Terminal, p: UpdateProgress) -> None:
        self.reports[p.state.value] = self.reports.get(p.state.value, 0) + 1
        t.publish_update(encode_progress(p))
        if p.state == Progress.REBOOTING:
            t.reboot_soon(REBOOT_DARK_S)
        elif p.state == Progress.SUCCEEDED and p.version:
            t.firmware = p.version
            self.sim.stats.mark_once(f"update: first terminal runs {p.version}")
        elif p.state == Progress.ROLLED_BACK:
            self.sim.stats.mark_once("update: first terminal rolled back")

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self.http is not None:
            await self.http.aclose()
