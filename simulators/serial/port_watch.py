"""Notice when a host opens a pty's slave end, as a USB-serial chip asserts DTR when its port is opened.

A pseudo-terminal has no modem-control lines, and the simulator keeps the slave open itself (so the master
never sees a hang-up), so an open cannot be seen on the master. Linux's inotify reports every open of the
slave's device node (IN_OPEN), which is exactly the moment pyserial, mpremote or the IDE opens the port.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

_IN_OPEN = 0x00000020
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length (a watched file has no name)
# One read holds many events; opens come one per host connection, so this never fills.
_READ_SIZE = 4096


class OpenWatch:
    """Calls `on_open()` once for every open of the device node at `path` after `start()`."""

    def __init__(self, path: str, on_open: Callable[[], None]) -> None:
        self.path = path
        self.on_open = on_open
        self.opens = 0
        self._fd: int | None = None

    def start(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(fd, os.fsencode(self.path), _IN_OPEN) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"cannot watch {self.path}")
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._ready)

    def _ready(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, name_len = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + name_len
            if mask & _IN_OPEN:
                self.opens += 1
                self.on_open()

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            asyncio.get_running_loop().remove_reader(fd)
        except RuntimeError:
            pass  # the loop is gone: nothing is watching any more
        os.close(fd)
