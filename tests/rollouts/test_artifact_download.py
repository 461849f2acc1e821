"""Terminal downloads: Range resume without restarting, corrupt and unsigned images refused on the device,
and signed links that only open one image for one device of one school, for a while."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from fleet.domain.update_wire import parse_update_args
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from fleet.services.artifacts import ArtifactStore
from tests.rollouts.harness import NEW, OLD, Lab, lab

EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)
IMAGE_SIZE = 562  # terminal-lt100 1.2.0 in firmware_profiles/artifacts


async def test_interrupted_download_resumes_with_range_and_does_not_restart(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        [dev] = await lb.add_terminals(a, 1, interrupt_after=200)
        r = await lb.create_rollout(groups={"canary_size": 1})
        await lb.run(seconds=20 * 60, step=30)
        sim = lb.sims[dev]
        assert [(q.start, q.status, q.received) for q in sim.requests] == [
            (0, 200, 200),
            (200, 206, IMAGE_SIZE - 200),
        ]
        assert sum(q.received for q in sim.requests) == IMAGE_SIZE  # no byte fetched twice
        row = (await lb.device_rows(r["id"]))[dev]
        assert row.state == "succeeded" and sim.version == NEW
        assert row.attempts == 1  # the interrupted attempt, retried by policy
        events = [e.event for e in await lb.timeline(r["id"]) if e.device_id == dev]
        assert events.index("retry_wait") < events.index("download_resumed") < events.index("succeeded")


async def test_corrupt_artifact_is_refused_and_the_device_stays_on_its_old_version(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        [dev] = await lb.add_terminals(a, 1)
        r = await lb.create_rollout(groups={"canary_size": 1}, max_attempts=2, error_threshold=0.5)
        # Flip one byte of the stored image: the server still serves it, the terminal must catch it.
        path = ArtifactStore(lb.app.state.fleet.settings.rollouts.artifact_dir).path_for(r["artifact_sha256"])
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
        await lb.run(seconds=30 * 60, step=30)
        sim = lb.sims[dev]
        row = (await lb.device_rows(r["id"]))[dev]
        assert row.state == "failed" and row.attempts == 2
        assert "verify_failed" in (row.reason or "") and "sha256" in (row.reason or "")
        assert sim.version == OLD and sim.staged is None and not sim.partial
        assert not any(what in ("installing", "rebooting") for _, what in sim.timeline)
        detail = await lb.get(f"/api/v1/rollouts/{r['id']}")
        assert detail["state"] == "paused"


async def test_signed_images_install_and_unsigned_or_mismatched_are_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING, rollouts={"signing_key": "district-key"}) as lb:
        a = await lb.add_school("S-A")
        [good] = await lb.add_terminals(a, 1, signing_key="district-key")
        [wrong] = await lb.add_terminals(a, 1, signing_key="another-key")
        r = await lb.create_rollout(
            groups={"canary_size": 2}, max_attempts=1, error_threshold=1.0, success_threshold=0.5
        )
        await lb.run(seconds=20 * 60, step=30)
        rows = await lb.device_rows(r["id"])
        assert rows[good].state == "succeeded" and lb.sims[good].version == NEW
        assert rows[wrong].state == "failed" and "badly signed" in (rows[wrong].reason or "")
        assert lb.sims[wrong].version == OLD


async def test_terminal_with_a_key_refuses_an_unsigned_image(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:  # the server signs nothing
        a = await lb.add_school("S-A")
        [dev] = await lb.add_terminals(a, 1, signing_key="district-key")
        r = await lb.create_rollout(groups={"canary_size": 1}, max_attempts=1)
        await lb.run(seconds=10 * 60, step=30)
        row = (await lb.device_rows(r["id"]))[dev]
        assert row.state == "failed" and "unsigned" in (row.reason or "")
        assert lb.sims[dev].version == OLD


async def _first_url(lb: Lab, rollout_id: int) -> str:
    for _ in range(3):
        await lb.engine.step(lb.clock.now())
        for cmds in lb.link.inbox.values():
            for c in cmds:
                args = parse_update_args(c.args)
                if args.url:
                    return args.url
    raise AssertionError("no download command was sent")


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return f"{parts.path}?{urlencode(q)}"


async def test_signed_link_opens_one_image_for_one_device_of_one_school(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        b = await lb.add_school("S-B")
        [dev] = await lb.add_terminals(a, 1)
        r = await lb.create_rollout(groups={"canary_size": 1})
        url = await _first_url(lb, r["id"])
        c = lb.client
        ok = await c.get(url)
        assert ok.status_code == 200 and hashlib.sha256(ok.content).hexdigest() == r["artifact_sha256"]
        assert ok.headers["accept-ranges"] == "bytes" and int(ok.headers["content-length"]) == IMAGE_SIZE
        # No API token needed; none accepted in its place either: the signature is the only key.
        assert (await c.get(_with(url, school=str(b)))).status_code == 401
        assert (await c.get(_with(url, device=str(dev + 1)))).status_code == 401
        assert (await c.get(_with(url, sig="0" * 64))).status_code == 401
        # Ranges: a resume, a suffix, and one past the end.
        part = await c.get(url, headers={"Range": "bytes=500-"})
        assert (
            part.status_code == 206
            and part.headers["content-range"] == f"bytes 500-{IMAGE_SIZE - 1}/{IMAGE_SIZE}"
        )
        assert part.content == ok.content[500:]
        tail = await c.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == ok.content[-10:]
        bad = await c.get(url, headers={"Range": f"bytes={IMAGE_SIZE}-"})
        assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{IMAGE_SIZE}"
        assert (await c.get(url, headers={"Range": "bytes=1-2,5-6"})).status_code == 416
        # The device moves to school B: the link issued for school A no longer opens.
        async with unit_of_work(lb.api.sessions) as s:
            d = await s.get(Device, dev)
            assert d is not None
            d.school_id = b
        assert (await c.get(url)).status_code == 404
        async with unit_of_work(lb.api.sessions) as s:
            d = await s.get(Device, dev)
            assert d is not None
            d.school_id = a
        # Aborted: the device is no longer in a live rollout of this image.
        await c.post(f"/api/v1/rollouts/{r['id']}/abort", headers=await lb.api.admin())
        assert (await c.get(url)).status_code == 404
        # And links expire.
        lb.clock.advance(lb.app.state.fleet.settings.rollouts.url_ttl_seconds + 1)
        assert (await c.get(url)).status_code == 401
