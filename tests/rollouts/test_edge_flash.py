"""The edge agent's update handler on its own: Intel HEX decoding, and a Firmata kit flashed through the
STK500 bootloader on a real pty from an image fetched with Range and checked by sha256 (the robot and
MicroPython paths run end to end through the agent in test_rollout_edge.py)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.codecs.ihex import looks_like_ihex, parse_ihex
from drivers.discovery import PortInfo, PortWatcher
from drivers.edge import EdgeSupervisor
from drivers.errors import FrameError
from drivers.types import DeviceIdentity, Health
from fleet.domain import wire
from fleet.domain.update_wire import Phase, Progress, UpdateArgs, decode_progress, update_args
from fleet.runtime.edge_agent import KitLink
from fleet.runtime.edge_flash import KitUpdater
from simulators.serial.bench import SimBench
from simulators.serial.faults import FaultPlan
from simulators.serial.firmata import FirmataSim, sketch_image

NOW_MS = 1_788_800_000_000  # 2026-09-07, inside the protocol's timestamp range
URL = "http://fleet.test/api/v1/artifacts/x/download?sig=abc"


def to_ihex(data: bytes, *, width: int = 16) -> bytes:
    """Intel HEX records for `data` from address 0, as avr-objcopy writes them."""
    lines = []
    for addr in range(0, len(data), width):
        chunk = data[addr : addr + width]
        rec = bytes([len(chunk)]) + addr.to_bytes(2, "big") + b"\x00" + chunk
        lines.append(b":" + (rec + bytes([-sum(rec) & 0xFF])).hex().upper().encode())
    lines.append(b":00000001FF")
    return b"\n".join(lines) + b"\n"


def rec(
    addr: int, kind: int, payload: bytes = b"", *, checksum_delta: int = 0, count: int | None = None
) -> bytes:
    """One Intel HEX record line (with a wrong checksum or length when asked)."""
    body = (
        bytes([len(payload) if count is None else count]) + addr.to_bytes(2, "big") + bytes([kind]) + payload
    )
    return b":" + (body + bytes([(-sum(body) + checksum_delta) & 0xFF])).hex().upper().encode() + b"\n"


EOF_REC = rec(0, 1)


def test_ihex_round_trips_a_sketch_and_fills_gaps_with_erased_flash() -> None:
    image = sketch_image("StandardFirmata.ino", 2, 6, size=3000)
    assert looks_like_ihex(to_ihex(image)) and not looks_like_ihex(image)
    assert parse_ihex(to_ihex(image)) == image
    # A record at 0x20 after one at 0x00 leaves 0x02..0x1f erased (0xFF).
    sparse = rec(0, 0, b"\xaa\xbb") + rec(0x20, 0, b"\xcc\xdd") + EOF_REC
    assert parse_ihex(sparse) == b"\xaa\xbb" + b"\xff" * 30 + b"\xcc\xdd"
    # An extended linear address record of 0 keeps the base; start records are ignored.
    assert (
        parse_ihex(rec(0, 4, b"\x00\x00") + rec(0, 0, b"\x42") + rec(0, 5, b"\x00\x00\x00\x00") + EOF_REC)
        == b"\x42"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (rec(0, 0, b"\x42", checksum_delta=1) + EOF_REC, "ihex_checksum"),
        (rec(0, 0, b"\x42"), "ihex_truncated"),
        (rec(0, 0, b"\x42")[1:] + EOF_REC, "ihex_syntax"),
        (b":01000000ZZBD\n" + EOF_REC, "ihex_syntax"),
        (rec(0, 0, b"\x42", count=2) + EOF_REC, "ihex_length"),
        (rec(0, 4, b"\x01\x00") + rec(0, 0, b"\x42") + EOF_REC, "ihex_too_large"),  # a byte at 16 MiB
        (EOF_REC + rec(0, 0, b"\x42"), "ihex_after_eof"),
        (rec(0, 7, b"\x42") + EOF_REC, "ihex_record"),
    ],
)
def test_ihex_refuses_broken_files_with_a_reason(text: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        parse_ihex(text)
    assert err.value.reason == reason


@dataclass
class PahoStub:
    """Stands in for paho's client (third-party): records what the agent publishes on the kit's topics."""

    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload if isinstance(payload, bytes) else payload.encode()))

    def reports(self) -> list[Any]:
        out = [decode_progress(p) for t, p in self.published if t == "update"]
        self.published.clear()
        return out


@dataclass
class Events:
    """The supervisor's owner (the agent in production): records presence."""

    online_ids: list[str] = field(default_factory=list)

    async def online(self, port: PortInfo, identity: DeviceIdentity) -> None:
        self.online_ids.append(identity.hardware_id)

    async def offline(self, hardware_id: str, reason: str) -> None:
        return None

    async def health(self, hardware_id: str, health: Health) -> None:
        return None


