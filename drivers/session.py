"""Sessions own time: the reader task, correlation, timeouts, retries and keepalive.

`ArqSession` is the stop-and-wait session of the robot protocol (sequence numbers, ack, retry).
`StreamSession` serves byte-stream protocols without framing of their own (raw REPL, Firmata):
it buffers what the device sends and lets a caller wait for a marker or a byte count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any, Self

from drivers.codecs.robot import MsgType, RobotDecoder, RobotFrame, encode_frame
from drivers.errors import DeviceTimeout, LinkClosed
from drivers.links import Link
from drivers.types import Counters

log = logging.getLogger(__name__)

# A 512-byte frame takes ~45 ms each way at 115200 baud; 0.25 s covers that plus a busy USB hub
# and the device writing a flash page, without making a lost frame cost much.
ACK_TIMEOUT = 0.25
# Floor of the adaptive retransmission timeout: a full-speed USB-serial bridge batches bytes for
# up to 16 ms, and a lab PC busy with 30 kits stalls its event loop for tens of ms; below 50 ms
# spurious resends of long chunks cost more line time than the floor saves (measured).
MIN_RTO = 0.05
# Time one byte takes on the robot's 115200-baud UART (10 bits). The RTO is learnt from frames of
# mixed sizes, so each request's wait adds its own shift time and each sample subtracts it.
BYTE_TIME = 10 / 115200
# Each attempt on a line with 1% byte errors succeeds ~50% of the time for small frames;
# 32 attempts make a spurious failure ~1e-10 per request while a dead device still fails in ~8 s.
MAX_ATTEMPTS = 32
# The byte-stream buffer never grows past this: a device spewing output cannot eat the agent's memory.
MAX_STREAM_BUFFER = 1 << 20


class SessionBase:
    """Owns one link and the named task reading it."""

    def __init__(self, link: Link, *, name: str) -> None:
        self.link = link
        self.name = name
        self._reader: asyncio.Task[None] | None = None
        self.closed_error: LinkClosed | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-reader")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self.link.aclose()

    @property
    def is_open(self) -> bool:
        return self.closed_error is None

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.link.read()
                await self._on_bytes(data)
        except LinkClosed as err:
            log.info("%s: link closed (%s)", self.name, err)
            self.closed_error = err
            self._on_closed(err)

    async def _on_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def _on_closed(self, err: LinkClosed) -> None:
        raise NotImplementedError

    def _raise_if_closed(self) -> None:
        if self.closed_error is not None:
            raise LinkClosed(str(self.closed_error))


class ArqSession(SessionBase):
    """Stop-and-wait ARQ over robot frames: one request in flight, retransmitted until acked."""

    def __init__(
        self,
        link: Link,
        *,
        name: str = "robot",
        ack_timeout: float = ACK_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        keepalive_interval: float | None = None,
        rng: random.Random | None = None,
        journal: list[RobotFrame] | None = None,
    ) -> None:
        super().__init__(link, name=name)
        self.decoder = RobotDecoder()
        self.ack_timeout = ack_timeout
        self.max_attempts = max_attempts
        # Retransmission timeout adapts to the measured round trip (Jacobson/Karels, as TCP), between
        # MIN_RTO and ack_timeout; only first-attempt answers are measured (Karn's rule).
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.rto = ack_timeout
        self._keepalive_interval = keepalive_interval
        self._rng = rng or random.Random()
        # Start at a random sequence number so a device's duplicate cache from an earlier
        # session cannot mistake our first request for a retransmission.
        self._seq = self._rng.randrange(1, 0xFFFF)
        self._pending: dict[int, asyncio.Future[RobotFrame]] = {}
        self._lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._nudge = asyncio.Event()
        self._keepalive: asyncio.Task[None] | None = None
        self._journal = journal
        self.sent = 0
        self.received = 0
        self.retransmits = 0
        self.timeouts = 0
        self.unmatched = 0
        self.alive = True

    async def start(self) -> None:
        await super().start()
        if self._keepalive_interval:
            self._keepalive = asyncio.create_task(self._keepalive_loop(), name=f"{self.name}-keepalive")

    async def aclose(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        await super().aclose()

    def counters(self) -> Counters:
        return Counters(
            self.sent, self.received, self.retransmits, self.timeouts, dict(self.decoder.rejected)
        )

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 is reserved for unsolicited frames
        return self._seq

    async def request(
        self, mtype: int, body: bytes = b"", *, timeout: float | None = None, attempts: int | None = None
    ) -> RobotFrame:
        """Send a request and return its response frame, retransmitting until acked."""
        fixed = timeout is not None
        attempts = self.max_attempts if attempts is None else attempts
        async with self._lock:
            self._raise_if_closed()
            seq = self._next_seq()
            frame = RobotFrame(mtype, seq, body)
            wire = encode_frame(frame)
            fut: asyncio.Future[RobotFrame] = asyncio.get_running_loop().create_future()
            self._pending[seq] = fut  # registered before the first write: a fast reply finds it
            shift = len(wire) * BYTE_TIME
            wait = self.rto + shift if timeout is None else timeout
            try:
                for attempt in range(attempts):
                    self._nudge.clear()
                    if attempt:
                        self.retransmits += 1
                    if self._journal is not None:
                        self._journal.append(frame)
                    loop = asyncio.get_running_loop()
                    sent_at = loop.time()
                    await self._write(wire)
                    nudged = await self._wait(fut, wait)
                    if fut.done():
                        if attempt == 0 and not fut.exception():
                            self._measure(max(0.0, loop.time() - sent_at - shift))
                        return fut.result()
                    if not nudged:
                        self.timeouts += 1
                        if not fixed:  # back off: the device may be busy (flash erase), not deaf
                            wait = min(self.ack_timeout + shift, wait * 2)
                raise DeviceTimeout(
                    f"{self.name}: no answer to {_type_name(mtype)} after {attempts} attempts"
                )
            finally:
                self._pending.pop(seq, None)

    def _measure(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self.rto = min(self.ack_timeout, max(MIN_RTO, self._srtt + 4 * self._rttvar))

    async def _wait(self, fut: asyncio.Future[RobotFrame], timeout: float) -> bool:
        """Wait for the response or a nudge (NAK or corrupt frame); True if nudged."""
        nudge: asyncio.Future[object] = asyncio.ensure_future(self._nudge.wait())
        waiters: set[asyncio.Future[Any]] = {fut, nudge}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nudge.cancel()
        return self._nudge.is_set() and not fut.done()

    async def _write(self, wire: bytes) -> None:
        async with self._write_lock:
            await self.link.write(wire)
        self.sent += 1

    async def _on_bytes(self, data: bytes) -> None:
        before = self.decoder.rejected_total
        frames = self.decoder.feed(data)
        bad = self.decoder.rejected_total - before
        for frame in frames:
            self.received += 1
            if frame.type == MsgType.NAK:
                bad += 1
                continue
            fut = self._pending.get(frame.seq)
            if frame.is_response and fut is not None and not fut.done():
                fut.set_result(frame)
            else:
                self.unmatched += 1  # a late duplicate of an answer we already have
        if bad:
            # The peer saw garbage or we did: resend now instead of waiting out the timeout.
            self._nudge.set()

    def _on_closed(self, err: LinkClosed) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkClosed(str(err)))
        self._nudge.set()

    async def _keepalive_loop(self) -> None:
        assert self._keepalive_interval
        while True:
            await asyncio.sleep(self._keepalive_interval)
            if self._lock.locked():
                continue  # traffic is flowing; no need to ping
            try:
                await self.request(MsgType.PING, attempts=4)
                if not self.alive:
                    log.info("%s: device answers again", self.name)
                self.alive = True
            except DeviceTimeout:
                if self.alive:
                    log.warning("%s: device stopped answering keepalive", self.name)
                self.alive = False
            except LinkClosed:
                self.alive = False
                return


def _type_name(mtype: int) -> str:
    try:
        return MsgType(mtype).name
    except ValueError:
        return hex(mtype)


class StreamSession(SessionBase):
    """Buffers a byte stream and lets one caller at a time wait for markers in it."""

    def __init__(self, link: Link, *, name: str, on_bytes: Callable[[bytes], None] | None = None) -> None:
        super().__init__(link, name=name)
        self._buf = bytearray()
        self._event = asyncio.Event()
        self._tap = on_bytes
        self.lock = asyncio.Lock()
        self.overflowed = 0

    async def _on_bytes(self, data: bytes) -> None:
        if self._tap is not None:
            self._tap(data)
        self._buf += data
        if len(self._buf) > MAX_STREAM_BUFFER:
            self.overflowed += len(self._buf) - MAX_STREAM_BUFFER
            del self._buf[: len(self._buf) - MAX_STREAM_BUFFER]
        self._event.set()

    def _on_closed(self, err: LinkClosed) -> None:
        self._event.set()

    def discard(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def pending(self) -> int:
        return len(self._buf)

    async def write(self, data: bytes) -> None:
        self._raise_if_closed()
        await self.link.write(data)

    async def _wait_more(self, deadline: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        self._raise_if_closed()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise DeviceTimeout(f"{self.name}: timed out waiting for {what}")
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), remaining)
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: timed out waiting for {what}") from None

    async def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Return everything up to and including `marker`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            idx = self._buf.find(marker)
            if idx >= 0:
                end = idx + len(marker)
                out = bytes(self._buf[:end])
                del self._buf[:end]
                return out
            await self._wait_more(deadline, repr(marker))

    async def wait_data(self, timeout: float, what: str) -> None:
        """Wait until some bytes are buffered, without consuming them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._buf:
            await self._wait_more(deadline, what)

    async def read_exact(self, n: int, timeout: float) -> bytes:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self._buf) < n:
            await self._wait_more(deadline, f"{n} bytes")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def wait_for(
        self, predicate: Callable[[bytearray], int], timeout: float, what: str, *, idle: float | None = None
    ) -> bytes:
        """Wait until `predicate(buffer)` returns a positive length; consume and return that prefix.

        With `idle`, a device that sent something and then stayed silent that long is done too: the
        whole buffer is returned (the end marker may have been lost on the line).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            n = predicate(self._buf)
            if n > 0:
                out = bytes(self._buf[:n])
                del self._buf[:n]
                return out
            if idle is not None and self._buf:
                size = len(self._buf)
                try:
                    await self._wait_more(min(deadline, loop.time() + idle), what)
                except DeviceTimeout:
                    if len(self._buf) == size and loop.time() < deadline:
                        return self.discard()
                    raise
                continue
            await self._wait_more(deadline, what)
