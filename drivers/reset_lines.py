"""Resetting an Arduino-class board into its bootloader from the host, as the Arduino IDE does.

A Uno's USB-serial chip drives DTR# through a capacitor into the ATmega's RESET: asserting DTR (which
Linux does when the port is opened) pulses RESET, and the bootloader runs for about a second before
it hands over to the sketch. Two ways to assert DTR again on an open port:

- the modem-control ioctls (pyserial's `dtr` property): real serial ports;
- a hang-up: set the line speed to B0 (POSIX: drop DTR), then restore it (DTR asserted again). Linux's
  serial core, cdc-acm and the USB-serial drivers all handle B0 this way, and it is the only way on a
  pseudo-terminal, which has no modem-control ioctls (an emulated board watches the pty's termios).
"""

from __future__ import annotations

import asyncio
import errno
import termios
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

ResetLine = Callable[[], Awaitable[None]]
# The auto-reset capacitor needs a clear edge: DTR stays dropped this long.
DTR_LOW_SECONDS = 0.25


class ControlLines(Protocol):
    """The modem-control lines of a serial port (pyserial's `Serial` has them as settable properties)."""

    dtr: bool
    rts: bool

    def fileno(self) -> int: ...


def hang_up(fd: int, low_seconds: float = DTR_LOW_SECONDS) -> None:
    """Drop DTR through B0 and assert it again by restoring the speed (blocking)."""
    attrs = termios.tcgetattr(fd)
    dropped = list(attrs)
    dropped[4] = dropped[5] = termios.B0
    termios.tcsetattr(fd, termios.TCSANOW, dropped)
    try:
        time.sleep(low_seconds)
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


def serial_dtr_reset(port: ControlLines) -> ResetLine:
    """Pulse DTR low, as the Arduino IDE does, to reset the board into its bootloader; a port without
    modem-control ioctls (a pty: ENOTTY/EINVAL) gets the B0 hang-up instead."""

    async def pulse() -> None:
        def toggle() -> None:
            try:
                port.dtr = False
                port.rts = False
            except OSError as err:
                if err.errno not in (errno.ENOTTY, errno.EINVAL):
                    raise
                hang_up(port.fileno())
                return
            time.sleep(DTR_LOW_SECONDS)  # runs in a worker thread
            port.dtr = True
            port.rts = True

        await asyncio.to_thread(toggle)

    return pulse
