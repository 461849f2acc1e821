"""The console on the 10,000-device district: cockpit first load, device search p95, and what 50 live cockpit
viewers cost the service.

The service runs as its own process (uvicorn, as `labfleet serve` runs it, no broker), on the district
database
benchmarks/reports.py builds. Page times are measured at the client on loopback, so they include HTTP; the
viewers' cost is the service process's CPU time (psutil) while 50 Server-Sent-Event streams are open, less the
same window idle, as a share of one core. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reports import build

from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.runtime.brokers import free_port
from fleet.services.users import create_user

PASSWORD = "benchmark password"
COCKPIT_BUDGET_MS = 1000.0  # issue 14: cockpit first load within 1 s
SEARCH_P95_BUDGET_MS = 300.0  # issue 14: device search p95 within 300 ms
SEARCHES = 100
VIEWERS = 50
WINDOW_S = 10.0  # long enough for ten pushes per viewer


async def add_admin(url: str) -> None:
    from datetime import UTC, datetime

    engine = create_engine(url)
    async with unit_of_work(session_factory(engine)) as session:
        await create_user(
            session,
            principal=SYSTEM,
            at=datetime.now(UTC),
            username="bench",
            password=PASSWORD,
            role=Role.ADMIN,
            school_ids=[],
            district_wide=True,
        )
    await engine.dispose()


def start_service(url: str, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import uvicorn; from fleet.app import create_app; from fleet.settings import Settings; "
        "uvicorn.run(create_app(Settings(), migrate=False), host='127.0.0.1', "
        f"port={port}, log_level='warning')"
    )
    env = {**os.environ, "LABFLEET_DATABASE_URL": url, "LABFLEET_MQTT__BROKER": "none"}
    env["LABFLEET_REPORTS__MONTHLY_ENABLED"] = "false"
    return subprocess.Popen([sys.executable, "-c", code], env=env)


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        for _ in range(300):
            try:
                if (await c.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("service did not start")


async def signed_in(base: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=base, timeout=60)
    form = await c.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    r = await c.post("/signin", data={"csrf": csrf, "username": "bench", "password": PASSWORD, "next": "/"})
    assert r.status_code == 303, r.text[:300]
    return c


async def timed(c: httpx.AsyncClient, path: str) -> float:
    t0 = time.perf_counter()
    r = await c.get(path)
    ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, (path, r.status_code)
    return ms


async def viewer(base: str, cookies: httpx.Cookies, stop: asyncio.Event, counts: list[int]) -> None:
    async with (
        httpx.AsyncClient(base_url=base, cookies=cookies, timeout=None) as c,
        c.stream("GET", "/cockpit/stream") as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("event: update"):
                counts.append(1)
            if stop.is_set():
                break


async def measure(base: str, pid: int) -> dict[str, float]:
    c = await signed_in(base)
    cockpit_first = await timed(c, "/")
    cockpit = [await timed(c, "/") for _ in range(5)]
    rng = random.Random(7)
    paths = []
    for _ in range(SEARCHES):
        kind = rng.random()
        if kind < 0.4:
            paths.append(f"/devices?q=SN-{rng.randrange(10, 99)}")
        elif kind < 0.7:
            paths.append(f"/devices?school={rng.randrange(1, 50)}&status=in_service")
        elif kind < 0.85:
            paths.append(f"/devices?online=no&school={rng.randrange(1, 50)}")
        else:
            paths.append("/devices")
    searches = sorted([await timed(c, p) for p in paths])
    p95 = searches[int(len(searches) * 0.95) - 1]

    proc = psutil.Process(pid)
    t = proc.cpu_times()
    idle0 = t.user + t.system
    await asyncio.sleep(WINDOW_S)
    t = proc.cpu_times()
    idle = (t.user + t.system - idle0) / WINDOW_S

    stop = asyncio.Event()
    counts: list[int] = []
    tasks = [asyncio.create_task(viewer(base, c.cookies, stop, counts)) for _ in range(VIEWERS)]
    await asyncio.sleep(2.0)  # all streams open and past their first (heavier) overview
    t = proc.cpu_times()
    busy0 = t.user + t.system
    n0 = len(counts)
    await asyncio.sleep(WINDOW_S)
    t = proc.cpu_times()
    busy = (t.user + t.system - busy0) / WINDOW_S
    pushes = (len(counts) - n0) / WINDOW_S
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await c.aclose()
    print(
        f"cockpit first {cockpit_first:.0f} ms, then median {statistics.median(cockpit):.0f} ms; "
        f"device search p95 {p95:.0f} ms (median {statistics.median(searches):.0f} ms, n={SEARCHES}); "
        f"service CPU idle {idle:.3f}, with {VIEWERS} viewers {busy:.3f} of a core ({pushes:.0f} pushes/s)",
        flush=True,
    )
    return {
        "cockpit_ms": round(cockpit_first, 1),
        "cockpit_median_ms": round(statistics.median(cockpit), 1),
        "search_p95_ms": round(p95, 1),
        "search_median_ms": round(statistics.median(searches), 1),
        "viewers": VIEWERS,
        "viewers_cpu_share": round(max(0.0, busy - idle), 3),
        "pushes_per_s": round(pushes, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 10,000 devices")
    args = parser.parse_args()
    n_devices = max(100, int(10_000 * args.scale))
    with tempfile.TemporaryDirectory(prefix="labfleet-console-bench-") as tmp:
        path = Path(tmp) / "district.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade_sync(url)
        t0 = time.perf_counter()
        counts = build(path, n_devices, random.Random(1))
        print(f"district built in {time.perf_counter() - t0:.1f} s: {counts}", flush=True)
        asyncio.run(add_admin(url))
        port = free_port()
        service = start_service(url, port)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(base))
            figures = asyncio.run(measure(base, service.pid))
        finally:
            service.terminate()
            service.wait(30)
    figures.update(
        {
            "devices": n_devices,
            "cockpit_ok": figures["cockpit_ms"] <= COCKPIT_BUDGET_MS,
            "search_ok": figures["search_p95_ms"] <= SEARCH_P95_BUDGET_MS,
        }
    )
    print(json.dumps({"benchmark": "console", **figures}))


if __name__ == "__main__":
    main()
