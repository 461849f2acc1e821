"""Firmware updates for kits the edge agent bridges: the `update` command (protocol section 10) on a serial
kit.

The rollout engine sends a kit the same `update` command a terminal gets, on the kit's own `cmd` topic. The
agent plays the terminal's part for it: `download` fetches the image from the service's signed link (HTTP
Range, resuming where an interrupted attempt stopped), checks its sha256 (and its signature when the agent
holds the district key) and stages it on the lab PC; `install` flashes the staged image with the kit's
driver family (robot: inactive A/B slot, trial boot, confirm or roll back; MicroPython: files written and
checked by hash, manifest last; Firmata: Intel HEX pages through the STK500 bootloader); `cancel` drops
what was downloaded. Every step is reported on the kit's `update` channel exactly as a terminal reports it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from drivers.codecs.ihex import looks_like_ihex, parse_ihex
from drivers.edge import CommandError, EdgeSupervisor
from drivers.errors import DeviceTimeout, DriverError, FrameError, LinkError
from drivers.provisioning import DEFAULT_ATTEMPTS, FLASH_BUDGET
from drivers.types import Family, FirmwareImage
from drivers.types import Progress as FlashProgress
from fleet.domain import wire
from fleet.domain.update_wire import (
    Phase,
    Progress,
    UpdateArgs,
    UpdateProgress,
    encode_progress,
    parse_update_args,
)
from fleet.runtime.edge_agent import KitLink, announce
from fleet.runtime.supervise import cancel_and_wait

log = logging.getLogger(__name__)

# Kit images are small (an Uno sketch is 32 KiB, a robot slot 1 MiB, a MicroPython bundle a few hundred
# KiB): 8 MiB is generous and keeps a wrong or hostile size from filling the lab PC's memory.
MAX_KIT_IMAGE_BYTES = 8 * 1024 * 1024
# A download stalls out after 60 s without a byte: the service paces downloads to the school's budget but
# never pauses one that long; the engine retries a failed attempt, resuming from the bytes kept.
DOWNLOAD_TIMEOUT = httpx.Timeout(15.0, read=60.0)


@dataclass
class KitUpdate:
    """One kit's update state on the lab PC: a partial download, or a verified staged image."""

    sha256: str = ""
    partial: bytearray = field(default_factory=bytearray)
    staged: bytes | None = None
    download: asyncio.Task[Any] | None = None
    installing: bool = False


def image_for(family: Family, version: str, data: bytes) -> FirmwareImage:
    """The driver's image for a downloaded artifact (raises FrameError for a malformed HEX file)."""
    if family is Family.MICROPYTHON:
        return FirmwareImage.bundle(version, {"main.py": data})
    if family is Family.FIRMATA:
        # The sketch image is flat binary from the HEX records. The driver reads the full version from
        # the sketch name (StandardFirmata-2.5.1.ino) and accepts major.minor from a stock sketch.
        return FirmwareImage.from_bytes(version, parse_ihex(data) if looks_like_ihex(data) else data)
    return FirmwareImage.from_bytes(version, data)


def signature_ok(args: UpdateArgs, key: str) -> bool:
    """HMAC-SHA256 over the image's sha256 with the district key, as the service signs."""
    if args.signature_alg != "hmac-sha256" or not args.signature:
        return False
    expected = hmac.new(key.encode(), bytes.fromhex(args.sha256), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, args.signature)


