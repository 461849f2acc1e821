"""Byte links opened from URLs. A link only moves bytes; it knows nothing of frames.

    serial:///dev/ttyUSB0?baud=115200   pyserial, opened off the event loop
    pty:///dev/pts/7                     a pseudo-terminal path, set raw (simulators, tests)
    socket://127.0.0.1:7000              TCP (ser2net, remote benches)
    memory://name                        in-process pair from a MemoryHub (unit tests)

pyserial-asyncio-fast was considered: it wraps pyserial in an asyncio Transport, which suits
protocol callbacks. Our sessions pull bytes with `await link.read()`, the same interface for ptys,
TCP and memory pipes, and a tty fd driven by the loop's reader callbacks is forty lines here; so
pyserial only opens the port (in a worker thread) and the loop drives its file descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Self
from urllib.parse import parse_qs, urlsplit

from drivers.errors import LinkClosed, LinkError

log = logging.getLogger(__name__)

DEFAULT_BAUD = 115200
# One read returns at most this much; large enough for a whole max-size frame in one go.
READ_CHUNK = 4096
# A memory link holds at most this many unread writes before the writer waits (backpressure).
MEMORY_QUEUE_DEPTH = 256


class Link(ABC):
    """A bidirectional byte pipe with one lifetime."""

    url: str

    @abstractmethod
    async def read(self) -> bytes:
        """Return at least one byte; raise LinkClosed when the peer is gone."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Write all of `data`; raise LinkClosed when the peer is gone."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the underlying resource; idempotent."""

    async def set_speed(self, baud: int) -> None:
        """Set the line speed (a UART's baud rate). Links without one (TCP, memory) ignore it."""
        del baud

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class FdLink(Link):
    """A non-blocking file descriptor (tty, pty) driven by the event loop's reader/writer callbacks."""

    def __init__(self, fd: int, url: str, closer: Callable[[], None] | None = None) -> None:
        self.url = url
        self._fd = fd
        self._closer = closer
        self._closed = False
        self.serial_port: object | None = None  # the pyserial object, for modem lines (DTR reset)
        os.set_blocking(fd, False)

    @property
    def fd(self) -> int:
        return self._fd

    async def set_speed(self, baud: int) -> None:
        """Through pyserial on a serial port, else the tty's termios (a pty carries the speed set)."""
        port = self.serial_port
        if port is not None:
            await asyncio.to_thread(setattr, port, "baudrate", baud)
            return
        try:
            set_tty_speed(self._fd, baud)
        except termios.error as err:
            raise LinkError(f"cannot set {self.url} to {baud} baud: {err}") from err

    async def _wait(self, add: str, remove: str) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        getattr(loop, add)(self._fd, ready)
        try:
            await fut
        finally:
            if not self._closed:
                getattr(loop, remove)(self._fd)

    async def read(self) -> bytes:
        ready = False
        while True:
            if self._closed:
                raise LinkClosed(f"{self.url} is closed")
            try:
                data = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                data = None
            except OSError as err:
                # EIO on a tty means the other side (USB adapter, pty master) went away.
                raise LinkClosed(f"{self.url}: {os.strerror(err.errno or errno.EIO)}") from err
            if data:
                return data
            if data == b"" and ready:
                # A tty with VMIN=0 (pyserial, timeout=0) reads b"" when idle, so only an empty
                # read right after the loop said "readable" means the device is gone (as pyserial).
                raise LinkClosed(f"{self.url}: readable but no data (device disconnected)")
            await self._wait("add_reader", "remove_reader")
            ready = True

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise LinkClosed(f"{self.url} is closed")
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                await self._wait("add_writer", "remove_writer")
                continue
            except OSError as err:
                raise LinkClosed(f"{self.url}: {os.strerror(err.errno or errno.EIO)}") from err
            view = view[n:]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fd)
        loop.remove_writer(self._fd)
        if self._closer is not None:
            self._closer()
        else:
            with contextlib.suppress(OSError):
                os.close(self._fd)