def artifact_server(data: bytes, requests: list[str | None]) -> httpx.MockTransport:
    """The network between the lab PC and the service (third-party boundary): serves `data` with Range."""

    def handler(request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("range")
        requests.append(rng)
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            return httpx.Response(
                206,
                content=data[start:],
                headers={"content-range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
        return httpx.Response(200, content=data)

    return httpx.MockTransport(handler)


def command(phase: Phase, data: bytes, version: str, cid: str) -> wire.Command:
    args = UpdateArgs(
        phase, version, hashlib.sha256(data).hexdigest(), len(data), URL if phase == Phase.DOWNLOAD else None
    )
    cmd = wire.decode_downlink(
        wire.encode_command(
            wire.Command(cid, wire.CommandName.UPDATE, NOW_MS, NOW_MS + 60_000, update_args(args))
        )
    )
    assert isinstance(cmd, wire.Command)
    return cmd


SHIPPED_HEX = (
    Path(__file__).resolve().parents[2] / "firmware_profiles" / "artifacts" / "kit-uno-firmata-2.5.1.hex"
)


@pytest.mark.parametrize(
    ("hex_file", "version", "reported"),
    [
        (
            to_ihex(sketch_image("StandardFirmata.ino", 2, 6, size=4_000)),
            "2.6.0",
            (2, 6),
        ),  # stock name: major.minor
        (SHIPPED_HEX.read_bytes(), "2.5.1", (2, 5)),  # the demo profile's artifact, x.y.z in the sketch name
    ],
    ids=["stock-sketch", "shipped-2.5.1"],
)
async def test_firmata_kit_is_flashed_from_an_intel_hex_artifact_through_stk500(
    hex_file: bytes, version: str, reported: tuple[int, int]
) -> None:
    requests: list[str | None] = []
    uno = FirmataSim(usb_serial="UNO-1")
    async with SimBench() as bench, httpx.AsyncClient(transport=artifact_server(hex_file, requests)) as http:
        bench.add(uno)
        await bench.start()
        events = Events()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), events, reset_for=bench.reset_for)
        paho = PahoStub()
        updater = KitUpdater(http, clock_ms=lambda: NOW_MS, publish=lambda *a, **k: None)
        updater.supervisor = supervisor
        try:
            await supervisor.poll_once()
            [hw] = events.online_ids
            link = KitLink(hw, "uno-1", 1, {"update": "update"}, paho)
            await updater.handle(link, command(Phase.DOWNLOAD, hex_file, version, "c-download"))
            assert [(p.id, p.state) for p in paho.reports()] == [
                ("c-download", Progress.DOWNLOADING),
                ("c-download", Progress.DOWNLOADED),
            ]
            await updater.handle(link, command(Phase.INSTALL, hex_file, version, "c-install"))
            reports = paho.reports()
            assert [p.state for p in reports] == [
                Progress.INSTALLING,
                Progress.REBOOTING,
                Progress.SUCCEEDED,
            ], reports
            assert reports[-1].version == version
        finally:
            await updater.aclose()
            await supervisor.aclose()
    assert uno.version == reported and uno.resets >= 1
    assert requests == [None]


async def test_interrupted_kit_download_resumes_with_range_and_a_corrupt_one_is_discarded() -> None:
    good = b"LABFLEET-FW 1\nmodel=robot\nversion=9.9.9\n\n" + bytes(range(256)) * 4
    requests: list[str | None] = []
    served = bytearray(good)

    def handler(request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("range")
        requests.append(rng)
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            return httpx.Response(206, content=bytes(served[start:]))
        if len(requests) == 1:  # the first attempt is cut off after 300 bytes
            return httpx.Response(200, stream=_cut(bytes(served), 300))
        return httpx.Response(200, content=bytes(served))

    paho = PahoStub()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        updater = KitUpdater(http, clock_ms=lambda: NOW_MS, publish=lambda *a, **k: None)
        link = KitLink("robot-1", "robot-1", 1, {"update": "update"}, paho)
        await updater.handle(link, command(Phase.DOWNLOAD, good, "9.9.9", "c1"))
        first = paho.reports()
        assert [p.state for p in first] == [Progress.DOWNLOADING, Progress.DOWNLOAD_FAILED]
        assert first[-1].offset == 300
        await updater.handle(link, command(Phase.DOWNLOAD, good, "9.9.9", "c2"))
        second = paho.reports()
        assert [(p.state, p.offset) for p in second] == [
            (Progress.DOWNLOADING, 300),
            (Progress.DOWNLOADED, None),
        ]
        assert requests == [None, "bytes=300-"]
        assert updater.kits["robot-1"].staged == good

        # Another image whose bytes are damaged on the way: refused, nothing staged.
        bad = good.replace(b"9.9.9", b"9.9.8")
        served[:] = bad
        served[50] ^= 0xFF
        await updater.handle(link, command(Phase.DOWNLOAD, bad, "9.9.8", "c3"))
        third = paho.reports()
        assert [p.state for p in third] == [Progress.DOWNLOADING, Progress.VERIFY_FAILED]
        assert "sha256" in (third[-1].reason or "")
        assert updater.kits["robot-1"].staged is None
        # And installing without a verified image is refused before anything touches the kit.
        await updater.handle(link, command(Phase.INSTALL, bad, "9.9.8", "c4"))
        assert [(p.state, p.reason) for p in paho.reports()] == [
            (Progress.INSTALL_FAILED, "no verified image staged")
        ]


class _cut(httpx.AsyncByteStream):
    """A response body that breaks after `n` bytes, as a dropped Wi-Fi link does."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n = data, n

    async def __aiter__(self):
        yield self.data[: self.n]
        raise httpx.ReadError("connection reset")


async def test_agent_holding_the_district_key_refuses_unsigned_and_badly_signed_kit_images() -> None:
    import hmac

    image = b"LABFLEET-FW 1\nmodel=robot\nversion=9.9.9\n\n" + bytes(200)
    sha = hashlib.sha256(image).hexdigest()
    requests: list[str | None] = []
    paho = PahoStub()
    async with httpx.AsyncClient(transport=artifact_server(image, requests)) as http:
        updater = KitUpdater(
            http, clock_ms=lambda: NOW_MS, publish=lambda *a, **k: None, signing_key="district"
        )
        link = KitLink("robot-1", "robot-1", 1, {"update": "update"}, paho)

        async def download(cid: str, signature: str | None) -> Any:
            args = UpdateArgs(
                Phase.DOWNLOAD,
                "9.9.9",
                sha,
                len(image),
                URL,
                signature,
                "hmac-sha256" if signature else "none",
            )
            body = wire.decode_downlink(
                wire.encode_command(
                    wire.Command(cid, wire.CommandName.UPDATE, NOW_MS, NOW_MS + 60_000, update_args(args))
                )
            )
            assert isinstance(body, wire.Command)
            await updater.handle(link, body)
            return paho.reports()[-1]

        unsigned = await download("u1", None)
        assert unsigned.state == Progress.VERIFY_FAILED and "unsigned" in (unsigned.reason or "")
        wrong = hmac.new(b"another key", bytes.fromhex(sha), hashlib.sha256).hexdigest()
        assert (await download("u2", wrong)).state == Progress.VERIFY_FAILED
        right = hmac.new(b"district", bytes.fromhex(sha), hashlib.sha256).hexdigest()
        assert (await download("u3", right)).state == Progress.DOWNLOADED


async def test_a_rollout_flash_on_a_stalled_line_gives_up_within_its_budget_naming_the_attempt() -> None:
    """The 90 s stalled-flash bound of provisioning holds for a rollout's flash too (budget injected)."""
    hex_file = to_ihex(sketch_image("StandardFirmata.ino", 2, 6, size=4_000))
    uno = FirmataSim(usb_serial="UNO-STALL")
    plan = FaultPlan()
    async with SimBench() as bench, httpx.AsyncClient(transport=artifact_server(hex_file, [])) as http:
        bench.add(uno, faults=plan)
        await bench.start()
        events = Events()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), events, reset_for=bench.reset_for)
        paho = PahoStub()
        updater = KitUpdater(http, clock_ms=lambda: NOW_MS, publish=lambda *a, **k: None, flash_budget=1.5)
        updater.supervisor = supervisor
        try:
            await supervisor.poll_once()
            [hw] = events.online_ids
            link = KitLink(hw, "uno-1", 1, {"update": "update"}, paho)
            await updater.handle(link, command(Phase.DOWNLOAD, hex_file, "2.6.0", "c-download"))
            plan.drop_rate = 1.0  # the line stalls: nothing crosses it any more
            loop = asyncio.get_running_loop()
            started = loop.time()
            await updater.handle(link, command(Phase.INSTALL, hex_file, "2.6.0", "c-install"))
            took = loop.time() - started
        finally:
            await updater.aclose()
            await supervisor.aclose()
    final = paho.reports()[-1]
    assert final.state == Progress.INSTALL_FAILED
    assert final.reason == "attempt 1: no progress within 1.5 s", final.reason
    assert 1.4 < took < 5.0