class KitUpdater:
    """Carries out `update` commands for the agent's kits; one instance per agent."""

    def __init__(
        self,
        downloads: httpx.AsyncClient,
        *,
        clock_ms: Callable[[], int],
        publish: Callable[[KitLink, wire.Uplink], Any],
        signing_key: str = "",
        flash_budget: float = FLASH_BUDGET,
        flash_attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        # A rollout's flash is bounded as a bench provisioning's is: attempts share one budget.
        self.flash_budget = flash_budget
        self.flash_attempts = flash_attempts
        # A client without the agent's API token: download links carry their own signature, and a link
        # from a command must never receive the technician's credentials.
        self.downloads = downloads
        self.clock_ms = clock_ms
        self.publish = publish
        self.signing_key = signing_key
        self.supervisor: EdgeSupervisor | None = None
        self.kits: dict[str, KitUpdate] = {}

    async def handle(self, link: KitLink, cmd: wire.Command) -> None:
        """One `update` command from the kit's cmd topic; every outcome is a progress report, never a
        raise."""
        cid = cmd.id
        try:
            args = parse_update_args(cmd.args)
        except ValueError as err:
            self._report(link, cid, Progress.REFUSED, reason=str(err))
            return
        if cmd.expires_at_ms < self.clock_ms():
            self._report(link, cid, Progress.REFUSED, reason="expired")
            return
        if args.size > MAX_KIT_IMAGE_BYTES:
            self._report(link, cid, Progress.REFUSED, reason=f"image over {MAX_KIT_IMAGE_BYTES} bytes")
            return
        st = self.kits.setdefault(link.hardware_id, KitUpdate())
        try:
            if args.phase == Phase.CANCEL:
                await self._cancel(link, cid, st)
            elif args.phase == Phase.DOWNLOAD:
                await self._download(link, cid, args, st)
            else:
                await self._install(link, cid, args, st)
        except Exception as err:  # a bug here must still answer, or the rollout waits an hour for a stall
            log.exception("%s: update command %s failed", link.hardware_id, cid)
            failed = Progress.INSTALL_FAILED if args.phase == Phase.INSTALL else Progress.DOWNLOAD_FAILED
            self._report(link, cid, failed, reason=f"agent error: {type(err).__name__}")

    # ---- phases ------------------------------------------------------------------------------

    async def _cancel(self, link: KitLink, cid: str, st: KitUpdate) -> None:
        if st.installing:
            return  # never interrupt a flash: its final report follows
        task = st.download
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait([task], log)
        self.kits.pop(link.hardware_id, None)
        self._report(link, cid, Progress.CANCELLED, version=self._version(link))

    async def _download(self, link: KitLink, cid: str, args: UpdateArgs, st: KitUpdate) -> None:
        running = st.download
        if running is not None and running is not asyncio.current_task():
            # A newer command (the engine retried a stalled attempt) supersedes the old transfer; two writers
            # into one partial image would only produce a hash mismatch.
            await cancel_and_wait([running], log)
        if st.staged is not None and st.sha256 == args.sha256:
            self._report(link, cid, Progress.DOWNLOADED, size=len(st.staged))
            return
        if st.sha256 != args.sha256:
            st.sha256, st.staged = args.sha256, None
            st.partial.clear()  # another image: nothing to resume
        if args.not_after_ms is not None and self.clock_ms() >= args.not_after_ms:
            self._report(link, cid, Progress.DOWNLOAD_PAUSED, offset=len(st.partial), size=args.size)
            return
        st.download = asyncio.current_task()
        try:
            await self._fetch(link, cid, args, st)
        finally:
            st.download = None

    async def _fetch(self, link: KitLink, cid: str, args: UpdateArgs, st: KitUpdate) -> None:
        assert args.url is not None
        start = len(st.partial)
        self._report(link, cid, Progress.DOWNLOADING, offset=start, size=args.size)
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            async with self.downloads.stream(
                "GET", args.url, headers=headers, timeout=DOWNLOAD_TIMEOUT
            ) as resp:
                if resp.status_code not in (200, 206):
                    self._report(
                        link, cid, Progress.DOWNLOAD_FAILED, offset=start, reason=f"HTTP {resp.status_code}"
                    )
                    return
                if resp.status_code == 200 and start:
                    st.partial.clear()  # the server ignored the range: start over
                async for chunk in resp.aiter_bytes():
                    if len(st.partial) + len(chunk) > max(args.size, 1):
                        st.partial.clear()
                        self._report(
                            link,
                            cid,
                            Progress.VERIFY_FAILED,
                            version=self._version(link),
                            reason=f"more than the announced {args.size} bytes; image discarded",
                        )
                        return
                    st.partial.extend(chunk)
        except httpx.HTTPError as err:
            # Partial bytes are kept: the next download command resumes from them with a Range request.
            log.info("%s: download interrupted at byte %d: %s", link.hardware_id, len(st.partial), err)
            self._report(
                link,
                cid,
                Progress.DOWNLOAD_FAILED,
                offset=len(st.partial),
                reason=f"{type(err).__name__} at byte {len(st.partial)}",
            )
            return
        if len(st.partial) < args.size:
            self._report(
                link,
                cid,
                Progress.DOWNLOAD_FAILED,
                offset=len(st.partial),
                reason=f"connection closed at byte {len(st.partial)} of {args.size}",
            )
            return
        data = bytes(st.partial)
        st.partial.clear()
        if hashlib.sha256(data).hexdigest() != args.sha256:
            self._report(
                link,
                cid,
                Progress.VERIFY_FAILED,
                version=self._version(link),
                reason="sha256 mismatch; image discarded",
            )
            return
        if self.signing_key and not signature_ok(args, self.signing_key):
            self._report(
                link,
                cid,
                Progress.VERIFY_FAILED,
                version=self._version(link),
                reason="unsigned or badly signed image; discarded",
            )
            return
        st.staged = data
        log.info("%s: %s staged (%d bytes, sha256 verified)", link.hardware_id, args.version, len(data))
        self._report(link, cid, Progress.DOWNLOADED, size=len(data))

    async def _install(self, link: KitLink, cid: str, args: UpdateArgs, st: KitUpdate) -> None:
        if st.staged is None or st.sha256 != args.sha256:
            self._report(link, cid, Progress.INSTALL_FAILED, reason="no verified image staged")
            return
        if args.not_after_ms is not None and self.clock_ms() >= args.not_after_ms:
            self._report(
                link, cid, Progress.INSTALL_FAILED, reason="install window closed before the flash began"
            )
            return
        held = self.supervisor.devices.get(link.hardware_id) if self.supervisor else None
        if held is None or self.supervisor is None:
            self._report(link, cid, Progress.INSTALL_FAILED, reason="kit not attached to the agent")
            return
        try:
            image = image_for(held.attached.family, args.version, st.staged)
        except FrameError as err:
            self.kits.pop(link.hardware_id, None)
            self._report(link, cid, Progress.INSTALL_FAILED, reason=f"not a flashable image: {err}")
            return
        booting = False

        def on_progress(p: FlashProgress) -> None:
            nonlocal booting
            if p.phase == "boot" and not booting:
                booting = True
                self._report(link, cid, Progress.REBOOTING)

        async def images(_version: str) -> FirmwareImage:
            return image

        self._report(link, cid, Progress.INSTALLING, version=args.version)
        st.installing = True
        loop = asyncio.get_running_loop()
        end = loop.time() + self.flash_budget
        failures: list[str] = []  # every attempt's failure: the final reason names them all
        out: dict[str, Any] | None = None
        try:
            for attempt in range(1, self.flash_attempts + 1):
                remaining = end - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        out = await self.supervisor.command(
                            link.hardware_id,
                            "flash",
                            {"version": args.version},
                            images=images,
                            progress=on_progress,
                        )
                    break
                except TimeoutError:
                    failures.append(f"attempt {attempt}: no progress within {self.flash_budget:g} s")
                    break
                except (LinkError, DeviceTimeout) as err:  # a lost or silent line: try again
                    failures.append(f"attempt {attempt}: {type(err).__name__}: {err}")
                except (CommandError, DriverError) as err:
                    failures.append(f"attempt {attempt}: {type(err).__name__}: {err}")
                    break
        finally:
            st.installing = False
        if out is None:
            # Nothing confirmed: a robot still runs its old slot, a half-written sketch is repaired on retry.
            self._report(
                link,
                cid,
                Progress.INSTALL_FAILED,
                version=self._version(link),
                reason="; ".join(failures) or "flash not attempted",
            )
            return
        before, after, reason = (
            str(out.get("before", "")),
            str(out.get("after", "")),
            str(out.get("reason", "")),
        )
        if failures and not out.get("ok"):
            reason = "; ".join([*failures, f"attempt {len(failures) + 1}: {reason or 'flash failed'}"])
        self.kits.pop(link.hardware_id, None)
        if out.get("ok"):
            log.info("%s: flashed %s -> %s", link.hardware_id, before, args.version)
            self._report(link, cid, Progress.SUCCEEDED, version=args.version)
            self._announce(link, args.version)
        elif booting and after == before:
            log.warning("%s: %s rolled back to %s: %s", link.hardware_id, args.version, before, reason)
            self._report(
                link, cid, Progress.ROLLED_BACK, version=before, reason=reason or "new image failed to boot"
            )
            self._announce(link, before)
        else:
            self._report(
                link, cid, Progress.INSTALL_FAILED, version=after or None, reason=reason or "flash failed"
            )

    # ---- reports -----------------------------------------------------------------------------

    def _version(self, link: KitLink) -> str | None:
        held = self.supervisor.devices.get(link.hardware_id) if self.supervisor else None
        return held.identity.firmware_version[:64] if held else None

    def _announce(self, link: KitLink, version: str) -> None:
        """The kit rebooted on `version`: say so like a booting terminal (boot event, telemetry with fw)."""
        announce(link, self.publish, self.clock_ms(), version)

    def _report(self, link: KitLink, cid: str, state: Progress, **kw: Any) -> None:
        p = UpdateProgress(cid, self.clock_ms(), state, **kw)
        if p.reason is not None:
            p = UpdateProgress(p.id, p.ts_ms, p.state, p.version, p.offset, p.size, p.reason[:200])
        link.client.publish(link.topics["update"], encode_progress(p), qos=1)

    async def aclose(self) -> None:
        await cancel_and_wait([st.download for st in self.kits.values()], log)
        self.kits.clear()
