"""Bandwidth: with a school cap of 20 Mbit/s, real HTTP downloads from a real uvicorn server on loopback never
exceed the cap by more than 10% over any 10 s window, and the rollout still completes."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn

from fleet.domain.permissions import SYSTEM
from fleet.domain.update_wire import UpdateProgress
from fleet.persistence.db import unit_of_work
from fleet.services import artifacts
from simulators.terminal.update import SimState
from tests.rollouts.harness import NEW, Lab, lab

EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)
CAP_BYTES_PER_SECOND = 20_000_000 // 8  # 20 Mbit/s
# 10 terminals x 3 MB = 30 MB: 12 s at the cap, so several full 10 s windows are measured.
TERMINALS = 10
IMAGE_BYTES = 3_000_000
MAX_CONCURRENT = 4
WINDOW_S = 10.0


@asynccontextmanager
async def served(app: object) -> AsyncIterator[str]:
    """The app behind a real uvicorn server on a free loopback port (the lifespan is already running)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn-bandwidth-test")
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def max_window_rate(samples: list[tuple[float, int]], window: float) -> float:
    """The highest byte rate over any `window` seconds starting at a sample."""
    samples = sorted(samples)
    best = 0.0
    j = 0
    total = 0
    for i, (t0, _) in enumerate(samples):
        while j < len(samples) and samples[j][0] < t0 + window:
            total += samples[j][1]
            j += 1
        best = max(best, total / window)
        total -= samples[i][1]
    return best


async def _add_big_image(lb: Lab) -> str:
    store = artifacts.ArtifactStore(lb.app.state.fleet.settings.rollouts.artifact_dir)
    sha, size = store.put_bytes(os.urandom(IMAGE_BYTES))
    async with unit_of_work(lb.api.sessions) as s:
        await artifacts.register(
            s,
            SYSTEM,
            lb.clock.now(),
            sha256=sha,
            size=size,
            profile_key="terminal-lt100",
            version=NEW,
            filename="terminal-lt100-1.2.0-big.img",
        )
    return sha


async def test_school_cap_of_20_mbit_holds_over_every_10s_window_and_rollout_completes(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING, import_profiles=False) as lb:
        await _add_big_image(lb)
        school = await lb.add_school("S-A", uplink_mbps=1000)
        r = await lb.client.put(
            f"/api/v1/schools/{school}/update-policy",
            headers=await lb.api.admin(),
            json={"max_concurrent_downloads": MAX_CONCURRENT, "max_bytes_per_second": CAP_BYTES_PER_SECOND},
        )
        assert r.status_code == 200
        async with served(lb.app) as base, httpx.AsyncClient(timeout=60) as http:
            lb.engine.base_url = base
            await lb.add_terminals(school, TERMINALS, streaming=True)
            for sim in lb.sims.values():
                sim.http = http
            rollout = await lb.create_rollout(
                groups={"canary_size": 2, "strategy": "percent", "percents": [100]}, success_threshold=0.5
            )
            running: dict[int, asyncio.Task[list[UpdateProgress]]] = {}
            peak_concurrent = 0
            for _ in range(2000):  # bounded: ~12 s of downloads plus installs on the fast clock
                now = lb.clock.now()
                await lb.engine.step(now)
                for dev, sim in lb.sims.items():
                    reports = []
                    for cmd in lb.link.inbox.pop(sim.identity, []):
                        reports += await sim.handle(cmd, now)
                    if sim.state == SimState.DOWNLOADING:
                        if dev not in running:
                            running[dev] = asyncio.create_task(sim.tick(now), name=f"download-{dev}")
                    else:
                        reports += await sim.tick(now)
                    task = running.get(dev)
                    if task is not None and task.done():
                        reports += task.result()
                        del running[dev]
                    for p in reports:
                        await lb.engine.on_progress(dev, p, now)
                peak_concurrent = max(peak_concurrent, len(running))
                if await lb.rollout_state(rollout["id"]) == "completed":
                    break
                lb.clock.advance(30)
                await asyncio.sleep(0.05)  # let the real downloads move between simulated steps
            assert await lb.rollout_state(rollout["id"]) == "completed"
        assert all(s.version == NEW for s in lb.sims.values())
        samples = [x for s in lb.sims.values() for x in s.samples]
        assert sum(n for _, n in samples) == TERMINALS * IMAGE_BYTES
        span = max(t for t, _ in samples) - min(t for t, _ in samples)
        assert span > WINDOW_S, (
            "the downloads must last longer than one window for the check to mean anything"
        )
        rate = max_window_rate(samples, WINDOW_S)
        assert rate <= CAP_BYTES_PER_SECOND * 1.10, f"{rate * 8 / 1e6:.1f} Mbit/s over a 10 s window"
        assert peak_concurrent <= MAX_CONCURRENT