class StreamLink(Link):
    """A TCP connection (socket://)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str) -> None:
        self.url = url
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            data = await self._reader.read(READ_CHUNK)
        except (ConnectionError, OSError) as err:
            raise LinkClosed(f"{self.url}: {err}") from err
        if not data:
            raise LinkClosed(f"{self.url}: connection closed")
        return data

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise LinkClosed(f"{self.url} is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as err:
            raise LinkClosed(f"{self.url}: {err}") from err

    async def aclose(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()


_EOF = b""


class MemoryLink(Link):
    """One end of an in-process pipe; see MemoryLink.pair and MemoryHub."""

    def __init__(self, url: str, rx: asyncio.Queue[bytes], tx: asyncio.Queue[bytes]) -> None:
        self.url = url
        self._rx = rx
        self._tx = tx
        self._closed = False
        self._peer_closed = False

    @classmethod
    def pair(cls, name: str = "pair") -> tuple[MemoryLink, MemoryLink]:
        a: asyncio.Queue[bytes] = asyncio.Queue(MEMORY_QUEUE_DEPTH)
        b: asyncio.Queue[bytes] = asyncio.Queue(MEMORY_QUEUE_DEPTH)
        return cls(f"memory://{name}", a, b), cls(f"memory://{name}#device", b, a)

    async def read(self) -> bytes:
        if self._closed or self._peer_closed:
            raise LinkClosed(f"{self.url} is closed")
        data = await self._rx.get()
        if data is _EOF or not data:
            self._peer_closed = True
            raise LinkClosed(f"{self.url}: peer closed")
        return data

    async def write(self, data: bytes) -> None:
        if self._closed or self._peer_closed:
            raise LinkClosed(f"{self.url} is closed")
        if data:
            await self._tx.put(bytes(data))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self._tx.put_nowait(_EOF)
            with contextlib.suppress(asyncio.QueueFull):
                self._rx.put_nowait(_EOF)  # wake our own pending reader


class MemoryHub:
    """Names in-process endpoints so `memory://name` can be opened like any other URL."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Queue[MemoryLink]] = {}

    def listen(self, name: str) -> asyncio.Queue[MemoryLink]:
        """Device side: receive one MemoryLink per host connection to `memory://name`."""
        return self._waiting.setdefault(name, asyncio.Queue())

    def connect(self, name: str) -> MemoryLink:
        if name not in self._waiting:
            raise LinkError(f"nothing listens on memory://{name}")
        host, device = MemoryLink.pair(name)
        self._waiting[name].put_nowait(device)
        return host


def tty_speed_constant(baud: int) -> int:
    """termios' B<baud> constant; LinkError for a speed the platform has none for."""
    value = getattr(termios, f"B{baud}", None)
    if not isinstance(value, int):
        raise LinkError(f"unsupported line speed {baud} baud")
    return value


def set_tty_speed(fd: int, baud: int) -> None:
    """Set a tty's input and output speed, as a host sets a UART's before talking to a board."""
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = tty_speed_constant(baud)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _open_tty_path(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
    except Exception:
        os.close(fd)
        raise
    return fd


async def open_link(url: str, *, memory_hub: MemoryHub | None = None, baud: int | None = None) -> Link:
    """Open a link from its URL; blocking opens run in a worker thread. `baud` is the line speed a
    serial or pty link is set to (a `?baud=` in the URL wins); None keeps the port's default."""
    parts = urlsplit(url)
    scheme = parts.scheme
    query = parse_qs(parts.query)
    if "baud" in query:
        try:
            baud = int(query["baud"][0])
        except ValueError as err:
            raise LinkError(f"baud must be a number in {url}") from err
    try:
        if scheme == "serial":
            return await _open_serial(parts.path, baud or DEFAULT_BAUD, url)
        if scheme == "pty":
            fd = await asyncio.to_thread(_open_tty_path, parts.path)
            link = FdLink(fd, url)
            if baud:
                try:
                    await link.set_speed(baud)
                except LinkError:
                    await link.aclose()
                    raise
            return link
        if scheme == "socket":
            if parts.hostname is None or parts.port is None:
                raise LinkError(f"socket URL needs host and port: {url}")
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            return StreamLink(reader, writer, url)
        if scheme == "memory":
            if memory_hub is None:
                raise LinkError("memory:// needs a MemoryHub")
            return memory_hub.connect(parts.netloc or parts.path.lstrip("/"))
    except OSError as err:
        raise LinkError(f"cannot open {url}: {err}") from err
    raise LinkError(f"unsupported link URL scheme {scheme!r} in {url}")


async def _open_serial(path: str, baud: int, url: str) -> Link:
    import serial  # pyserial; imported lazily so codecs and memory links work without it

    def opener() -> serial.Serial:
        # exclusive=True: two agents writing to one kit interleave frames; fail the second one early.
        return serial.Serial(path, baudrate=baud, timeout=0, exclusive=True)

    try:
        port = await asyncio.to_thread(opener)
    except serial.SerialException as err:
        raise LinkError(f"cannot open {url}: {err}") from err
    link = FdLink(port.fileno(), url, closer=port.close)
    link.serial_port = port
    return link
