"""A simulated terminal's firmware-update state machine (protocol section 10).

It downloads over real HTTP with Range requests and resumes where it stopped, verifies sha256 (and the
signature when a key is configured), installs, reboots, and rolls back when the new image fails to boot.
Time comes from the caller (`handle(cmd, now)`, `tick(now)`), so a rollout runs on a fast clock; in fast
mode the HTTP transfer happens at the simulated finish moment, sized by the commanded byte rate. In
streaming mode the transfer runs in real time and every chunk is recorded, for bandwidth measurement.

Uses only the protocol modules (fleet.domain.wire, fleet.domain.update_wire), like any terminal would.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import httpx

from fleet.domain import wire
from fleet.domain.update_wire import Phase, Progress, UpdateArgs, UpdateProgress, parse_update_args

# Without a commanded rate the simulated Wi-Fi moves 2 MB/s (an 802.11n classroom AP shared by a few).
DEFAULT_RATE = 2_000_000
# Installing an image and rebooting takes 4 simulated minutes (a tablet's A/B slot write plus boot).
INSTALL_SECONDS = 240.0


class SimState(StrEnum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    STAGED = "staged"
    INSTALLING = "installing"
    REBOOTING = "rebooting"


@dataclass(slots=True)
class RangeRequest:
    start: int
    status: int
    received: int


@dataclass(slots=True)
class SimTerminal:
    device_id: int
    identity: str
    version: str
    http: httpx.AsyncClient
    # True: the new image fails to boot and the terminal rolls back to its old version.
    fail_boot: bool = False
    signing_key: str = ""
    # Drop the connection after this many bytes of the next download (once), to exercise resume.
    interrupt_after: int | None = None
    install_seconds: float = INSTALL_SECONDS
    streaming: bool = False
    # The terminal's own Wi-Fi speed in bytes/s (None: DEFAULT_RATE); the slower of this and the command's
    # rate sets how long a simulated download takes.
    link_rate: float | None = None

    state: SimState = SimState.IDLE
    partial: bytearray = field(default_factory=bytearray)
    staged: bytes | None = None
    args: UpdateArgs | None = None
    cmd_id: str = ""
    due: datetime | None = None
    due_pause: bool = False
    started_at: datetime | None = None
    previous_version: str | None = None
    requests: list[RangeRequest] = field(default_factory=list)
    # (monotonic seconds, bytes) per chunk received in streaming mode.
    samples: list[tuple[float, int]] = field(default_factory=list)
    timeline: list[tuple[datetime, str]] = field(default_factory=list)
    bytes_received: int = 0

    def _p(
        self,
        now: datetime,
        state: Progress,
        *,
        version: str | None = None,
        offset: int | None = None,
        size: int | None = None,
        reason: str | None = None,
    ) -> UpdateProgress:
        self.timeline.append((now, state.value))
        return UpdateProgress(
            self.cmd_id,
            int(now.timestamp() * 1000),
            state,
            version=version,
            offset=offset,
            size=size,
            reason=reason,
        )

    async def handle(self, cmd: wire.Command, now: datetime) -> list[UpdateProgress]:
        """React to a command on the cmd topic; returns the progress reports sent at once."""
        if cmd.name != wire.CommandName.UPDATE:
            return []
        try:
            args = parse_update_args(cmd.args)
        except ValueError as err:
            self.cmd_id = cmd.id
            return [self._p(now, Progress.REFUSED, reason=str(err)[:200])]
        if now.timestamp() * 1000 > cmd.expires_at_ms:
            self.cmd_id = cmd.id
            return [self._p(now, Progress.REFUSED, reason="expired")]
        if args.phase == Phase.CANCEL:
            if self.state in (SimState.INSTALLING, SimState.REBOOTING):
                return []  # never interrupt an install; its final report follows
            self.cmd_id = cmd.id
            self.partial.clear()
            self.staged = None
            self.state = SimState.IDLE
            self.due = None
            return [self._p(now, Progress.CANCELLED, version=self.version)]
        self.cmd_id = cmd.id
        if args.phase == Phase.DOWNLOAD:
            if self.staged is not None and hashlib.sha256(self.staged).hexdigest() == args.sha256:
                return [self._p(now, Progress.DOWNLOADED, size=len(self.staged))]
            if self.args is None or self.args.sha256 != args.sha256:
                self.partial.clear()  # a different image: nothing to resume
            self.args = args
            self.state = SimState.DOWNLOADING
            offset = len(self.partial)
            self.started_at = now
            if self.streaming:
                return [self._p(now, Progress.DOWNLOADING, offset=offset, size=args.size)]
            rate = self._rate()
            finish = now + timedelta(seconds=(args.size - offset) / rate)
            limit = _ms_to_dt(args.not_after_ms, now)
            if limit is not None and finish > limit:
                self.due, self.due_pause = limit, True
            else:
                self.due, self.due_pause = finish, False
            return [self._p(now, Progress.DOWNLOADING, offset=offset, size=args.size)]
        # install
        if self.staged is None or self.args is None or self.args.sha256 != args.sha256:
            return [self._p(now, Progress.INSTALL_FAILED, reason="no verified image staged")]
        self.state = SimState.INSTALLING
        self.due = now + timedelta(seconds=self.install_seconds / 2)
        return [self._p(now, Progress.INSTALLING, version=args.version)]

    def _rate(self) -> float:
        commanded = (self.args.max_bytes_per_second if self.args else None) or DEFAULT_RATE
        return min(commanded, self.link_rate or DEFAULT_RATE)

    async def tick(self, now: datetime) -> list[UpdateProgress]:
        """Advance the state machine to `now`; returns the reports due."""
        out: list[UpdateProgress] = []
        if self.state == SimState.DOWNLOADING and self.args is not None:
            if self.streaming:
                out.extend(await self._download(now, None))
            elif self.due is not None and now >= self.due:
                rate = self._rate()
                if self.due_pause:
                    # Bytes that fit before the window closed (at least one byte, so progress is real).
                    budget = max(1, int((self.due - (self.started_at or self.due)).total_seconds() * rate))
                    out.extend(await self._download(now, min(self.args.size, len(self.partial) + budget)))
                else:
                    out.extend(await self._download(now, None))
        elif self.state == SimState.INSTALLING and self.due is not None and now >= self.due:
            self.state = SimState.REBOOTING
            self.due = now + timedelta(seconds=self.install_seconds / 2)
            out.append(self._p(now, Progress.REBOOTING))
        elif self.state == SimState.REBOOTING and self.due is not None and now >= self.due:
            assert self.args is not None
            self.state = SimState.IDLE
            self.due = None
            self.staged = None
            if self.fail_boot:
                out.append(
                    self._p(
                        now, Progress.ROLLED_BACK, version=self.version, reason="new image failed to boot"
                    )
                )
            else:
                self.previous_version, self.version = self.version, self.args.version
                out.append(self._p(now, Progress.SUCCEEDED, version=self.version))
        return out

    async def _download(self, now: datetime, upto: int | None) -> list[UpdateProgress]:
        """Fetch bytes [len(partial), upto) with a Range request (to the end when upto is None)."""
        assert self.args is not None and self.args.url is not None
        start = len(self.partial)
        headers = (
            {"Range": f"bytes={start}-" if upto is None else f"bytes={start}-{upto - 1}"}
            if (start or upto is not None)
            else {}
        )
        interrupted = False
        try:
            async with self.http.stream("GET", self.args.url, headers=headers) as resp:
                req = RangeRequest(start, resp.status_code, 0)
                self.requests.append(req)
                if resp.status_code not in (200, 206):
                    self.state = SimState.IDLE
                    return [
                        self._p(
                            now, Progress.DOWNLOAD_FAILED, offset=start, reason=f"HTTP {resp.status_code}"
                        )
                    ]
                if resp.status_code == 200 and start:
                    self.partial.clear()  # the server ignored the range: start over
                async for chunk in resp.aiter_bytes():
                    if (
                        self.interrupt_after is not None
                        and len(self.partial) + len(chunk) > self.interrupt_after
                    ):
                        keep = self.interrupt_after - len(self.partial)
                        self.partial.extend(chunk[:keep])
                        req.received += keep
                        self.interrupt_after = None
                        interrupted = True
                        break
                    self.partial.extend(chunk)
                    req.received += len(chunk)
                    self.bytes_received += len(chunk)
                    if self.streaming:
                        self.samples.append((time.monotonic(), len(chunk)))
        except httpx.HTTPError as err:
            self.state = SimState.IDLE
            return [
                self._p(now, Progress.DOWNLOAD_FAILED, offset=len(self.partial), reason=type(err).__name__)
            ]
        if interrupted:
            self.state = SimState.IDLE
            return [
                self._p(now, Progress.DOWNLOAD_FAILED, offset=len(self.partial), reason="connection lost")
            ]
        if len(self.partial) < self.args.size:
            self.state = SimState.IDLE
            return [self._p(now, Progress.DOWNLOAD_PAUSED, offset=len(self.partial), size=self.args.size)]
        return [self._verify(now)]

    def _verify(self, now: datetime) -> UpdateProgress:
        assert self.args is not None
        data = bytes(self.partial)
        self.partial.clear()
        self.state = SimState.IDLE
        if hashlib.sha256(data).hexdigest() != self.args.sha256:
            return self._p(
                now, Progress.VERIFY_FAILED, reason="sha256 mismatch; image discarded", version=self.version
            )
        if self.signing_key and not _signature_ok(self.args, self.signing_key):
            return self._p(
                now,
                Progress.VERIFY_FAILED,
                reason="unsigned or badly signed image; discarded",
                version=self.version,
            )
        self.staged = data
        self.state = SimState.STAGED
        return self._p(now, Progress.DOWNLOADED, size=len(data))


def _signature_ok(args: UpdateArgs, key: str) -> bool:
    if args.signature_alg != "hmac-sha256" or not args.signature:
        return False
    expected = hmac.new(key.encode(), bytes.fromhex(args.sha256), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, args.signature)


def _ms_to_dt(ms: int | None, like: datetime) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=like.tzinfo)


def boot_failures(device_ids: list[int], rate: float, seed: int = 7) -> set[int]:
    """Which devices fail to boot a bad image at `rate` (deterministic for a seed)."""
    rng = random.Random(seed)
    return {d for d in device_ids if rng.random() < rate}
