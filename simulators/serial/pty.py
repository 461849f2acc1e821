"""Run simulated devices on real pseudo-terminals, with unplug and replug."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import termios
import tty

from drivers.errors import LinkClosed
from drivers.links import FdLink, Link
from fleet.runtime.supervise import cancel_and_wait
from simulators.serial.base import SimDevice
from simulators.serial.faults import FaultPlan, FaultyLink
from simulators.serial.port_watch import OpenWatch

log = logging.getLogger(__name__)


class PtyPort:
    """One pty pair: the simulator drives the master, a driver opens `path` (the slave)."""

    def __init__(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self.path = os.ttyname(slave)
        self._master = master
        # We keep a slave fd open ourselves: otherwise the master sees a hang-up every time
        # the driver closes its port, which a real USB adapter never shows.
        self._keep = slave
        self.closed = False

    def line_speed(self) -> int | None:
        """The speed the host set on its end (master and slave share one termios), in baud; None when
        unplugged. A pty carries no bits at a rate, so a simulated UART checks this instead."""
        if self.closed:
            return None
        try:
            code = termios.tcgetattr(self._master)[5]
        except termios.error:
            return None
        return _SPEEDS.get(code)

    def master_link(self) -> FdLink:
        return FdLink(self._master, f"pty-master://{self.path}", closer=self.close)

    def close(self) -> None:
        """Pull the cable: the driver's next read or write fails with EIO."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._master)
            asyncio.get_running_loop().remove_writer(self._master)
        for fd in (self._master, self._keep):
            with contextlib.suppress(OSError):
                os.close(fd)


class SimRunner:
    """Owns one simulated device and the pty it is plugged into (if any)."""

    def __init__(self, device: SimDevice, *, faults: FaultPlan | None = None, name: str = "sim") -> None:
        self.device = device
        self.faults = faults
        self.name = name
        self.port: PtyPort | None = None
        self.link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: OpenWatch | None = None
        self.plug_count = 0

    @property
    def path(self) -> str:
        if self.port is None or self.port.closed:
            raise RuntimeError(f"{self.name} is unplugged")
        return self.port.path

    @property
    def url(self) -> str:
        return f"pty://{self.path}"

    @property
    def plugged(self) -> bool:
        return self.port is not None and not self.port.closed

    async def plug(self) -> str:
        """Plug into a fresh pty (a new /dev path, as after a real replug); return the path."""
        await self.unplug()
        port = PtyPort()
        link: Link = port.master_link()
        if self.faults is not None:
            link = FaultyLink(
                link, self.faults, on_unplug=port.close, rng=_rng_for(self.faults, self.plug_count)
            )
        self.port = port
        self.link = link
        self.plug_count += 1
        if hasattr(self.device, "line_speed"):
            self.device.line_speed = port.line_speed
        self._task = asyncio.create_task(self._serve(link), name=f"{self.name}-serve")
        on_open = getattr(self.device, "port_opened", None)
        if on_open is not None and getattr(self.device, "auto_reset_on_open", False):
            # A Uno's USB-serial chip asserts DTR when the host opens the port, which resets the chip.
            self._watch = OpenWatch(port.path, on_open)
            self._watch.start()
        return port.path

    async def _serve(self, link: Link) -> None:
        try:
            await self.device.serve(link)
        except LinkClosed:
            pass
        except Exception:
            log.exception("%s: simulator crashed", self.name)
            raise

    async def pulse_reset(self) -> None:
        """The DTR line: a pty has no modem lines, so the test bench wires the reset directly."""
        reset = getattr(self.device, "hardware_reset", None)
        if reset is not None:
            reset()

    async def unplug(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.port is not None:
            self.port.close()
        # A serving task that had failed is logged: the port is unplugged either way.
        await cancel_and_wait([self._task], log)
        self._task = None
        self.port = None
        self.link = None

    async def aclose(self) -> None:
        await self.unplug()


# termios speed constants back to baud (B0, the hang-up, maps to 0).
_SPEEDS = {
    getattr(termios, name): int(name[1:])
    for name in dir(termios)
    if name[:1] == "B" and name[1:].isdigit() and isinstance(getattr(termios, name), int)
}


def _rng_for(plan: FaultPlan, plug_count: int) -> random.Random:
    return random.Random(plan.seed * 1000 + plug_count)
